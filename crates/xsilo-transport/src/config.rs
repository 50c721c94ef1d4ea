//! Transport settings, with their defaults and why.

use std::time::Duration;

use xsilo_wire::limits::DEFAULT_MAX_MESSAGE_SIZE;

/// Settings of a transport. `Default` gives the documented defaults.
///
/// Most of these are settings of the job's configuration, documented (with
/// their defaults and limits) once, on `xsilo::CommConfig`, the
/// `[communication]` table, from which `xsilo` builds this; the fields
/// documented here in full are the transport's own.
///
/// ```
/// use std::time::Duration;
/// use xsilo_transport::TransportConfig;
/// let mut config = TransportConfig::default();
/// config.peer_lost_timeout = Duration::from_secs(5);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TransportConfig {
    /// See `xsilo::CommConfig::max_message_size`.
    pub max_message_size: u64,
    /// See `xsilo::CommConfig::send_timeout`. Applies to `send_object` and
    /// `send_control`; a send that passes it fails with
    /// [`crate::TransportError::Timeout`].
    pub send_timeout: Duration,
    /// See `xsilo::CommConfig::connect_timeout`.
    pub connect_timeout: Duration,
    /// See `xsilo::RetryConfig`, the `[communication.retry]` table.
    pub retry: RetryPolicy,
    /// See `xsilo::CommConfig::keep_alive_interval`.
    pub keep_alive_interval: Duration,
    /// See `xsilo::CommConfig::peer_lost_timeout` (promise E10). The QUIC
    /// idle timeout is set to this minus `keep_alive_interval`, because
    /// QUIC restarts its idle timer on the first keep-alive it sends after
    /// the last packet received; so this is the bound from a peer's death
    /// to the `PeerDown` event.
    pub peer_lost_timeout: Duration,
    /// Per-stream receive window in bytes: how much of one object may be
    /// in flight. Default from the default link hint (1 Gbit/s x 100 ms):
    /// 1.5 bandwidth-delay products, about 17.9 MiB. See
    /// [`TransportConfig::set_link`].
    pub stream_receive_window: u64,
    /// Connection receive window in bytes: how much of all objects from one
    /// peer may be in flight. Default two stream windows.
    pub receive_window: u64,
    /// Connection send window in bytes. Default as `receive_window`.
    pub send_window: u64,
    /// See `xsilo::CommConfig::congestion`.
    pub congestion: Congestion,
    /// The congestion controller's initial window in bytes. Default from
    /// the link hint: a quarter of its bandwidth-delay product, from
    /// quinn's 240 000 bytes up to 4 MiB (about 3 MB by default). Through
    /// the emulator at 50 ms and 0.1% loss a 64 MiB object moved 46 MiB/s
    /// with quinn's 240 kB, 64 with 2 MiB and 71 with 4 MiB: most of a
    /// transfer of that size is otherwise spent in slow start. Sending is
    /// paced, so the first window is not one burst.
    pub initial_window: u64,
    /// When a dial has had no answer at all for this long, a fresh attempt
    /// starts beside it (the first to complete wins, at most eight run at
    /// once; after 2 s the interval grows). Default 100 ms. QUIC itself re-sends a lost first flight only
    /// after its probe timeout, about 1 s with its 333 ms initial round
    /// trip estimate, which a party pays whenever it dials a peer a moment
    /// before the peer has bound its port.
    pub first_flight_resend: Duration,
    /// See `xsilo::CommConfig::max_concurrent_streams`; the default is
    /// [`DEFAULT_MAX_CONCURRENT_STREAMS`].
    pub max_concurrent_streams: u32,
    /// See `xsilo::CommConfig::inbound_budget`; the default is filled in
    /// by [`TransportConfig::inbound_limits`].
    pub inbound_budget: Option<u64>,
    /// See `xsilo::CommConfig::inbound_budget_per_peer`; the default is
    /// filled in by [`TransportConfig::inbound_limits`].
    pub inbound_budget_per_peer: Option<u64>,
    /// UDP socket send and receive buffer size requested from the OS.
    /// Default 4 MiB: with the OS default (208 KiB) a 256 MiB transfer lost
    /// thousands of packets on loopback here; 4 MiB brought loss to about
    /// zero. The OS may cap it (`net.core.rmem_max`).
    pub socket_buffer: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        let mut config = Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            send_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            keep_alive_interval: Duration::from_secs(1),
            peer_lost_timeout: Duration::from_secs(10),
            stream_receive_window: 0,
            receive_window: 0,
            send_window: 0,
            congestion: Congestion::default(),
            initial_window: 0,
            first_flight_resend: Duration::from_millis(100),
            inbound_budget: None,
            inbound_budget_per_peer: None,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            socket_buffer: 4 * 1024 * 1024,
        };
        config.set_link(DEFAULT_LINK_BANDWIDTH, DEFAULT_LINK_RTT);
        config
    }
}

