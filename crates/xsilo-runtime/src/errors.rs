//! Errors in one place: what users see ([`RuntimeError`], [`TaskError`]),
//! and the mapping between a failed object and the RemoteError frame that
//! crosses the silo boundary in its place (promises E2, E4).

use std::fmt;

use thiserror::Error;
use xsilo_transport::TransportError;
use xsilo_wire::{Fingerprint, ObjectId, PartyName, RemoteErrorFrame};

/// Why a task, an actor constructor or an actor method failed where it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// The kind: the error's type name, or `panic`.
    pub kind: String,
    /// The message (`Display` of the error, or the panic payload).
    pub message: String,
    /// The cause chain, outermost first (`Error::source` links).
    pub causes: Vec<String>,
}

impl TaskError {
    /// Captures an error value, its type name and its source chain.
    pub fn from_error<E: std::error::Error + 'static>(error: &E) -> Self {
        let mut causes = Vec::new();
        let mut source = error.source();
        while let Some(s) = source {
            causes.push(s.to_string());
            source = s.source();
        }
        Self {
            kind: short_type_name::<E>(),
            message: error.to_string(),
            causes,
        }
    }

    /// From a caught panic's payload.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-string payload".to_owned());
        Self {
            kind: "panic".into(),
            message,
            causes: Vec::new(),
        }
    }
}

fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    // Strip module paths outside generics: a::b::Err<c::D> -> Err<c::D>.
    let head = full.split('<').next().unwrap_or(full);
    let short = head.rsplit("::").next().unwrap_or(head);
    format!("{short}{}", &full[head.len()..])
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        for cause in &self.causes {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

/// An error of a federated computation.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A task or actor method failed in this party (promise E1).
    #[error("{} failed in party '{party}': {error}", what(.name.as_deref(), .object))]
    Task {
        /// The party where it ran (this one).
        party: PartyName,
        /// The object it was to produce.
        object: ObjectId,
        /// The call's name, if it was given one (`Party::named`).
        name: Option<std::sync::Arc<str>>,
        /// The full local error.
        error: Box<TaskError>,
    },
    /// An object this party needed failed in another party (promise E2).
    /// Only the kind and origin cross the silo boundary unless the origin
    /// enabled `expose_error_trace` (promise E4).
    #[error("{}", remote_text(.origin, .object, .name.as_deref(), .kind, .message.as_deref(), .causes))]
    Remote {
        /// The party where the failure began.
        origin: PartyName,
        /// The object that failed there (the failure may have reached us
        /// through objects that depend on it).
        object: ObjectId,
        /// The name of the call that failed there, if it had one.
        name: Option<std::sync::Arc<str>>,
        /// The error's kind.
        kind: String,
        /// Its message, if the origin exposes it.
        message: Option<String>,
        /// Its causes, if the origin exposes them.
        causes: Vec<String>,
    },
    /// A party this one waits on was lost or shut down before sending.
    #[error("party '{party}' is gone ({reason}); object {object} from it will never arrive")]
    PeerLost {
        /// The party.
        party: PartyName,
        /// The object waited for.
        object: ObjectId,
        /// Why it is gone.
        reason: String,
    },
    /// The drivers of two parties diverged (promise M8): they disagree on
    /// an object's owner or call site, on who uses it, or on where their
    /// programs ended.
    #[error(
        "driver divergence between party '{here}' and party '{from}' at object {object}: {what}; \
         every party must run the same driver code, making the same calls in the same order"
    )]
    Diverged {
        /// The party that found it.
        here: PartyName,
        /// The other party.
        from: PartyName,
        /// The object where the views differ.
        object: ObjectId,
        /// What differs.
        what: String,
    },
    /// The job was aborted (by this party or another).
    #[error("the job was aborted by party '{by}': {reason}")]
    Aborted {
        /// The party that aborted.
        by: PartyName,
        /// Why.
        reason: String,
    },
    /// A value could not be decoded as the type the driver expects.
    #[error("object {object} from party '{from}' cannot be decoded as {expected}: {reason}")]
    Decode {
        /// The object.
        object: ObjectId,
        /// Its owner.
        from: PartyName,
        /// The expected type.
        expected: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("object {object} cannot be encoded: {reason}")]
    Encode {
        /// The object.
        object: ObjectId,
        /// The encoder's message.
        reason: String,
    },
    /// A call named a party that is not in the job.
    #[error("party '{party}' is not a party of this job (known: {known})")]
    UnknownParty {
        /// The name used.
        party: String,
        /// The parties of the job.
        known: String,
    },
    /// An object this party should own was never made here: the handle
    /// comes from another job or another `Fed`.
    #[error(
        "object {object} was never made in party '{party}' (or it was freed): the handle belongs \
         to another job or Fed"
    )]
    UnknownObject {
        /// The object.
        object: ObjectId,
        /// This party.
        party: PartyName,
    },
    /// A call on an actor that was killed or whose constructor failed.
    #[error("actor {actor} of party '{party}' is not available: {reason}")]
    ActorUnavailable {
        /// The actor's id.
        actor: ObjectId,
        /// Its owner.
        party: PartyName,
        /// Why.
        reason: String,
    },
    /// Sending failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The runtime has shut down; no more calls.
    #[error("the runtime of party '{party}' has shut down")]
    ShutDown {
        /// This party.
        party: PartyName,
    },
    /// An actor of the runtime stopped unexpectedly (a bug).
    #[error("the runtime's {0} actor is gone")]
    ActorGone(&'static str),
    /// The runtime was started outside an actix System.
    #[error("xsilo must run inside an actix System: wrap the driver in xsilo::block_on")]
    NoSystem,
    /// The runtime could not start (threads, the worker pool).
    #[error("the runtime could not start: {0}")]
    Setup(String),
    /// Start-up could not dial every party (the barrier, promise C6): a
    /// party not running yet, or a wrong address or port for it in this
    /// party's address book. A peer dialling us does not count: only our
    /// own dial proves the address we have for it.
    #[error("start-up could not reach {}: {reason}", parties(.peers))]
    Unreached {
        /// The parties our dial did not reach.
        peers: Vec<PartyName>,
        /// Why: the last dial's error, or the bound that passed.
        reason: String,
    },
    /// A bounded wait passed.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The bound.
        after: std::time::Duration,
    },
}

