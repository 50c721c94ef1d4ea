//! The configuration of one party: built in code or loaded from TOML.
//!
//! Every party of a job is usually given the same file (each party then picks
//! its own entry by name, see [`Config::check_party`]). It names the job, the
//! parties and the addresses other parties dial, the party's TLS files, the
//! communication settings (limits, timeouts, retry policy, barrier and the
//! failure-handling flags of promises E4 to E7) and per-party overrides
//! (promise C7). A complete file:
//!
//! ```toml
//! job = "demo"
//!
//! [parties]                  # advertised addresses, "host:port"
//! alice = "127.0.0.1:11012"
//! bob = "127.0.0.1:11011"
//!
//! [tls]                      # relative to the folder of this file
//! ca = "certs/ca.pem"
//! cert = "certs/alice.pem"
//! key = "certs/alice.key"
//!
//! [communication]            # every key optional; durations as "60s", "250ms"
//! max_message_size = 524288000
//! send_timeout = "60s"
//! connect_timeout = "5s"
//! peer_lost_timeout = "10s"
//! keep_alive_interval = "1s"
//! congestion = "bbr"         # or "cubic", "newreno"
//! link_bandwidth_mbit = 1000 # the link hint that sizes the windows
//! link_rtt = "100ms"
//! inbound_budget = 1048576000         # default: 2 x max_message_size
//! inbound_budget_per_peer = 524288000 # default: max_message_size
//! max_concurrent_streams = 16         # objects a peer may have in flight to us
//! barrier_on_initializing = true
//! barrier_timeout = "60s"
//! expose_error_trace = false
//! exit_on_sending_failure = false
//! continue_waiting_for_data_sending_on_error = false
//!
//! [communication.retry]
//! max_attempts = 5
//! initial_backoff = "200ms"
//! max_backoff = "5s"
//! multiplier = 2.0
//!
//! [observability]            # optional
//! prometheus = "127.0.0.1:9464"   # serve /metrics for Prometheus here
//!
//! [overrides.alice]          # every key optional
//! listen = "0.0.0.0:11012"
//! metadata = { token = "abc" }
//! send_timeout = "120s"
//! connect_timeout = "10s"
//! ```
//!
//! Unknown keys and invalid values are rejected with an error that names the
//! key: either a [`ConfigError::Invalid`] carrying the dotted key path (such as
//! `communication.retry.multiplier`), or, for TOML syntax and type errors, a
//! [`ConfigError::Toml`] whose message quotes the offending line.
//!
//! The types below are the TOML form itself (serde, every table
//! `deny_unknown_fields`, durations through `humantime_serde`): a key is
//! defined, documented and defaulted once, on its field. Names are checked
//! and addresses resolved as they are read; [`Config::validate`] then checks
//! what needs more than one value or a range. The settings the lower crates
//! take are made from these in one place each:
//! [`Config::transport_config_for`] for the transport, and the runtime's
//! options (`xsilo_runtime::RuntimeOptions::for_transport` derives the drain
//! bound and the early-bytes budget from the transport's settings).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize};
use thiserror::Error;
use xsilo_runtime::RuntimeOptions;
use xsilo_transport::{
    AddressBook, Congestion, PeerAddress, RetryPolicy, SetupError, TlsIdentity, TransportConfig,
};
use xsilo_wire::limits::{MAX_METADATA_ENTRIES, MAX_METADATA_LEN};
use xsilo_wire::{JobName, PartyName};

/// A configuration could not be loaded or is invalid.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    // The reason is in the message, not a `source()`, so that a printed
    // chain (`{:#}`) does not say it twice.
    #[error("cannot read configuration file {}: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The text is not valid TOML, a key is unknown, or a value has the wrong
    /// type or form. The message is toml's, which quotes the offending line
    /// (or, for a table built in code, [`Config::from_toml_table`], names
    /// the key).
    #[error("cannot parse {}: {message}", origin(.path.as_deref()))]
    Toml {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// What toml said (line, column, the line itself and the problem).
        message: String,
    },
    /// A value is invalid.
    #[error("invalid configuration `{key}`: {reason}")]
    Invalid {
        /// The dotted TOML key path, such as `communication.send_timeout` or
        /// `parties.bob`.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// The local party is not one of the job's parties.
    #[error("party '{party}' is not a party of job '{job}' (known: {known})")]
    UnknownParty {
        /// The party asked for.
        party: PartyName,
        /// The job.
        job: JobName,
        /// The parties of the job, comma-separated.
        known: String,
    },
    /// The TLS files could not be loaded.
    #[error(
        "cannot load the TLS files (ca {}, cert {}, key {}): {error}",
        .ca.display(), .cert.display(), .key.display()
    )]
    Tls {
        /// The CA certificate file.
        ca: PathBuf,
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// What went wrong (in the message, as for `Read`).
        error: Box<SetupError>,
    },
    /// The configuration could not be written as TOML.
    #[error("cannot write the configuration as TOML: {message}")]
    Encode {
        /// What toml said.
        message: String,
    },
}

fn origin(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!("configuration file {}", p.display()),
        None => "configuration".to_owned(),
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `name` as a TOML key: as it is when bare, quoted otherwise.
fn key_segment(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// `prefix.name`, quoting `name` as TOML does when it is not a bare key.
fn key_path(prefix: &str, name: &str) -> String {
    format!("{prefix}.{}", key_segment(name))
}

/// The dotted key of a value serde stopped at.
fn dotted(path: &serde_path_to_error::Path) -> String {
    let mut key = String::new();
    for segment in path {
        match segment {
            serde_path_to_error::Segment::Map { key: name } if key.is_empty() => {
                key = key_segment(name);
            }
            serde_path_to_error::Segment::Map { key: name } => key = key_path(&key, name),
            serde_path_to_error::Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            _ => {}
        }
    }
    key
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Bytes per second in one Mbit/s (`communication.link_bandwidth_mbit`).
const BYTES_PER_MBIT: u64 = 125_000;

/// Paths of the party's TLS files, all PEM (the `[tls]` table). When
/// loaded from a TOML file, relative paths are resolved against the file's
/// folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsPaths {
    /// The CA certificate(s) that sign every party's certificate.
    pub ca: PathBuf,
    /// The party's certificate chain, leaf first; the leaf must name the
    /// party (`subjectAltName` `DNS:<party>`).
    pub cert: PathBuf,
    /// The party's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsPaths {
    /// The three paths, taken as they are.
    pub fn new(ca: impl Into<PathBuf>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        }
    }

    fn relative_to(&mut self, base_dir: &Path) {
        for path in [&mut self.ca, &mut self.cert, &mut self.key] {
            if path.is_relative() {
                *path = base_dir.join(&*path);
            }
        }
    }
}

/// Retry policy for connection attempts and for sends interrupted by a lost
/// connection (the `[communication.retry]` table): exponential backoff, the
/// wait starting at `initial_backoff` and multiplied by `multiplier` after
/// each failed attempt, capped at `max_backoff`. Refusals (wrong job, wrong
/// identity, oversize) are never retried: retrying gives the same answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first one included. Default 8: with the other
    /// defaults a peer that is not up yet is tried over about 11 s of
    /// backoff plus the attempts' own time, which
    /// covers parties started a few seconds apart, and the whole stays
    /// within `send_timeout`. Must be at least 1; 1 means no retry, so a
    /// party started after its peers' first send fails that send.
    pub max_attempts: u32,
    /// Wait after the first failed attempt. Default 100 ms: long enough not
    /// to spin on a peer that is restarting, short enough that a one-off
    /// loss costs little. Must not exceed `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest wait between two attempts. Default 5 s. Longer caps use fewer
    /// attempts on a long outage but notice the peer's return later.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Growth factor of the wait. Default 2.0. Must be finite and at least
    /// 1.0 (1.0 retries at a constant interval); large factors reach
    /// `max_backoff` after a few attempts.
    pub multiplier: f64,
}