/// The default link hint's bandwidth: 1 Gbit/s, in bytes per second.
pub const DEFAULT_LINK_BANDWIDTH: u64 = 125_000_000;

/// Default [`TransportConfig::max_concurrent_streams`]: objects one peer
/// may have in flight towards us at once.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 16;
/// The default link hint's round trip: 100 ms.
pub const DEFAULT_LINK_RTT: Duration = Duration::from_millis(100);

/// Congestion controllers quinn offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// BBR (model-based): keeps its rate under random loss. The default.
    #[default]
    Bbr,
    /// Cubic (loss-based), quinn's default.
    Cubic,
    /// NewReno (loss-based).
    NewReno,
}

impl std::fmt::Display for Congestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bbr => "bbr",
            Self::Cubic => "cubic",
            Self::NewReno => "newreno",
        })
    }
}

impl TransportConfig {
    /// Sizes the flow-control windows for a link of `bandwidth` bytes per
    /// second and round trip `rtt` (a hint: the longest, fastest path this
    /// party expects). The stream window is 1.5 bandwidth-delay products
    /// (room for the congestion controller to probe above the bottleneck
    /// rate), at least 1 MiB; the connection windows are two stream
    /// windows. Windows bound what one object and one peer may have in
    /// flight; too small a window caps throughput at window / rtt. The
    /// congestion controller's initial window is a quarter of the product,
    /// from 240 000 bytes to 4 MiB.
    ///
    /// ```
    /// use std::time::Duration;
    /// use xsilo_transport::TransportConfig;
    /// let mut c = TransportConfig::default();
    /// c.set_link(125_000_000, Duration::from_millis(100)); // 1 Gbit/s x 100 ms
    /// assert_eq!(c.stream_receive_window, 18_750_000);
    /// assert_eq!(c.receive_window, 37_500_000);
    /// assert_eq!(c.initial_window, 3_125_000);
    /// ```
    pub fn set_link(&mut self, bandwidth: u64, rtt: Duration) {
        let bdp = (bandwidth as f64 * rtt.as_secs_f64()).min(1e15) as u64;
        let stream = (bdp.saturating_mul(3) / 2).max(1024 * 1024);
        self.initial_window = (bdp / 4).clamp(240_000, 4 * 1024 * 1024);
        self.stream_receive_window = stream;
        self.receive_window = stream.saturating_mul(2);
        self.send_window = stream.saturating_mul(2);
    }
}

/// An invalid setting, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transport setting `{key}`: {reason}")]
pub struct ConfigError {
    /// The setting's name.
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

fn bad(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        reason: reason.into(),
    }
}

impl TransportConfig {
    /// The inbound budgets in bytes: (all peers, per peer), with the
    /// defaults filled in.
    pub fn inbound_limits(&self) -> (u64, u64) {
        let per_peer = self
            .inbound_budget_per_peer
            .unwrap_or(self.max_message_size);
        let all = self
            .inbound_budget
            .unwrap_or(self.max_message_size.saturating_mul(2));
        (all, per_peer)
    }