/// "party 'bob'" or "parties 'bob', 'carol'".
fn parties(peers: &[PartyName]) -> String {
    let names: Vec<String> = peers.iter().map(|p| format!("'{p}'")).collect();
    match names.len() {
        1 => format!("party {}", names[0]),
        _ => format!("parties {}", names.join(", ")),
    }
}

/// "task 'train' (object #12)" for a named call, "object #12" otherwise.
fn what(name: Option<&str>, object: &ObjectId) -> String {
    match name {
        Some(name) => format!("task '{name}' (object {object})"),
        None => format!("object {object}"),
    }
}

fn remote_text(
    origin: &PartyName,
    object: &ObjectId,
    name: Option<&str>,
    kind: &str,
    message: Option<&str>,
    causes: &[String],
) -> String {
    let mut text = format!(
        "RemoteError: {} failed in party '{origin}' ({kind})",
        what(name, object)
    );
    match message {
        Some(m) => {
            text.push_str(": ");
            text.push_str(m);
            for c in causes {
                text.push_str(": ");
                text.push_str(c);
            }
        }
        None => text.push_str("; details hidden (the origin sets expose_error_trace = false)"),
    }
    text
}

/// The error kind of a runtime error, as it crosses the silo boundary.
pub(crate) fn error_kind(e: &RuntimeError) -> &str {
    match e {
        RuntimeError::Task { error, .. } => &error.kind,
        RuntimeError::Remote { kind, .. } => kind,
        RuntimeError::PeerLost { .. } => "PeerLost",
        RuntimeError::Diverged { .. } => "Diverged",
        RuntimeError::Aborted { .. } => "Aborted",
        RuntimeError::Decode { .. } => "Decode",
        RuntimeError::Encode { .. } => "Encode",
        RuntimeError::UnknownParty { .. } => "UnknownParty",
        RuntimeError::UnknownObject { .. } => "UnknownObject",
        RuntimeError::ActorUnavailable { .. } => "ActorUnavailable",
        RuntimeError::Transport(_) => "Transport",
        RuntimeError::ShutDown { .. } => "ShutDown",
        RuntimeError::ActorGone(_) => "Internal",
        RuntimeError::Timeout { .. } => "Timeout",
        RuntimeError::Unreached { .. } => "Unreached",
        RuntimeError::Setup(_) => "Setup",
        RuntimeError::NoSystem => "NoSystem",
    }
}

/// Whether a failed object is announced to the other parties at all.
/// Failures that every party learns by itself are not: the job aborted or
/// shut down, a divergence (which aborts), a call on an unknown party (it
/// fails in every party alike), an internal error.
pub(crate) fn crosses(error: &RuntimeError) -> bool {
    !matches!(
        error,
        RuntimeError::Aborted { .. }
            | RuntimeError::Diverged { .. }
            | RuntimeError::ShutDown { .. }
            | RuntimeError::UnknownParty { .. }
            | RuntimeError::ActorGone(_)
            | RuntimeError::NoSystem
            | RuntimeError::Setup(_)
    )
}