impl Default for RetryConfig {
    /// The transport's defaults ([`RetryPolicy::default`]): one source of
    /// truth.
    fn default() -> Self {
        let p = RetryPolicy::default();
        Self {
            max_attempts: p.max_attempts,
            initial_backoff: p.initial_backoff,
            max_backoff: p.max_backoff,
            multiplier: p.multiplier,
        }
    }
}

impl RetryConfig {
    /// The transport's retry policy with these settings.
    pub fn retry_policy(&self) -> RetryPolicy {
        let mut policy = RetryPolicy::default();
        policy.max_attempts = self.max_attempts;
        policy.initial_backoff = self.initial_backoff;
        policy.max_backoff = self.max_backoff;
        policy.multiplier = self.multiplier;
        policy
    }
}

/// What a party exports about itself (the `[observability]` table;
/// promise F2).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ObservabilityConfig {
    /// Serve the party's metrics (see [`crate::metrics`]: objects and
    /// bytes sent and received per peer, sends in flight, retries, errors,
    /// round-trip times, objects and bytes held) in the Prometheus text
    /// format at `http://<this address>/metrics`. Default none: nothing is
    /// served. The port must not be 0 (nobody could find it). One process
    /// has one metrics registry: parties started in one process (a
    /// simulation) must give the same address, and share the endpoint,
    /// told apart by their `party` label.
    #[serde(
        deserialize_with = "checked_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub prometheus: Option<SocketAddr>,
}

impl ObservabilityConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match self.prometheus {
            Some(a) if a.port() == 0 => Err(invalid(
                "observability.prometheus",
                format!("{a}: port 0 would serve the metrics on a port nobody knows; give one"),
            )),
            _ => Ok(()),
        }
    }
}

/// Where a party runs its user code (the `[execution]` table; promises X1,
/// X2).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ExecutionConfig {
    /// How many task bodies and actor methods run at once, each on a worker
    /// thread, never on the control thread that keeps the connections
    /// alive; async bodies run on as many executor threads. `None` (the
    /// default): the cores available to the process. More than the cores
    /// helps only for bodies that block on I/O (prefer `task_async` there);
    /// fewer leaves cores to other work on the machine. From 1 to 1024.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

impl ExecutionConfig {
    /// The number of workers to start.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(xsilo_runtime::default_workers)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match self.workers {
            Some(n) if !(1..=1024).contains(&n) => Err(invalid(
                "execution.workers",
                format!("{n} workers: give from 1 to 1024 (or leave it out for one per core)"),
            )),
            _ => Ok(()),
        }
    }
}

/// Communication settings shared by every party of the job (the
/// `[communication]` table). `Default` gives the documented defaults, which
/// are RayFed's where RayFed has the setting. The transport and the runtime
/// take these (see [`CommConfig::transport_config`]); their own docs point
/// here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CommConfig {
    /// Largest object payload, in bytes, sent or accepted. Default 500 MiB
    /// (524 288 000, RayFed's). An object over it fails at the sender before
    /// any byte is sent, and a peer announcing more is refused at the
    /// receiver, so a bug or a hostile peer cannot exhaust memory. Raise it
    /// for large models; every party should use the same value, or the
    /// smaller one refuses what the larger one sends. Must be above zero.
    pub max_message_size: u64,
    /// Bound on a send's time without progress (a data object or a
    /// control frame, dialling and retries included). Default 60 s
    /// (RayFed's bound, with a new meaning). Progress is a piece of the
    /// object (1 MiB) taken by QUIC as the peer acknowledges earlier bytes,
    /// the last byte acknowledged, or the receiver's answer: a 256 MiB
    /// object on a slow link takes as long as it takes while its bytes keep
    /// moving, and a send that stalls fails after this long with a timeout
    /// naming the peer. The receiver bounds each wait for the next bytes
    /// of an object by its own value: a stream that delivers nothing for
    /// that long is refused. Shorter notices a stalled peer sooner; must be
    /// above zero. An intended shutdown waits this long plus 5 s for its
    /// sends in flight.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Bound on one connection attempt (QUIC and TLS handshakes and the
    /// hello). Default 5 s, while a handshake takes about 1 ms on loopback
    /// and a few round trips across a WAN. Too short fails every attempt on
    /// a long-distance link. Must be above zero.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A peer from which nothing has been heard for this long, not even a
    /// keep-alive acknowledgement, is reported lost and every wait on it
    /// fails (promise E10). Default 10 s. Shorter detects a crashed peer
    /// sooner but turns longer network blips into failures; longer keeps
    /// every party waiting longer when a peer dies. Must be more than twice
    /// `keep_alive_interval` and at most one day.
    #[serde(with = "humantime_serde")]
    pub peer_lost_timeout: Duration,
    /// Interval of QUIC keep-alive packets. Default 1 s. Keeps an idle but
    /// live connection from being reported lost and keeps NAT bindings
    /// open. Must be less than half of `peer_lost_timeout` (the QUIC idle
    /// timeout is `peer_lost_timeout` minus this interval); shorter sends
    /// more packets.
    #[serde(with = "humantime_serde")]
    pub keep_alive_interval: Duration,
    /// Retry policy for connection attempts and interrupted sends.
    pub retry: RetryConfig,
    /// Congestion controller: `"bbr"` (default), `"cubic"` or `"newreno"`.
    /// BBR keeps its rate under the random loss of wide-area links, where
    /// Cubic and NewReno collapse (at 50 ms and 0.1% loss here: BBR about
    /// 60 MiB/s, Cubic under 2; RFC 0001 has the figures). Cubic is quinn's
    /// and Linux TCP's default, for comparison.
    pub congestion: Congestion,
    /// The link hint's bandwidth in Mbit/s: the fastest path this party
    /// expects to a peer. Default 1000. With `link_rtt` it sizes the
    /// flow-control windows (1.5 bandwidth-delay products per object, two
    /// of those per peer), which cap one object at window / round trip.
    /// From 1 to 1 000 000.
    pub link_bandwidth_mbit: u64,
    /// The link hint's round trip: the longest this party expects to a
    /// peer. Default 100 ms. Larger windows (a larger hint) let more bytes
    /// per peer be in flight, hence held in memory. From 1 ms to 10 s.
    #[serde(with = "humantime_serde")]
    pub link_rtt: Duration,
    /// Bytes of inbound objects read but not yet taken by the runtime, all
    /// peers together. `None` (default): twice `max_message_size` (1000 MiB
    /// by default). An object is admitted whole before it is read; one that
    /// does not fit waits unread (QUIC flow control holds its sender), so a
    /// hostile or broken peer cannot make this party hold more (RFC 0001,
    /// "Inbound memory"). At least the per-peer budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_budget: Option<u64>,
    /// The same per peer. `None` (default): `max_message_size`, so that one
    /// peer, hostile or not, holds at most half of the default budget. At
    /// least `max_message_size`, or such an object could never be
    /// admitted. Also bounds the bytes of values a peer may send before
    /// this party's driver made them (a driver running ahead; promise S1);
    /// past that they wait unanswered and hold the sender (RFC 0002).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_budget_per_peer: Option<u64>,
    /// Objects one peer may have in flight towards this party at once (one
    /// QUIC stream each); more wait for a free stream. Default 16. Also
    /// bounds how many received objects wait for the runtime's
    /// acknowledgement at once. Each stream slot keeps, for the whole
    /// connection, the reassembly buffer the largest object through it
    /// needed (about 4% of its bytes; RFC 0001, "Settings"), so memory
    /// grows with this; raise it for many small objects in flight over a
    /// long link (at most about this many objects per round trip). From 1
    /// to 4096.
    pub max_concurrent_streams: u32,
    /// Wait at start-up until every party is reachable, bounded by
    /// `barrier_timeout` (promise C6). Default false (RayFed's): parties
    /// then connect lazily on their first send, each send retrying within
    /// its policy. Turn it on to fail at start-up, with a clear error, when
    /// a party is missing, rather than at the first send to it.
    pub barrier_on_initializing: bool,
    /// Bound on the start-up barrier. Default 60 s, enough for parties
    /// started by hand a little apart. Only used when
    /// `barrier_on_initializing` is set; must be above zero.
    #[serde(with = "humantime_serde")]
    pub barrier_timeout: Duration,
    /// Let the message and cause chain of a failed task cross the silo
    /// boundary in the RemoteError sent to other parties (promise E4).
    /// Default false: only the error kind and the party where the failure
    /// began are sent, because messages may contain private data. Turn it on
    /// for debugging between parties that trust each other.
    pub expose_error_trace: bool,
    /// Treat a failure to send to a peer as fatal (promise E6): peers are
    /// told, the sending-failure handler runs, pending and later calls fail
    /// fast and the process exits with status 1 (with `xsilo::init`).
    /// Default false: a sending failure still aborts the job at every party
    /// that can be reached, so nobody waits for what will never come, but
    /// no handler runs and the process goes on.
    pub exit_on_sending_failure: bool,
    /// After an error was sent to or received from a peer, keep waiting at
    /// shutdown for queued data sends to finish (promise E7). Default false
    /// (RayFed's): the job is failing anyway, so shutdown does not wait for
    /// data that may never be acknowledged. Turn it on when peers must still
    /// receive what was queued. Without it, shutdown (and an abort) waits a
    /// 2 s grace for what is in flight.
    pub continue_waiting_for_data_sending_on_error: bool,
}

