//! The rules that decide whether a hello or an object header is accepted.
//!
//! The transport gathers the facts (which jobs it serves, which parties a job
//! knows, which party names the client certificate is valid for) behind
//! [`AcceptRules`]; this module decides, in one place, in a fixed order, with
//! a refusal message that names what is wrong and both sides of a mismatch.

use crate::frame::{Hello, HelloReply, ObjectHeader, Refusal, RefusalCode};
use crate::limits::{MAX_METADATA_ENTRIES, MAX_METADATA_LEN};
use crate::names::{JobName, PartyName};
use crate::PROTOCOL_VERSION;

/// What the acceptor knows when a hello arrives.
pub trait AcceptRules {
    /// The acceptor's own party name.
    fn local_party(&self) -> &PartyName;
    /// Whether the endpoint serves `job`.
    fn serves_job(&self, job: &JobName) -> bool;
    /// Whether `party` is in `job`'s address book.
    fn knows_party(&self, job: &JobName, party: &PartyName) -> bool;
    /// Whether the dialer's client certificate lets it be `party`: it is
    /// valid for the DNS name `party`, or (an acceptor whose own
    /// certificate is shared by every party, RFC 0001) it names no party of
    /// the job.
    fn certificate_names(&self, party: &PartyName) -> bool;
    /// A party of `job` that the certificate does name, if any (for the
    /// error message).
    fn certificate_party(&self, job: &JobName) -> Option<PartyName>;
}

/// Decides on a hello. Checks, in order: protocol version, metadata limits,
/// that the hello is meant for us, that we serve the job, that the claimed
/// party belongs to it, and that the certificate lets the dialer be the
/// claimed party ([`AcceptRules::certificate_names`]).
///
/// ```
/// use xsilo_wire::handshake::{check_hello, AcceptRules};
/// use xsilo_wire::{Hello, JobName, PartyName, RefusalCode, PROTOCOL_VERSION};
///
/// struct Bob(PartyName);
/// impl AcceptRules for Bob {
///     fn local_party(&self) -> &PartyName { &self.0 }
///     fn serves_job(&self, job: &JobName) -> bool { job.as_str() == "demo" }
///     fn knows_party(&self, _: &JobName, p: &PartyName) -> bool { p.as_str() == "alice" }
///     fn certificate_names(&self, p: &PartyName) -> bool { p.as_str() == "alice" }
///     fn certificate_party(&self, _: &JobName) -> Option<PartyName> { "alice".parse().ok() }
/// }
/// let bob = Bob("bob".parse().unwrap());
/// let mut hello = Hello {
///     version: PROTOCOL_VERSION,
///     job: "other".parse().unwrap(),
///     party: "alice".parse().unwrap(),
///     to: "bob".parse().unwrap(),
///     metadata: Default::default(),
///     probe: None,
/// };
/// let refusal = check_hello(&hello, &bob).unwrap_err();
/// assert_eq!(refusal.code, RefusalCode::UnknownJob);
/// assert!(refusal.message.contains("'other'"));
/// hello.job = "demo".parse().unwrap();
/// assert!(check_hello(&hello, &bob).is_ok());
/// ```
pub fn check_hello(hello: &Hello, rules: &impl AcceptRules) -> Result<(), Refusal> {
    let local = rules.local_party();
    if hello.version != PROTOCOL_VERSION {
        return Err(Refusal::new(
            RefusalCode::VersionMismatch,
            format!(
                "party '{local}' speaks xsilo protocol version {PROTOCOL_VERSION}, \
                 party '{}' speaks version {}",
                hello.party, hello.version
            ),
        ));
    }
    if hello.metadata.len() > MAX_METADATA_ENTRIES
        || hello
            .metadata
            .iter()
            .any(|(k, v)| k.len() > MAX_METADATA_LEN || v.len() > MAX_METADATA_LEN)
    {
        return Err(Refusal::new(
            RefusalCode::Malformed,
            format!(
                "hello from '{}' carries too much metadata (at most {MAX_METADATA_ENTRIES} \
                 entries of at most {MAX_METADATA_LEN} bytes each)",
                hello.party
            ),
        ));
    }
    if &hello.to != local {
        return Err(Refusal::new(
            RefusalCode::IdentityMismatch,
            format!(
                "party '{}' meant to reach party '{}' but reached party '{local}'",
                hello.party, hello.to
            ),
        ));
    }
    if !rules.serves_job(&hello.job) {
        return Err(Refusal::new(
            RefusalCode::UnknownJob,
            format!(
                "party '{local}' does not serve job '{}' (asked by party '{}')",
                hello.job, hello.party
            ),
        ));
    }
    if !rules.knows_party(&hello.job, &hello.party) {
        return Err(Refusal::new(
            RefusalCode::UnknownParty,
            format!(
                "party '{}' is not a party of job '{}' at party '{local}'",
                hello.party, hello.job
            ),
        ));
    }
    if !rules.certificate_names(&hello.party) {
        let named = match rules.certificate_party(&hello.job) {
            Some(p) => format!("its certificate names party '{p}'"),
            None => format!("its certificate names no party of job '{}'", hello.job),
        };
        return Err(Refusal::new(
            RefusalCode::IdentityMismatch,
            format!("a dialer claimed to be party '{}' but {named}", hello.party),
        ));
    }
    Ok(())
}