    /// Checks the settings against each other and against QUIC's limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("send_timeout", self.send_timeout),
            ("connect_timeout", self.connect_timeout),
            ("keep_alive_interval", self.keep_alive_interval),
            ("peer_lost_timeout", self.peer_lost_timeout),
            ("first_flight_resend", self.first_flight_resend),
        ];
        for (key, d) in positive {
            if d.is_zero() {
                return Err(bad(key, "must be greater than zero"));
            }
        }
        // The QUIC idle timeout is peer_lost_timeout - keep_alive_interval;
        // a keep-alive must fit in it, or an idle but live peer is lost.
        if self.keep_alive_interval.saturating_mul(2) >= self.peer_lost_timeout {
            return Err(bad(
                "keep_alive_interval",
                format!(
                    "{:?} must be less than half of peer_lost_timeout ({:?}), or an idle but \
                     live peer is reported lost",
                    self.keep_alive_interval, self.peer_lost_timeout
                ),
            ));
        }
        // Deadlines are instants: keep them representable.
        for (key, d) in [
            ("send_timeout", self.send_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if d > Duration::from_secs(86_400 * 365) {
                return Err(bad(key, "must be at most a year"));
            }
        }
        // QUIC idle timeouts are carried as milliseconds in a VarInt (< 2^62).
        if self.peer_lost_timeout > Duration::from_secs(86_400) {
            return Err(bad("peer_lost_timeout", "must be at most one day"));
        }
        if self.max_message_size == 0 {
            return Err(bad("max_message_size", "must be greater than zero"));
        }
        for (key, v) in [
            ("stream_receive_window", self.stream_receive_window),
            ("receive_window", self.receive_window),
            ("send_window", self.send_window),
        ] {
            if v < 16 * 1024 {
                return Err(bad(key, "must be at least 16 KiB"));
            }
            if v >= 1 << 62 {
                return Err(bad(key, "must be below 2^62"));
            }
        }
        if !(2_400..=1 << 32).contains(&self.initial_window) {
            return Err(bad(
                "initial_window",
                "must be from 2400 bytes (two datagrams) to 4 GiB",
            ));
        }
        let (all, per_peer) = self.inbound_limits();
        if per_peer < self.max_message_size {
            return Err(bad(
                "inbound_budget_per_peer",
                format!(
                    "{per_peer} bytes is below max_message_size ({}): such an object could never be admitted",
                    self.max_message_size
                ),
            ));
        }
        if all < per_peer {
            return Err(bad(
                "inbound_budget",
                format!("{all} bytes is below the per-peer budget ({per_peer})"),
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err(bad("max_concurrent_streams", "must be at least 1"));
        }
        self.retry.validate()
    }
}

/// Exponential backoff between attempts: `initial_backoff`, then times
/// `multiplier` each attempt, capped at `max_backoff`. The settings, their
/// defaults and limits are documented on `xsilo::RetryConfig` (the
/// `[communication.retry]` table).
///
/// ```
/// use std::time::Duration;
/// use xsilo_transport::RetryPolicy;
/// let p = RetryPolicy::default();
/// assert_eq!(p.backoff(1), Duration::from_millis(100));
/// assert_eq!(p.backoff(2), Duration::from_millis(200));
/// assert_eq!(p.backoff(30), p.max_backoff);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// See `xsilo::RetryConfig::max_attempts`.
    pub max_attempts: u32,
    /// See `xsilo::RetryConfig::initial_backoff`.
    pub initial_backoff: Duration,
    /// See `xsilo::RetryConfig::max_backoff`.
    pub max_backoff: Duration,
    /// See `xsilo::RetryConfig::multiplier`.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(63) as i32;
        let secs = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max_backoff.as_secs_f64() {
            self.max_backoff
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// Checks the policy.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(bad("retry.max_attempts", "must be at least 1"));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(bad("retry.multiplier", "must be a finite number >= 1.0"));
        }
        if self.initial_backoff > self.max_backoff {
            return Err(bad(
                "retry.initial_backoff",
                "must not be longer than retry.max_backoff",
            ));
        }
        Ok(())
    }
}
