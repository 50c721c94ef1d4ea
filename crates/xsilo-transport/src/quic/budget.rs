//! The inbound memory budget (promise S1): bytes of inbound objects read but
//! not yet taken by the runtime, bounded per peer and for the whole
//! endpoint (RFC 0001, "Inbound memory").
//!
//! An object is admitted whole, on its header, before any of its payload is
//! read: its announced length is taken from the peer's budget and then from
//! the endpoint's, and given back when the runtime has answered (taken or
//! refused it) or the object was refused. An object that does not fit waits,
//! unread, so QUIC flow control holds its sender; a wait longer than
//! `send_timeout` refuses it. Admitting whole objects means two half-read
//! objects can never hold the budget against each other. Since
//! `max_message_size` is at most the per-peer budget, every object fits
//! once earlier ones are taken.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// An admission waits at most this many `send_timeout`s in all.
const MAX_WAITS: u32 = 10;

/// Budgets count KiB, so that one object (up to 4 TiB) is one acquire.
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// One budget of bytes.
#[derive(Clone, Debug)]
pub(super) struct Budget {
    sem: Arc<Semaphore>,
    total_kib: u32,
    /// Bumped whenever bytes of an admitted object arrive or an admission
    /// is given back: a wait for room is bounded by time without this
    /// moving, not by a stopwatch.
    activity: Arc<std::sync::atomic::AtomicU64>,
}

impl Budget {
    pub(super) fn new(bytes: u64) -> Self {
        let total_kib = kib(bytes);
        Self {
            sem: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            activity: Arc::default(),
        }
    }

    /// Notes that an admitted object of this budget made progress.
    pub(super) fn touch(&self) {
        self.activity
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn activity(&self) -> u64 {
        self.activity.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes admitted and not yet given back.
    pub(super) fn held(&self) -> u64 {
        let free = self.sem.available_permits() as u64;
        u64::from(self.total_kib).saturating_sub(free) * 1024
    }
}

/// The budget an admitted object holds; given back when dropped.
#[derive(Debug)]
pub(super) struct Admitted {
    _peer: OwnedSemaphorePermit,
    _endpoint: OwnedSemaphorePermit,
    peer: Budget,
    endpoint: Budget,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.peer.touch();
        self.endpoint.touch();
    }
}

/// Why an object was not admitted.
pub(super) enum NotAdmitted {
    /// More than the peer's budget: can never fit.
    TooLarge,
    /// The budget stayed full for `bound`.
    Full,
}

/// Admits `bytes` from `peer` and then `endpoint`, waiting while the
/// budgets make progress (admitted objects receiving bytes, admissions given
/// back), at most `bound` without any and ten `bound`s in all.
pub(super) async fn admit(
    peer: &Budget,
    endpoint: &Budget,
    bytes: u64,
    bound: Duration,
) -> Result<Admitted, NotAdmitted> {
    let n = kib(bytes);
    if n > peer.total_kib || n > endpoint.total_kib {
        return Err(NotAdmitted::TooLarge);
    }
    let both = async {
        let p = peer.sem.clone().acquire_many_owned(n).await.ok()?;
        let e = endpoint.sem.clone().acquire_many_owned(n).await.ok()?;
        Some(Admitted {
            _peer: p,
            _endpoint: e,
            peer: peer.clone(),
            endpoint: endpoint.clone(),
        })
    };
    tokio::pin!(both);
    // Progress elsewhere extends the wait, but never past this: the sender
    // will have given up long before.
    let cap = Instant::now() + bound.saturating_mul(MAX_WAITS);
    loop {
        let seen = (peer.activity(), endpoint.activity());
        match tokio::time::timeout(bound, &mut both).await {
            Ok(Some(a)) => return Ok(a),
            Ok(None) => return Err(NotAdmitted::Full),
            // Still moving: keep waiting.
            Err(_) if (peer.activity(), endpoint.activity()) != seen && Instant::now() < cap => {}
            Err(_) => return Err(NotAdmitted::Full),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_are_admitted_whole_and_wait_for_room() {
        let (peer, endpoint) = (Budget::new(10 << 20), Budget::new(15 << 20));
        let bound = Duration::from_millis(50);
        let a = admit(&peer, &endpoint, 6 << 20, bound).await.ok().unwrap();
        assert_eq!(peer.held(), 6 << 20);
        // 6 + 6 > 10: waits, and gives up after the bound.
        assert!(matches!(
            admit(&peer, &endpoint, 6 << 20, bound).await,
            Err(NotAdmitted::Full)
        ));
        drop(a);
        assert_eq!(peer.held(), 0);
        assert!(admit(&peer, &endpoint, 6 << 20, bound).await.is_ok());
        assert!(matches!(
            admit(&peer, &endpoint, 11 << 20, bound).await,
            Err(NotAdmitted::TooLarge)
        ));
    }

    #[tokio::test]
    async fn a_wait_for_room_lasts_while_admitted_objects_make_progress() {
        let (peer, endpoint) = (Budget::new(10 << 20), Budget::new(20 << 20));
        let bound = Duration::from_millis(100);
        let a = admit(&peer, &endpoint, 8 << 20, bound).await.ok().unwrap();
        // The admitted object receives bytes every 50 ms for 300 ms (three
        // bounds), then completes: the second waits for it, not refused.
        let progress = peer.clone();
        let arrival = tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                progress.touch();
            }
            drop(a);
        });
        assert!(admit(&peer, &endpoint, 8 << 20, bound).await.is_ok());
        arrival.await.unwrap();
    }

    #[tokio::test]
    async fn the_endpoint_budget_bounds_all_peers_together() {
        let endpoint = Budget::new(8 << 20);
        let (p, q) = (Budget::new(8 << 20), Budget::new(8 << 20));
        let bound = Duration::from_millis(50);
        let _a = admit(&p, &endpoint, 5 << 20, bound).await.ok().unwrap();
        assert!(matches!(
            admit(&q, &endpoint, 5 << 20, bound).await,
            Err(NotAdmitted::Full)
        ));
        assert!(admit(&q, &endpoint, 3 << 20, bound).await.is_ok());
    }
}