/// The frame that crosses in place of object `object` (made at call site
/// `fingerprint` in party `me`), which failed with `error`. A failure that
/// came from elsewhere passes on as received (its origin decided what
/// crosses); a failure that began here sends its kind, and its message and
/// causes only with `expose_error_trace` (promise E4).
pub(crate) fn frame_for(
    me: &PartyName,
    object: ObjectId,
    fingerprint: Fingerprint,
    error: &RuntimeError,
    expose: bool,
) -> RemoteErrorFrame {
    let (origin, origin_object, name, message, causes) = match error {
        RuntimeError::Remote {
            origin,
            object: at,
            name,
            message,
            causes,
            ..
        } => (
            origin.clone(),
            *at,
            name.as_deref().map(str::to_owned),
            message.clone(),
            causes.clone(),
        ),
        RuntimeError::Task {
            object: at,
            name,
            error,
            ..
        } => (
            me.clone(),
            *at,
            name.as_deref().map(str::to_owned),
            expose.then(|| error.message.clone()),
            if expose {
                error.causes.clone()
            } else {
                Vec::new()
            },
        ),
        other => (
            me.clone(),
            object,
            None,
            expose.then(|| other.to_string()),
            Vec::new(),
        ),
    };
    RemoteErrorFrame {
        origin,
        object,
        origin_object,
        kind: error_kind(error).to_owned(),
        message,
        causes,
        fingerprint: Some(fingerprint.0),
        name,
    }
}

/// `error` as another party sees it once it has crossed the boundary: a
/// failure that began in `me` becomes its RemoteError; one that came from
/// elsewhere stays as it is.
pub(crate) fn as_crossed(
    me: &PartyName,
    object: ObjectId,
    error: &RuntimeError,
    expose: bool,
) -> RuntimeError {
    match error {
        RuntimeError::Remote { .. } => error.clone(),
        other if !crosses(other) => other.clone(),
        other => from_frame(&frame_for(me, object, Fingerprint::NONE, other, expose)),
    }
}