impl Default for CommConfig {
    /// The transport's defaults ([`TransportConfig::default`]) for what
    /// the transport owns, so the two never disagree.
    fn default() -> Self {
        let t = TransportConfig::default();
        Self {
            max_message_size: t.max_message_size,
            send_timeout: t.send_timeout,
            connect_timeout: t.connect_timeout,
            peer_lost_timeout: t.peer_lost_timeout,
            keep_alive_interval: t.keep_alive_interval,
            retry: RetryConfig::default(),
            congestion: t.congestion,
            link_bandwidth_mbit: xsilo_transport::DEFAULT_LINK_BANDWIDTH / BYTES_PER_MBIT,
            link_rtt: xsilo_transport::DEFAULT_LINK_RTT,
            inbound_budget: t.inbound_budget,
            inbound_budget_per_peer: t.inbound_budget_per_peer,
            max_concurrent_streams: t.max_concurrent_streams,
            barrier_on_initializing: false,
            barrier_timeout: Duration::from_secs(60),
            expose_error_trace: false,
            exit_on_sending_failure: false,
            continue_waiting_for_data_sending_on_error: false,
        }
    }
}

impl CommConfig {
    /// The transport's settings with these limits, timeouts and retry
    /// policy, stream limit, budgets and link hint (which sizes the
    /// windows). Socket buffers keep the transport's defaults.
    pub fn transport_config(&self) -> TransportConfig {
        let mut config = TransportConfig::default();
        config.max_message_size = self.max_message_size;
        config.send_timeout = self.send_timeout;
        config.connect_timeout = self.connect_timeout;
        config.peer_lost_timeout = self.peer_lost_timeout;
        config.keep_alive_interval = self.keep_alive_interval;
        config.retry = self.retry.retry_policy();
        config.congestion = self.congestion;
        config.inbound_budget = self.inbound_budget;
        config.inbound_budget_per_peer = self.inbound_budget_per_peer;
        config.max_concurrent_streams = self.max_concurrent_streams;
        config.set_link(
            self.link_bandwidth_mbit.saturating_mul(BYTES_PER_MBIT),
            self.link_rtt,
        );
        config
    }

    /// The runtime's options for a party with these settings, `transport`
    /// (its transport settings, overrides applied) and `execution`: what
    /// derives from the transport's settings is derived by
    /// [`RuntimeOptions::for_transport`], the failure-handling flags and
    /// the workers are taken from here. Both [`crate::init_with`] and the
    /// simulation start from this; `init_with` then adds what
    /// [`crate::InitOptions`] holds.
    pub(crate) fn runtime_options(
        &self,
        transport: &TransportConfig,
        execution: &ExecutionConfig,
    ) -> RuntimeOptions {
        let mut options = RuntimeOptions::for_transport(transport);
        options.expose_error_trace = self.expose_error_trace;
        options.exit_on_sending_failure = self.exit_on_sending_failure;
        options.continue_waiting_for_data_sending_on_error =
            self.continue_waiting_for_data_sending_on_error;
        options.workers = execution.workers();
        options.metrics_interval = Some(Duration::from_secs(1));
        options
    }