/// What the dialer makes of the acceptor's reply: `Ok` if accepted by the
/// party it meant to reach.
pub fn check_hello_reply(reply: HelloReply, expected: &PartyName) -> Result<(), Refusal> {
    match reply {
        HelloReply::Accepted { version, party } => {
            if version != PROTOCOL_VERSION {
                return Err(Refusal::new(
                    RefusalCode::VersionMismatch,
                    format!(
                        "party '{party}' speaks xsilo protocol version {version}, \
                         we speak version {PROTOCOL_VERSION}"
                    ),
                ));
            }
            if &party != expected {
                return Err(Refusal::new(
                    RefusalCode::IdentityMismatch,
                    format!("meant to reach party '{expected}' but party '{party}' answered"),
                ));
            }
            Ok(())
        }
        HelloReply::Refused(refusal) => Err(refusal),
    }
}

/// Decides on an object header received on a connection authenticated as
/// `src` for `job`, against the receiver's maximum message size.
pub fn check_header(
    header: &ObjectHeader,
    job: &JobName,
    src: &PartyName,
    max_message_size: u64,
) -> Result<(), Refusal> {
    if &header.job != job {
        return Err(Refusal::new(
            RefusalCode::WrongJob,
            format!(
                "object {} is for job '{}' but the connection from '{src}' serves job '{job}'",
                header.object, header.job
            ),
        ));
    }
    if &header.src != src {
        return Err(Refusal::new(
            RefusalCode::IdentityMismatch,
            format!(
                "object {} claims to come from party '{}' on a connection authenticated \
                 as party '{src}'",
                header.object, header.src
            ),
        ));
    }
    if header.payload_len > max_message_size {
        return Err(Refusal::new(
            RefusalCode::TooLarge,
            format!(
                "object {} from '{src}' announces {} bytes, over the receiver's maximum \
                 message size of {max_message_size} bytes (setting max_message_size)",
                header.object, header.payload_len
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bob(PartyName);
    impl AcceptRules for Bob {
        fn local_party(&self) -> &PartyName {
            &self.0
        }
        fn serves_job(&self, _: &JobName) -> bool {
            true
        }
        fn knows_party(&self, _: &JobName, _: &PartyName) -> bool {
            true
        }
        fn certificate_names(&self, _: &PartyName) -> bool {
            true
        }
        fn certificate_party(&self, _: &JobName) -> Option<PartyName> {
            None
        }
    }

    #[test]
    fn another_protocol_version_is_refused_naming_both_versions() {
        let hello = Hello {
            version: PROTOCOL_VERSION + 1,
            job: "demo".parse().unwrap(),
            party: "alice".parse().unwrap(),
            to: "bob".parse().unwrap(),
            metadata: Default::default(),
            probe: None,
        };
        let refusal = check_hello(&hello, &Bob("bob".parse().unwrap())).unwrap_err();
        assert_eq!(refusal.code, RefusalCode::VersionMismatch);
        assert!(
            refusal
                .message
                .contains(&format!("version {}", PROTOCOL_VERSION + 1)),
            "{}",
            refusal.message
        );
        assert!(
            refusal
                .message
                .contains(&format!("version {PROTOCOL_VERSION}")),
            "{}",
            refusal.message
        );
        let reply = HelloReply::Accepted {
            version: PROTOCOL_VERSION + 1,
            party: "bob".parse().unwrap(),
        };
        assert_eq!(
            check_hello_reply(reply, &"bob".parse().unwrap())
                .unwrap_err()
                .code,
            RefusalCode::VersionMismatch
        );
    }

    #[test]
    fn an_ordinary_hello_carries_no_probe_field_and_a_probe_round_trips() {
        use crate::codec::{decode_body, encode_to_vec};
        use crate::frame::Probe;
        let mut hello = Hello {
            version: PROTOCOL_VERSION,
            job: "demo".parse().unwrap(),
            party: "alice".parse().unwrap(),
            to: "bob".parse().unwrap(),
            metadata: Default::default(),
            probe: None,
        };
        let plain = encode_to_vec(&hello).unwrap();
        assert!(!plain.windows(5).any(|w| w == b"probe"));
        hello.probe = Some(Probe { transfer: 42 });
        let bytes = encode_to_vec(&hello).unwrap();
        let back: Hello = decode_body(&bytes[4..], "hello").unwrap();
        assert_eq!(back, hello);
        // The probe changes nothing in the verdict.
        assert!(check_hello(&back, &Bob("bob".parse().unwrap())).is_ok());
    }
}
