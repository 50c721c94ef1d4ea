//! The party's metrics, through the `metrics` facade (promise F2).
//!
//! Nothing is recorded unless the process installed a recorder (the facade
//! does for `[observability] prometheus`); without one every update is a
//! no-op. Handles are resolved when a party starts: a recorder installed
//! after that sees nothing of it.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `xsilo_sent_objects_total` | counter | job, party, peer | objects the peer's runtime acknowledged |
//! | `xsilo_sent_bytes_total` | counter | job, party, peer | their payload bytes |
//! | `xsilo_received_objects_total` | counter | job, party, peer | objects received (a resend counted again) |
//! | `xsilo_received_bytes_total` | counter | job, party, peer | their payload bytes |
//! | `xsilo_send_retries_total` | counter | job, party, peer | attempts beyond the first of acknowledged sends |
//! | `xsilo_send_errors_total` | counter | job, party, peer | sends (objects, RemoteErrors, aborts, courtesies) that failed, a closed peer not counted |
//! | `xsilo_sends_in_flight` | gauge | job, party, peer | sends started and not yet ended that shutdown waits for |
//! | `xsilo_peer_rtt_seconds` | gauge | job, party, peer | the transport's smoothed round trip (QUIC path statistics), sampled |
//! | `xsilo_live_objects` | gauge | job, party | objects held ([`crate::Stats::live_objects`]), sampled |
//! | `xsilo_live_bytes` | gauge | job, party | bytes of the values held, sampled |
//! | `xsilo_live_actors` | gauge | job, party | actors living here, sampled |
//!
//! "Sampled" gauges are set every `RuntimeOptions::metrics_interval`.

use metrics::{Counter, Gauge, Unit};
use xsilo_wire::{JobName, PartyName};

/// Describes every metric to the installed recorder (units and help text).
/// Call once after installing a recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "xsilo_sent_objects_total",
        Unit::Count,
        "Objects the peer's runtime acknowledged"
    );
    describe_counter!(
        "xsilo_sent_bytes_total",
        Unit::Bytes,
        "Payload bytes of the objects the peer acknowledged"
    );
    describe_counter!(
        "xsilo_received_objects_total",
        Unit::Count,
        "Objects received from the peer"
    );
    describe_counter!(
        "xsilo_received_bytes_total",
        Unit::Bytes,
        "Payload bytes received from the peer"
    );
    describe_counter!(
        "xsilo_send_retries_total",
        Unit::Count,
        "Attempts beyond the first of acknowledged sends"
    );
    describe_counter!(
        "xsilo_send_errors_total",
        Unit::Count,
        "Sends to the peer that failed"
    );
    describe_gauge!(
        "xsilo_sends_in_flight",
        Unit::Count,
        "Sends to the peer started and not yet ended"
    );
    describe_gauge!(
        "xsilo_peer_rtt_seconds",
        Unit::Seconds,
        "Smoothed round-trip time to the peer"
    );
    describe_gauge!("xsilo_live_objects", Unit::Count, "Objects held");
    describe_gauge!("xsilo_live_bytes", Unit::Bytes, "Bytes of the values held");
    describe_gauge!("xsilo_live_actors", Unit::Count, "Actors living here");
}

/// One peer's metrics, seen from this party.
pub(crate) struct LinkMetrics {
    pub(crate) sent_objects: Counter,
    pub(crate) sent_bytes: Counter,
    pub(crate) received_objects: Counter,
    pub(crate) received_bytes: Counter,
    pub(crate) retries: Counter,
    pub(crate) errors: Counter,
    pub(crate) in_flight: Gauge,
    pub(crate) rtt: Gauge,
}

impl LinkMetrics {
    pub(crate) fn new(job: &JobName, me: &PartyName, peer: &PartyName) -> Self {
        let labels = [
            ("job", job.as_str().to_owned()),
            ("party", me.as_str().to_owned()),
            ("peer", peer.as_str().to_owned()),
        ];
        Self {
            sent_objects: metrics::counter!("xsilo_sent_objects_total", &labels),
            sent_bytes: metrics::counter!("xsilo_sent_bytes_total", &labels),
            received_objects: metrics::counter!("xsilo_received_objects_total", &labels),
            received_bytes: metrics::counter!("xsilo_received_bytes_total", &labels),
            retries: metrics::counter!("xsilo_send_retries_total", &labels),
            errors: metrics::counter!("xsilo_send_errors_total", &labels),
            in_flight: metrics::gauge!("xsilo_sends_in_flight", &labels),
            rtt: metrics::gauge!("xsilo_peer_rtt_seconds", &labels),
        }
    }
}

/// This party's own gauges.
#[derive(Clone)]
pub(crate) struct PartyMetrics {
    pub(crate) live_objects: Gauge,
    pub(crate) live_bytes: Gauge,
    pub(crate) live_actors: Gauge,
}

impl PartyMetrics {
    pub(crate) fn new(job: &JobName, me: &PartyName) -> Self {
        let labels = [
            ("job", job.as_str().to_owned()),
            ("party", me.as_str().to_owned()),
        ];
        Self {
            live_objects: metrics::gauge!("xsilo_live_objects", &labels),
            live_bytes: metrics::gauge!("xsilo_live_bytes", &labels),
            live_actors: metrics::gauge!("xsilo_live_actors", &labels),
        }
    }
}