    /// Checks the settings; errors name the key as in TOML, such as
    /// `communication.retry.multiplier`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.transport_config()
            .validate()
            .map_err(|e| invalid(format!("communication.{}", e.key), e.reason))?;
        if !(1..=4096).contains(&self.max_concurrent_streams) {
            return Err(invalid(
                "communication.max_concurrent_streams",
                format!("{}: give from 1 to 4096", self.max_concurrent_streams),
            ));
        }
        if !(1..=1_000_000).contains(&self.link_bandwidth_mbit) {
            return Err(invalid(
                "communication.link_bandwidth_mbit",
                format!(
                    "{} Mbit/s: give from 1 to 1000000",
                    self.link_bandwidth_mbit
                ),
            ));
        }
        if self.link_rtt < Duration::from_millis(1) || self.link_rtt > Duration::from_secs(10) {
            return Err(invalid(
                "communication.link_rtt",
                format!("{:?}: give from 1ms to 10s", self.link_rtt),
            ));
        }
        if self.barrier_timeout.is_zero() {
            return Err(invalid(
                "communication.barrier_timeout",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// Settings of one party that differ from the shared ones (promise C7), the
/// table `[overrides.<party>]`. `Default` overrides nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PartyOverride {
    /// The address this party binds, when it differs from the advertised
    /// one in `[parties]` (behind NAT, in a container, or `0.0.0.0` to
    /// listen on every interface).
    #[serde(
        deserialize_with = "checked_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub listen: Option<SocketAddr>,
    /// Metadata headers sent in the hello to this party, for example a
    /// token its gateway expects. At most 64 entries of at most 1024 bytes
    /// each (key and value).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// This party's own send timeout, in place of
    /// `communication.send_timeout`, for every send it makes.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub send_timeout: Option<Duration>,
    /// This party's own connect timeout, in place of
    /// `communication.connect_timeout`, for every connection it dials.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
}

/// The configuration of a job as seen by one party.
///
/// Fields are public so that code can build and adjust a configuration;
/// call [`Config::validate`] after changing them. [`Config::new`],
/// [`Config::from_toml_str`], [`Config::from_toml_table`] and
/// [`Config::from_file`] validate already (deserializing a `Config` with
/// serde directly checks names and resolves addresses, but neither
/// validates the rest nor resolves relative TLS paths).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The job; every connection names it and data for another job is
    /// refused (promise C4).
    #[serde(deserialize_with = "checked")]
    pub job: JobName,
    /// Every party of the job with the address other parties dial (the
    /// advertised address), the `[parties]` table. Host names are resolved
    /// when the configuration is loaded.
    #[serde(deserialize_with = "checked_map")]
    pub parties: BTreeMap<PartyName, SocketAddr>,
    /// The local party's TLS files; required to use QUIC, not needed in
    /// simulation mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsPaths>,
    /// Communication settings (the `[communication]` table).
    #[serde(rename = "communication", default)]
    pub comm: CommConfig,
    /// Where user code runs (the `[execution]` table).
    #[serde(default, skip_serializing_if = "is_default")]
    pub execution: ExecutionConfig,
    /// What the party exports (the `[observability]` table).
    #[serde(default, skip_serializing_if = "is_default")]
    pub observability: ObservabilityConfig,
    /// Per-party overrides (the `[overrides.<party>]` tables).
    #[serde(
        default,
        deserialize_with = "checked_keys",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub overrides: BTreeMap<PartyName, PartyOverride>,
}

impl Config {
    /// A configuration with the given parties and advertised addresses,
    /// default communication settings, no TLS files and no overrides. Fails
    /// when no party is given or a party is given twice. One party is a
    /// job too (RayFed's tests run them): nothing crosses, and its init,
    /// barrier and shutdown wait for no peer.
    pub fn new(
        job: JobName,
        parties: impl IntoIterator<Item = (PartyName, SocketAddr)>,
    ) -> Result<Self, ConfigError> {
        let mut map = BTreeMap::new();
        for (party, addr) in parties {
            if map.insert(party.clone(), addr).is_some() {
                return Err(invalid(
                    key_path("parties", party.as_str()),
                    "the party is given more than once",
                ));
            }
        }
        let config = Self {
            job,
            parties: map,
            tls: None,
            comm: CommConfig::default(),
            execution: ExecutionConfig::default(),
            observability: ObservabilityConfig::default(),
            overrides: BTreeMap::new(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates TOML text. Relative TLS paths are resolved
    /// against `base_dir` (normally the folder of the file the text came
    /// from); party addresses that are host names are resolved now.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        Self::parse(text, base_dir, None)
    }

    /// Reads, parses and validates a TOML file; relative TLS paths are
    /// resolved against the file's folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new(""));
        Self::parse(&text, base_dir, Some(path))
    }

    /// Reads and validates a configuration given as a TOML table built in
    /// code (the tables and keys of the file, such as a language binding
    /// makes from its own dictionaries) rather than as text. Relative TLS
    /// paths are resolved against `base_dir`. Errors name the key:
    /// [`ConfigError::Invalid`] with its dotted path, or
    /// [`ConfigError::Toml`] whose message ends with it (``in
    /// `communication.send_timeout` ``).
    pub fn from_toml_table(table: toml::Table, base_dir: &Path) -> Result<Self, ConfigError> {
        Self::read(toml::Value::Table(table), base_dir, |e| ConfigError::Toml {
            path: None,
            message: e.to_string().trim_end().to_owned(),
        })
    }

    fn parse(text: &str, base_dir: &Path, path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::read(toml::Deserializer::new(text), base_dir, |e| {
            ConfigError::Toml {
                path: path.map(Path::to_path_buf),
                message: e.to_string().trim_end().to_owned(),
            }
        })
    }

    /// Deserializes, resolves the TLS paths and validates. A name or an
    /// address refused while reading becomes [`ConfigError::Invalid`] with
    /// the key serde was at; any other error is the format's (`other`).
    fn read<'de, D: Deserializer<'de>>(
        input: D,
        base_dir: &Path,
        other: impl FnOnce(D::Error) -> ConfigError,
    ) -> Result<Self, ConfigError> {
        REFUSED.with(|r| r.borrow_mut().take());
        let mut config: Self =
            serde_path_to_error::deserialize(input).map_err(|e| {
                match REFUSED.with(|r| r.borrow_mut().take()) {
                    Some(reason) => invalid(dotted(e.path()), reason),
                    None => other(e.into_inner()),
                }
            })?;
        if let Some(tls) = &mut config.tls {
            tls.relative_to(base_dir);
        }
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML text, in the form [`Config::from_toml_str`]
    /// reads. Every communication setting is written out, durations in the
    /// humantime form (`"1m"`, `"250ms"`); TLS paths are written as held.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Encode {
            message: e.to_string(),
        })
    }

    /// Checks the whole configuration: at least one party, overrides only
    /// for known parties and within the hello's metadata limits, and valid
    /// communication settings for every party once its overrides apply.
    /// Errors name the TOML key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.parties.is_empty() {
            return Err(invalid(
                "parties",
                "a job needs at least 1 party (the local one), none given",
            ));
        }
        self.comm.validate()?;
        self.execution.validate()?;
        self.observability.validate()?;
        for (party, o) in &self.overrides {
            let prefix = key_path("overrides", party.as_str());
            if !self.parties.contains_key(party) {
                return Err(invalid(
                    prefix,
                    format!(
                        "party '{party}' is not listed in [parties] (known: {})",
                        self.known_parties()
                    ),
                ));
            }
            for (name, value) in [
                ("send_timeout", o.send_timeout),
                ("connect_timeout", o.connect_timeout),
            ] {
                if value.is_some_and(|d| d.is_zero()) {
                    return Err(invalid(
                        format!("{prefix}.{name}"),
                        "must be greater than zero",
                    ));
                }
            }
            if o.metadata.len() > MAX_METADATA_ENTRIES {
                return Err(invalid(
                    format!("{prefix}.metadata"),
                    format!(
                        "{} entries, at most {MAX_METADATA_ENTRIES} are allowed",
                        o.metadata.len()
                    ),
                ));
            }
            for (k, v) in &o.metadata {
                if k.len() > MAX_METADATA_LEN || v.len() > MAX_METADATA_LEN {
                    return Err(invalid(
                        key_path(&format!("{prefix}.metadata"), k),
                        format!("keys and values may have at most {MAX_METADATA_LEN} bytes"),
                    ));
                }
            }
            self.transport_config_for(party).validate().map_err(|e| {
                let overridden = match e.key {
                    "send_timeout" => o.send_timeout.is_some(),
                    "connect_timeout" => o.connect_timeout.is_some(),
                    _ => false,
                };
                if overridden {
                    invalid(format!("{prefix}.{}", e.key), e.reason)
                } else {
                    invalid(format!("communication.{}", e.key), e.reason)
                }
            })?;
        }
        Ok(())
    }

    fn known_parties(&self) -> String {
        let names: Vec<&str> = self.parties.keys().map(PartyName::as_str).collect();
        names.join(", ")
    }

    /// Checks that `party` is one of the job's parties, typically the local
    /// party named on the command line; the error lists the known parties.
    pub fn check_party(&self, party: &PartyName) -> Result<(), ConfigError> {
        if self.parties.contains_key(party) {
            Ok(())
        } else {
            Err(self.unknown_party(party))
        }
    }

    fn unknown_party(&self, party: &PartyName) -> ConfigError {
        ConfigError::UnknownParty {
            party: party.clone(),
            job: self.job.clone(),
            known: self.known_parties(),
        }
    }

    /// The transport's address book for `local`: every party (`local`
    /// included, as the transport requires) at its advertised address. Each
    /// other party's entry carries the metadata of `overrides.<party>`, sent
    /// in the hello to it; the local entry carries none, since nobody dials
    /// itself.
    pub fn address_book(&self, local: &PartyName) -> AddressBook {
        self.parties
            .iter()
            .map(|(party, addr)| {
                let metadata = match self.overrides.get(party) {
                    Some(o) if party != local => o.metadata.clone(),
                    _ => BTreeMap::new(),
                };
                let mut entry = PeerAddress::from(*addr);
                entry.metadata = metadata;
                (party.clone(), entry)
            })
            .collect()
    }

    /// The address `party` binds: `overrides.<party>.listen` when set, else
    /// its advertised address. Fails for a party not in the job.
    pub fn listen_addr(&self, party: &PartyName) -> Result<SocketAddr, ConfigError> {
        let Some(&advertised) = self.parties.get(party) else {
            return Err(self.unknown_party(party));
        };
        let listen = self.overrides.get(party).and_then(|o| o.listen);
        Ok(listen.unwrap_or(advertised))
    }

    /// The transport settings of `party` when it is the local party: the
    /// shared communication settings with `overrides.<party>.send_timeout`
    /// and `connect_timeout` in place of the shared ones when set. An
    /// override thus changes how long the overridden party itself waits on
    /// its sends and connects, to every peer; it does not change what other
    /// parties wait when they send to it.
    pub fn transport_config_for(&self, party: &PartyName) -> TransportConfig {
        let mut config = self.comm.transport_config();
        if let Some(o) = self.overrides.get(party) {
            if let Some(d) = o.send_timeout {
                config.send_timeout = d;
            }
            if let Some(d) = o.connect_timeout {
                config.connect_timeout = d;
            }
        }
        config
    }

    /// Loads the TLS files named in `[tls]`. Fails when there is no `[tls]`
    /// section or a file cannot be read or parsed; the error names the
    /// files.
    pub fn tls_identity(&self) -> Result<TlsIdentity, ConfigError> {
        let Some(tls) = &self.tls else {
            return Err(invalid(
                "tls",
                "no [tls] section: the QUIC transport needs the ca, cert and key files",
            ));
        };
        TlsIdentity::from_pem_files(&tls.ca, &tls.cert, &tls.key).map_err(|error| {
            ConfigError::Tls {
                ca: tls.ca.clone(),
                cert: tls.cert.clone(),
                key: tls.key.clone(),
                error: Box::new(error),
            }
        })
    }
}