/// The error a party sees for an object whose RemoteError frame arrived.
pub(crate) fn from_frame(frame: &RemoteErrorFrame) -> RuntimeError {
    RuntimeError::Remote {
        origin: frame.origin.clone(),
        object: frame.origin_object,
        name: frame.name.as_deref().map(std::sync::Arc::from),
        kind: frame.kind.clone(),
        message: frame.message.clone(),
        causes: frame.causes.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(s: &str) -> PartyName {
        s.parse().unwrap()
    }

    fn task_error() -> RuntimeError {
        RuntimeError::Task {
            party: p("alice"),
            object: ObjectId(3),
            name: None,
            error: Box::new(TaskError {
                kind: "TrainingDiverged".into(),
                message: "loss is NaN for patient 1234".into(),
                causes: vec!["gradient overflow".into()],
            }),
        }
    }

    #[test]
    fn a_task_error_crosses_with_its_kind_only_unless_exposed() {
        let hidden = frame_for(
            &p("alice"),
            ObjectId(3),
            Fingerprint(7),
            &task_error(),
            false,
        );
        assert_eq!(hidden.origin, p("alice"));
        assert_eq!(hidden.kind, "TrainingDiverged");
        assert_eq!(hidden.message, None);
        assert!(hidden.causes.is_empty());
        assert_eq!(hidden.fingerprint, Some(7));
        let shown = from_frame(&hidden).to_string();
        assert_eq!(
            shown,
            "RemoteError: object #3 failed in party 'alice' (TrainingDiverged); details hidden \
             (the origin sets expose_error_trace = false)"
        );
        assert!(!shown.contains("patient"), "private text crossed: {shown}");

        let exposed = frame_for(
            &p("alice"),
            ObjectId(3),
            Fingerprint(7),
            &task_error(),
            true,
        );
        assert_eq!(
            from_frame(&exposed).to_string(),
            "RemoteError: object #3 failed in party 'alice' (TrainingDiverged): loss is NaN for \
             patient 1234: gradient overflow"
        );
    }

    #[test]
    fn a_named_call_is_named_where_it_fails_and_where_it_crosses() {
        let error = RuntimeError::Task {
            party: p("alice"),
            object: ObjectId(12),
            name: Some("train".into()),
            error: Box::new(TaskError {
                kind: "TrainingDiverged".into(),
                message: "loss is NaN".into(),
                causes: vec![],
            }),
        };
        assert_eq!(
            error.to_string(),
            "task 'train' (object #12) failed in party 'alice': TrainingDiverged: loss is NaN"
        );
        let crossed = from_frame(&frame_for(
            &p("alice"),
            ObjectId(12),
            Fingerprint(1),
            &error,
            false,
        ));
        assert_eq!(
            crossed.to_string(),
            "RemoteError: task 'train' (object #12) failed in party 'alice' (TrainingDiverged); \
             details hidden (the origin sets expose_error_trace = false)"
        );
    }

    #[test]
    fn a_forwarded_failure_passes_on_as_received() {
        let first = frame_for(
            &p("alice"),
            ObjectId(3),
            Fingerprint(7),
            &task_error(),
            false,
        );
        let seen_by_bob = from_frame(&first);
        // Bob's object #5 failed because it consumed #3: bob forwards.
        let forwarded = frame_for(&p("bob"), ObjectId(5), Fingerprint(9), &seen_by_bob, true);
        assert_eq!(forwarded.origin, p("alice"), "the origin stays alice");
        assert_eq!(forwarded.object, ObjectId(5));
        assert_eq!(forwarded.origin_object, ObjectId(3));
        assert_eq!(forwarded.message, None, "bob cannot expose what alice hid");
        assert_eq!(forwarded.kind, "TrainingDiverged");
    }

    #[test]
    fn every_variant_reads_clearly() {
        let cases: Vec<(RuntimeError, &str)> = vec![
            (
                task_error(),
                "object #3 failed in party 'alice': TrainingDiverged: loss is NaN for patient \
                 1234: gradient overflow",
            ),
            (
                RuntimeError::PeerLost {
                    party: p("bob"),
                    object: ObjectId(4),
                    reason: "it said goodbye".into(),
                },
                "party 'bob' is gone (it said goodbye); object #4 from it will never arrive",
            ),
            (
                RuntimeError::Diverged {
                    here: p("alice"),
                    from: p("bob"),
                    object: ObjectId(2),
                    what: "party 'bob' sent it as its own, but this party's driver made it in \
                           party 'alice'"
                        .into(),
                },
                "driver divergence between party 'alice' and party 'bob' at object #2: party \
                 'bob' sent it as its own, but this party's driver made it in party 'alice'; \
                 every party must run the same driver code, making the same calls in the same \
                 order",
            ),
            (
                RuntimeError::Aborted {
                    by: p("carol"),
                    reason: "party 'carol' received SIGINT".into(),
                },
                "the job was aborted by party 'carol': party 'carol' received SIGINT",
            ),
            (
                RuntimeError::Decode {
                    object: ObjectId(1),
                    from: p("bob"),
                    expected: "i64",
                    reason: "wrong type".into(),
                },
                "object #1 from party 'bob' cannot be decoded as i64: wrong type",
            ),
            (
                RuntimeError::Encode {
                    object: ObjectId(1),
                    reason: "no".into(),
                },
                "object #1 cannot be encoded: no",
            ),
            (
                RuntimeError::UnknownParty {
                    party: "dave".into(),
                    known: "alice, bob".into(),
                },
                "party 'dave' is not a party of this job (known: alice, bob)",
            ),
            (
                RuntimeError::UnknownObject {
                    object: ObjectId(9),
                    party: p("alice"),
                },
                "object #9 was never made in party 'alice' (or it was freed): the handle belongs to \
                 another job or Fed",
            ),
            (
                RuntimeError::ActorUnavailable {
                    actor: ObjectId(1),
                    party: p("bob"),
                    reason: "it was killed".into(),
                },
                "actor #1 of party 'bob' is not available: it was killed",
            ),
            (
                RuntimeError::Setup("no threads".into()),
                "the runtime could not start: no threads",
            ),
            (
                RuntimeError::ShutDown { party: p("bob") },
                "the runtime of party 'bob' has shut down",
            ),
            (
                RuntimeError::ActorGone("objects"),
                "the runtime's objects actor is gone",
            ),
            (
                RuntimeError::Unreached {
                    peers: vec!["bob".parse().unwrap(), "carol".parse().unwrap()],
                    reason: "no dial succeeded within 20s".into(),
                },
                "start-up could not reach parties 'bob', 'carol': no dial succeeded within 20s",
            ),
            (
                RuntimeError::Timeout {
                    what: "draining the sends in flight".into(),
                    after: std::time::Duration::from_secs(2),
                },
                "draining the sends in flight did not finish within 2s",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn what_is_announced_to_other_parties() {
        assert!(crosses(&task_error()));
        assert!(!crosses(&RuntimeError::ShutDown { party: p("a") }));
        assert!(!crosses(&RuntimeError::Aborted {
            by: p("a"),
            reason: String::new()
        }));
    }
}