// ---------------------------------------------------------------------------
// Names and addresses, checked as they are read. A value of the right type
// (a string) that is refused, such as a party name with an uppercase letter
// or a host that does not resolve, is `ConfigError::Invalid` with its key,
// not a TOML error: the refusal's reason is left here for `Config::read`,
// which takes the key from serde's path.

thread_local! {
    static REFUSED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A value written as a string and checked or resolved when read.
trait FromConfigStr: Sized {
    /// What the string must be, for type errors.
    const EXPECTING: &'static str;
    fn from_config_str(text: &str) -> Result<Self, String>;
}

impl FromConfigStr for PartyName {
    const EXPECTING: &'static str = "a party name";
    fn from_config_str(text: &str) -> Result<Self, String> {
        PartyName::new(text).map_err(|e| e.to_string())
    }
}

impl FromConfigStr for JobName {
    const EXPECTING: &'static str = "a job name";
    fn from_config_str(text: &str) -> Result<Self, String> {
        JobName::new(text).map_err(|e| e.to_string())
    }
}

impl FromConfigStr for SocketAddr {
    const EXPECTING: &'static str = "an address \"host:port\"";
    /// A literal address is taken without a lookup, a host name through the
    /// system resolver, keeping its first address.
    fn from_config_str(text: &str) -> Result<Self, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(addr);
        }
        let mut addrs = text
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {text:?} as \"host:port\": {e}"))?;
        addrs
            .next()
            .ok_or_else(|| format!("{text:?} resolves to no address"))
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Checked<T>(T);

impl<'de, T: FromConfigStr> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<T: FromConfigStr> de::Visitor<'_> for Visitor<T> {
            type Value = Checked<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                T::from_config_str(text).map(Checked).map_err(|reason| {
                    REFUSED.with(|r| *r.borrow_mut() = Some(reason.clone()));
                    E::custom(reason)
                })
            }
        }
        deserializer.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

fn checked<'de, D: Deserializer<'de>, T: FromConfigStr>(d: D) -> Result<T, D::Error> {
    Checked::deserialize(d).map(|c| c.0)
}

fn checked_some<'de, D: Deserializer<'de>, T: FromConfigStr>(d: D) -> Result<Option<T>, D::Error> {
    checked(d).map(Some)
}

fn checked_map<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: FromConfigStr + Ord,
    V: FromConfigStr,
{
    let map = BTreeMap::<Checked<K>, Checked<V>>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k.0, v.0)).collect())
}

fn checked_keys<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: FromConfigStr + Ord,
    V: Deserialize<'de>,
{
    let map = BTreeMap::<Checked<K>, V>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k.0, v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
job = "demo"
[parties]
alice = "127.0.0.1:11012"
bob = "127.0.0.1:11011"
[tls]
ca = "certs/ca.pem"
cert = "certs/alice.pem"
key = "/etc/xsilo/alice.key"
[communication]
send_timeout = "60s"
max_message_size = 524288000
connect_timeout = "3s"
peer_lost_timeout = "20s"
keep_alive_interval = "2s"
barrier_on_initializing = true
barrier_timeout = "90s"
expose_error_trace = false
exit_on_sending_failure = true
continue_waiting_for_data_sending_on_error = true
[communication.retry]
max_attempts = 5
initial_backoff = "200ms"
max_backoff = "3s"
multiplier = 1.5
[observability]
prometheus = "127.0.0.1:9464"
[overrides.alice]
listen = "0.0.0.0:11012"
metadata = { token = "abc" }
send_timeout = "120s"
connect_timeout = "7s"
"#;

    const MINIMAL: &str = r#"
job = "demo"
[parties]
alice = "127.0.0.1:11012"
bob = "127.0.0.1:11011"
"#;

    fn p(name: &str) -> PartyName {
        PartyName::new(name).unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("/srv/xsilo"))
    }

    /// Loads `text` and returns the error's message, checking it is an
    /// `Invalid` error for `key` when `key` is given.
    fn error_of(text: &str, key: Option<&str>) -> String {
        let err = load(text).unwrap_err();
        if let Some(key) = key {
            match &err {
                ConfigError::Invalid { key: k, .. } => assert_eq!(k, key, "{err}"),
                other => panic!("expected Invalid for {key}, got {other:?}"),
            }
        }
        err.to_string()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xsilo-config-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn full_example_parses_with_every_value() {
        let c = load(FULL).unwrap();
        assert_eq!(c.job.as_str(), "demo");
        assert_eq!(
            c.parties,
            BTreeMap::from([
                (p("alice"), addr("127.0.0.1:11012")),
                (p("bob"), addr("127.0.0.1:11011")),
            ])
        );
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.ca, Path::new("/srv/xsilo/certs/ca.pem"));
        assert_eq!(tls.cert, Path::new("/srv/xsilo/certs/alice.pem"));
        assert_eq!(tls.key, Path::new("/etc/xsilo/alice.key"));
        let m = &c.comm;
        assert_eq!(m.max_message_size, 524_288_000);
        assert_eq!(m.send_timeout, Duration::from_secs(60));
        assert_eq!(m.connect_timeout, Duration::from_secs(3));
        assert_eq!(m.peer_lost_timeout, Duration::from_secs(20));
        assert_eq!(m.keep_alive_interval, Duration::from_secs(2));
        assert!(m.barrier_on_initializing);
        assert_eq!(m.barrier_timeout, Duration::from_secs(90));
        assert!(!m.expose_error_trace);
        assert!(m.exit_on_sending_failure);
        assert!(m.continue_waiting_for_data_sending_on_error);
        assert_eq!(m.retry.max_attempts, 5);
        assert_eq!(m.retry.initial_backoff, Duration::from_millis(200));
        assert_eq!(m.retry.max_backoff, Duration::from_secs(3));
        assert_eq!(m.retry.multiplier, 1.5);
        assert_eq!(c.overrides.len(), 1);
        let o = &c.overrides[&p("alice")];
        assert_eq!(o.listen, Some(addr("0.0.0.0:11012")));
        assert_eq!(
            o.metadata,
            BTreeMap::from([("token".to_owned(), "abc".to_owned())])
        );
        assert_eq!(o.send_timeout, Some(Duration::from_secs(120)));
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(7)));
    }

    #[test]
    fn brief_example_parses() {
        let text = r#"
job = "demo"
[parties]
alice = "127.0.0.1:11012"
bob = "127.0.0.1:11011"
[tls]
ca = "certs/ca.pem"
cert = "certs/alice.pem"
key = "certs/alice.key"
[communication]
send_timeout = "60s"
max_message_size = 524288000
barrier_on_initializing = true
expose_error_trace = false
[communication.retry]
max_attempts = 5
initial_backoff = "200ms"
[overrides.alice]
listen = "0.0.0.0:11012"
metadata = { token = "abc" }
send_timeout = "120s"
"#;
        let c = load(text).unwrap();
        assert!(c.comm.barrier_on_initializing);
        assert_eq!(c.comm.retry.max_attempts, 5);
        // Unset keys keep their defaults.
        assert_eq!(c.comm.retry.max_backoff, Duration::from_secs(5));
        assert_eq!(c.comm.connect_timeout, Duration::from_secs(5));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let d = CommConfig::default();
        assert_eq!(d.max_message_size, 500 * 1024 * 1024);
        assert_eq!(d.send_timeout, Duration::from_secs(60));
        assert_eq!(d.connect_timeout, Duration::from_secs(5));
        assert_eq!(d.peer_lost_timeout, Duration::from_secs(10));
        assert_eq!(d.keep_alive_interval, Duration::from_secs(1));
        assert_eq!(d.retry.max_attempts, 8);
        assert_eq!(d.retry.initial_backoff, Duration::from_millis(100));
        assert_eq!(d.retry.max_backoff, Duration::from_secs(5));
        assert_eq!(d.retry.multiplier, 2.0);
        assert!(!d.barrier_on_initializing);
        assert_eq!(d.barrier_timeout, Duration::from_secs(60));
        assert!(!d.expose_error_trace);
        assert!(!d.exit_on_sending_failure);
        assert!(!d.continue_waiting_for_data_sending_on_error);
        // The defaults agree with the transport's.
        assert_eq!(d.transport_config(), TransportConfig::default());

        let c = load(MINIMAL).unwrap();
        assert_eq!(c.comm, CommConfig::default());
        assert!(c.tls.is_none());
        assert!(c.overrides.is_empty());
    }

    #[test]
    fn transport_config_maps_every_setting() {
        let c = load(FULL).unwrap();
        let t = c.comm.transport_config();
        assert_eq!(t.max_message_size, 524_288_000);
        assert_eq!(t.send_timeout, Duration::from_secs(60));
        assert_eq!(t.connect_timeout, Duration::from_secs(3));
        assert_eq!(t.peer_lost_timeout, Duration::from_secs(20));
        assert_eq!(t.keep_alive_interval, Duration::from_secs(2));
        assert_eq!(t.retry.max_attempts, 5);
        assert_eq!(t.retry.initial_backoff, Duration::from_millis(200));
        assert_eq!(t.retry.max_backoff, Duration::from_secs(3));
        assert_eq!(t.retry.multiplier, 1.5);
        let d = TransportConfig::default();
        assert_eq!(t.stream_receive_window, d.stream_receive_window);
        assert_eq!(t.socket_buffer, d.socket_buffer);
        assert_eq!(t.congestion, Congestion::Bbr);

        // The link hint sizes the windows; the controller is chosen.
        let wan = load(&format!(
            "{MINIMAL}[communication]\ncongestion = \"cubic\"\nlink_bandwidth_mbit = 10000\nlink_rtt = \"200ms\"\n"
        ))
        .unwrap();
        let w = wan.comm.transport_config();
        assert_eq!(w.congestion, Congestion::Cubic);
        // 10 Gbit/s x 200 ms = 250 MB; 1.5 of it per stream.
        assert_eq!(w.stream_receive_window, 375_000_000);
        assert_eq!(w.receive_window, 750_000_000);
        assert_eq!(w.initial_window, 4 * 1024 * 1024);
        assert!(w.validate().is_ok());

        // alice's overrides apply to alice's own transport only.
        let a = c.transport_config_for(&p("alice"));
        assert_eq!(a.send_timeout, Duration::from_secs(120));
        assert_eq!(a.connect_timeout, Duration::from_secs(7));
        assert_eq!(a.peer_lost_timeout, Duration::from_secs(20));
        assert_eq!(c.transport_config_for(&p("bob")), t);
    }

    #[test]
    fn address_book_carries_override_metadata() {
        let c = load(FULL).unwrap();
        let book = c.address_book(&p("bob"));
        assert_eq!(book.len(), 2);
        assert_eq!(book[&p("alice")].addr, addr("127.0.0.1:11012"));
        assert_eq!(book[&p("alice")].metadata["token"], "abc");
        assert_eq!(book[&p("bob")].addr, addr("127.0.0.1:11011"));
        assert!(book[&p("bob")].metadata.is_empty());
        // Advertised addresses, not listen addresses, are dialled; the local
        // entry carries no metadata.
        let book = c.address_book(&p("alice"));
        assert_eq!(book[&p("alice")].addr, addr("127.0.0.1:11012"));
        assert!(book[&p("alice")].metadata.is_empty());
    }

    #[test]
    fn listen_override_and_advertised_address() {
        let c = load(FULL).unwrap();
        assert_eq!(c.listen_addr(&p("alice")).unwrap(), addr("0.0.0.0:11012"));
        assert_eq!(c.listen_addr(&p("bob")).unwrap(), addr("127.0.0.1:11011"));
        let err = c.listen_addr(&p("carol")).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownParty { .. }), "{err}");
    }

    #[test]
    fn check_party_lists_known_parties() {
        let c = load(MINIMAL).unwrap();
        c.check_party(&p("alice")).unwrap();
        let err = c.check_party(&p("carol")).unwrap_err().to_string();
        assert_eq!(
            err,
            "party 'carol' is not a party of job 'demo' (known: alice, bob)"
        );
    }

    #[test]
    fn durations_round_trip_through_toml() {
        let c = load(FULL).unwrap();
        let text = c.to_toml_string().unwrap();
        assert!(text.contains("initial_backoff = \"200ms\""), "{text}");
        assert!(text.contains("send_timeout = \"2m\""), "{text}");
        let back = load(&text).unwrap();
        assert_eq!(back, c);

        let mut c = load(MINIMAL).unwrap();
        c.comm.send_timeout = Duration::from_millis(1_500);
        c.comm.retry.initial_backoff = Duration::from_micros(250);
        c.comm.barrier_timeout = Duration::from_secs(3_725);
        let text = c.to_toml_string().unwrap();
        assert_eq!(load(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn built_in_code() {
        let mut c = Config::new(
            JobName::new("job-1").unwrap(),
            [
                (p("alice"), addr("127.0.0.1:1")),
                (p("bob"), addr("127.0.0.1:2")),
            ],
        )
        .unwrap();
        assert_eq!(c.comm, CommConfig::default());
        let o = PartyOverride {
            listen: Some(addr("0.0.0.0:1")),
            ..PartyOverride::default()
        };
        c.overrides.insert(p("alice"), o);
        c.tls = Some(TlsPaths::new("ca.pem", "alice.pem", "alice.key"));
        c.validate().unwrap();
        assert_eq!(c.listen_addr(&p("alice")).unwrap(), addr("0.0.0.0:1"));

        c.overrides.insert(p("carol"), PartyOverride::default());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("`overrides.carol`"), "{err}");

        // One party is a job (RayFed's one-party jobs); none is not.
        let one = Config::new(
            JobName::new("j").unwrap(),
            [(p("alice"), addr("127.0.0.1:1"))],
        )
        .unwrap();
        assert_eq!(one.address_book(&p("alice")).len(), 1);
        let err = Config::new(JobName::new("j").unwrap(), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`parties`") && err.contains("at least 1"),
            "{err}"
        );

        let err = Config::new(
            JobName::new("j").unwrap(),
            [
                (p("alice"), addr("127.0.0.1:1")),
                (p("bob"), addr("127.0.0.1:2")),
                (p("alice"), addr("127.0.0.1:3")),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`parties.alice`"), "{err}");
    }

    #[test]
    fn observability_is_read_validated_and_written_back() {
        let c = load(FULL).unwrap();
        assert_eq!(c.observability.prometheus, Some(addr("127.0.0.1:9464")));
        let again = Config::from_toml_str(&c.to_toml_string().unwrap(), Path::new("/")).unwrap();
        assert_eq!(again.observability, c.observability);
        assert_eq!(load(MINIMAL).unwrap().observability.prometheus, None);
        for (bad, why) in [
            ("\"127.0.0.1:0\"", "port 0"),
            ("\"not an address\"", "observability.prometheus"),
            ("9464", "prometheus = 9464"),
        ] {
            let err = load(&format!("{MINIMAL}[observability]\nprometheus = {bad}\n")).unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
        let err = load(&format!(
            "{MINIMAL}[observability]\nprometheus_addr = \"127.0.0.1:1\"\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("prometheus_addr"), "{err}");
    }

    #[test]
    fn execution_workers_are_read_validated_and_written_back() {
        let c = load(&format!("{MINIMAL}[execution]\nworkers = 3\n")).unwrap();
        assert_eq!(c.execution.workers, Some(3));
        assert_eq!(c.execution.workers(), 3);
        let again = load(&c.to_toml_string().unwrap()).unwrap();
        assert_eq!(again.execution, c.execution);
        assert!(
            load(MINIMAL).unwrap().execution.workers() >= 1,
            "one per core by default"
        );
        for bad in ["0", "5000"] {
            let err = load(&format!("{MINIMAL}[execution]\nworkers = {bad}\n")).unwrap_err();
            assert!(err.to_string().contains("execution.workers"), "{err}");
        }
        let err = load(&format!("{MINIMAL}[execution]\nworkers = \"two\"\n")).unwrap_err();
        assert!(err.to_string().contains("workers"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let cases = [
            (MINIMAL.replace("job = ", "jbo = \"x\"\njob = "), "jbo"),
            (
                format!("{MINIMAL}[communication]\nsend_timout = \"1s\"\n"),
                "send_timout",
            ),
            (
                format!("{MINIMAL}[communication.retry]\nmax_attempt = 3\n"),
                "max_attempt",
            ),
            (
                format!("{MINIMAL}[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\ncrl = \"d\"\n"),
                "crl",
            ),
            (
                format!("{MINIMAL}[overrides.bob]\nlisten_addr = \"0.0.0.0:1\"\n"),
                "listen_addr",
            ),
            (format!("{MINIMAL}[communicaton]\n"), "communicaton"),
            (format!("{MINIMAL}[execution]\nworker = 2\n"), "worker"),
        ];
        for (text, key) in cases {
            let err = load(&text).unwrap_err();
            assert!(matches!(err, ConfigError::Toml { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(key), "{key}: {msg}");
            assert!(msg.contains("unknown field"), "{key}: {msg}");
        }
    }

    #[test]
    fn invalid_durations_are_named() {
        let text = format!("{MINIMAL}[communication]\nsend_timeout = \"soon\"\n");
        let msg = load(&text).unwrap_err().to_string();
        assert!(msg.contains("send_timeout"), "{msg}");
        assert!(msg.contains("line 7"), "{msg}");

        let text = format!("{MINIMAL}[communication.retry]\ninitial_backoff = 100\n");
        let msg = load(&text).unwrap_err().to_string();
        assert!(msg.contains("initial_backoff"), "{msg}");

        let text = format!("{MINIMAL}[overrides.alice]\nsend_timeout = \"0s\"\n");
        error_of(&text, Some("overrides.alice.send_timeout"));
    }

    #[test]
    fn invalid_names_and_addresses_are_named() {
        let text = MINIMAL.replace("bob =", "Bob =");
        let msg = error_of(&text, Some("parties.Bob"));
        assert!(msg.contains("lowercase letter"), "{msg}");

        let text = MINIMAL.replace("bob =", "\"bob.x\" =");
        error_of(&text, Some("parties.\"bob.x\""));

        let text = MINIMAL.replace("\"demo\"", "\"de mo\"");
        error_of(&text, Some("job"));

        let text = MINIMAL.replace("127.0.0.1:11011", "127.0.0.1");
        let msg = error_of(&text, Some("parties.bob"));
        assert!(msg.contains("host:port"), "{msg}");

        let text = MINIMAL.replace("127.0.0.1:11011", "no-such-host.invalid:1");
        error_of(&text, Some("parties.bob"));

        let text = format!("{MINIMAL}[overrides.bob]\nlisten = \"nowhere\"\n");
        error_of(&text, Some("overrides.bob.listen"));

        let text = format!("{MINIMAL}[overrides.carol]\nlisten = \"0.0.0.0:1\"\n");
        let msg = error_of(&text, Some("overrides.carol"));
        assert!(msg.contains("known: alice, bob"), "{msg}");

        let text = format!("{MINIMAL}[overrides.Carol]\n");
        error_of(&text, Some("overrides.Carol"));
    }

    #[test]
    fn host_names_are_resolved() {
        let text = MINIMAL.replace("127.0.0.1:11011", "localhost:11011");
        let c = load(&text).unwrap();
        let a = c.parties[&p("bob")];
        assert!(a.ip().is_loopback(), "{a}");
        assert_eq!(a.port(), 11011);
    }

    #[test]
    fn one_party_is_a_job_and_none_is_not() {
        let text = "job = \"demo\"\n[parties]\nalice = \"127.0.0.1:1\"\n";
        let c = load(text).unwrap();
        assert_eq!(c.parties.len(), 1);
        c.check_party(&p("alice")).unwrap();
        assert_eq!(c.listen_addr(&p("alice")).unwrap(), addr("127.0.0.1:1"));
        let back = load(&c.to_toml_string().unwrap()).unwrap();
        assert_eq!(back, c);
        let text = "job = \"demo\"\n[parties]\n";
        let msg = error_of(text, Some("parties"));
        assert!(msg.contains("at least 1 party"), "{msg}");
        let msg = load("job = \"demo\"\n").unwrap_err().to_string();
        assert!(msg.contains("parties"), "{msg}");
    }

    #[test]
    fn invalid_values_are_named() {
        let comm = |body: &str| format!("{MINIMAL}[communication]\n{body}\n");
        error_of(
            &comm("max_message_size = 0"),
            Some("communication.max_message_size"),
        );
        error_of(
            &comm("link_bandwidth_mbit = 0"),
            Some("communication.link_bandwidth_mbit"),
        );
        error_of(&comm("link_rtt = \"20s\""), Some("communication.link_rtt"));
        error_of(
            &comm("max_concurrent_streams = 0"),
            Some("communication.max_concurrent_streams"),
        );
        error_of(
            &comm("inbound_budget_per_peer = 1000"),
            Some("communication.inbound_budget_per_peer"),
        );
        error_of(
            &comm("max_message_size = 1000\ninbound_budget_per_peer = 4000\ninbound_budget = 2000"),
            Some("communication.inbound_budget"),
        );
        let msg = error_of(&comm("congestion = \"vegas\""), None);
        assert!(msg.contains("congestion") && msg.contains("bbr"), "{msg}");
        let msg = error_of(
            &comm("keep_alive_interval = \"10s\"\npeer_lost_timeout = \"10s\""),
            Some("communication.keep_alive_interval"),
        );
        assert!(msg.contains("peer_lost_timeout"), "{msg}");
        error_of(
            &comm("connect_timeout = \"0s\""),
            Some("communication.connect_timeout"),
        );
        error_of(
            &comm("barrier_timeout = \"0s\""),
            Some("communication.barrier_timeout"),
        );
        let retry = |body: &str| format!("{MINIMAL}[communication.retry]\n{body}\n");
        error_of(
            &retry("multiplier = 0.5"),
            Some("communication.retry.multiplier"),
        );
        error_of(
            &retry("max_attempts = 0"),
            Some("communication.retry.max_attempts"),
        );
        error_of(
            &retry("initial_backoff = \"10s\""),
            Some("communication.retry.initial_backoff"),
        );
        // An integer multiplier is a number all the same.
        assert_eq!(
            load(&retry("multiplier = 3"))
                .unwrap()
                .comm
                .retry
                .multiplier,
            3.0
        );
        // Wrong types and negative numbers are toml's to report.
        let msg = load(&comm("max_message_size = -1"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("max_message_size"), "{msg}");
        let msg = load(&comm("expose_error_trace = \"yes\""))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("expose_error_trace"), "{msg}");

        let long = "x".repeat(MAX_METADATA_LEN + 1);
        let text = format!("{MINIMAL}[overrides.bob]\nmetadata = {{ token = \"{long}\" }}\n");
        error_of(&text, Some("overrides.bob.metadata.token"));
    }

    #[test]
    fn syntax_errors_quote_the_line_and_file() {
        let dir = temp_dir("syntax");
        let path = dir.join("xsilo.toml");
        std::fs::write(&path, "job = \"demo\"\n[parties\n").unwrap();
        let err = Config::from_file(&path).unwrap_err();
        match &err {
            ConfigError::Toml { path: Some(p), .. } => assert_eq!(p, &path),
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("xsilo.toml") && msg.contains("line 2"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_file_is_named() {
        let path = std::env::temp_dir().join("xsilo-config-test-does-not-exist.toml");
        let err = Config::from_file(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("does-not-exist.toml"), "{err}");
    }

    #[test]
    fn tls_files_are_loaded_relative_to_the_file() {
        let ca = xsilo_transport::devcert::DevCa::new().unwrap();
        let cert = ca.issue(&p("alice")).unwrap();
        let dir = temp_dir("tls");
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        std::fs::write(dir.join("certs/ca.pem"), ca.ca_pem()).unwrap();
        std::fs::write(dir.join("certs/alice.pem"), &cert.cert_pem).unwrap();
        std::fs::write(dir.join("certs/alice.key"), &cert.key_pem).unwrap();
        let text = format!(
            "{MINIMAL}[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/alice.pem\"\nkey = \"certs/alice.key\"\n"
        );
        std::fs::write(dir.join("xsilo.toml"), &text).unwrap();

        let c = Config::from_file(dir.join("xsilo.toml")).unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.ca, dir.join("certs/ca.pem"));
        assert_eq!(tls.key, dir.join("certs/alice.key"));
        let identity = c.tls_identity().unwrap();
        assert!(identity.names(&p("alice")));
        assert!(!identity.names(&p("bob")));

        // A missing file: the error names the files.
        let mut broken = c.clone();
        if let Some(t) = broken.tls.as_mut() {
            t.key = dir.join("certs/missing.key");
        }
        let err = broken.tls_identity().unwrap_err();
        assert!(matches!(err, ConfigError::Tls { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.key"), "{err}");

        // No [tls] section.
        let err = load(MINIMAL)
            .unwrap()
            .tls_identity()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no [tls] section"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    #[test]
    fn a_table_built_in_code_reads_as_the_text_does() {
        let table: toml::Table = toml::from_str(FULL).unwrap();
        let c = Config::from_toml_table(table, Path::new("/srv/xsilo")).unwrap();
        assert_eq!(c, load(FULL).unwrap());

        let table_of = |text: &str| -> Result<Config, ConfigError> {
            let table: toml::Table = toml::from_str(text).unwrap();
            Config::from_toml_table(table, Path::new("/"))
        };
        // A value of the wrong type, an unknown key: the message names it.
        let msg = table_of(&format!(
            "{MINIMAL}[communication]\nexpose_error_trace = \"yes\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(msg.contains("communication.expose_error_trace"), "{msg}");
        let msg = table_of(&format!("{MINIMAL}[communication]\nsend_timout = \"1s\"\n"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("send_timout"), "{msg}");
        // A refused name or address, an invalid value: `Invalid` with the key.
        for (text, key) in [
            (MINIMAL.replace("bob =", "Bob ="), "parties.Bob"),
            (
                format!("{MINIMAL}[overrides.bob]\nlisten = \"nowhere\"\n"),
                "overrides.bob.listen",
            ),
            (
                format!("{MINIMAL}[communication.retry]\nmultiplier = 0.5\n"),
                "communication.retry.multiplier",
            ),
        ] {
            match table_of(&text).unwrap_err() {
                ConfigError::Invalid { key: k, .. } => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn runtime_options_are_derived_once() {
        let c = load(FULL).unwrap();
        let execution = ExecutionConfig { workers: Some(3) };
        // alice overrides her send timeout: her drain bound follows it.
        let alice = c
            .comm
            .runtime_options(&c.transport_config_for(&p("alice")), &execution);
        assert_eq!(alice.drain_timeout, Duration::from_secs(125));
        let bob = c
            .comm
            .runtime_options(&c.transport_config_for(&p("bob")), &execution);
        assert_eq!(bob.drain_timeout, Duration::from_secs(65));
        assert_eq!(bob.early_bytes_per_peer, 524_288_000);
        assert_eq!(bob.workers, 3);
        assert!(bob.exit_on_sending_failure);
        assert!(bob.continue_waiting_for_data_sending_on_error);
        assert!(!bob.expose_error_trace);
        assert_eq!(bob.metrics_interval, Some(Duration::from_secs(1)));

        let budget = load(&format!(
            "{MINIMAL}[communication]\nmax_message_size = 1000\ninbound_budget_per_peer = 4000\ninbound_budget = 8000\n"
        ))
        .unwrap();
        let o = budget.comm.runtime_options(
            &budget.transport_config_for(&p("bob")),
            &ExecutionConfig::default(),
        );
        assert_eq!(o.early_bytes_per_peer, 4000);

        // The runtime's own defaults are the same derivation.
        let d = RuntimeOptions::default();
        let from_defaults = CommConfig::default().runtime_options(
            &CommConfig::default().transport_config(),
            &ExecutionConfig::default(),
        );
        assert_eq!(d.drain_timeout, Duration::from_secs(65));
        assert_eq!(from_defaults.drain_timeout, d.drain_timeout);
        assert_eq!(from_defaults.early_bytes_per_peer, d.early_bytes_per_peer);
    }
}
