//! The channel that carries [`TransportEvent`]s to the runtime, bounded
//! wherever a peer controls how many there are (promise S1, RFC 0001
//! "Inbound memory").
//!
//! * A peer's **control frames** each take one of that peer's
//!   [`CONTROL_CREDITS`] credits, from when the frame is decoded until the
//!   runtime takes the event. With none free, the control stream is not
//!   read further, so QUIC flow control holds the sender: a flood of frames
//!   waits in the sender, not here.
//! * **Progress** reports take one of [`PROGRESS_CREDITS`] shared credits,
//!   or are dropped: they are advisory, and the next one says more.
//! * **Objects** need no credit: each holds its data stream, whose count
//!   is bounded by `max_concurrent_streams` per connection and whose bytes
//!   are bounded by the inbound budget, until the runtime answers it.
//! * **Peer up / down / refused** need none either: at most one per
//!   connection handshake or close.
//!
//! Events keep one order, whatever their kind.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::api::TransportEvent;

/// Control frames of one peer decoded and not yet taken by the runtime.
pub const CONTROL_CREDITS: usize = 256;

/// Progress reports not yet taken by the runtime, all peers together.
pub const PROGRESS_CREDITS: usize = 64;

struct Queued {
    event: TransportEvent,
    /// Returned when the runtime takes the event.
    _credit: Option<OwnedSemaphorePermit>,
}

/// A new channel.
pub(crate) fn channel() -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        EventSender {
            tx,
            progress: Arc::new(Semaphore::new(PROGRESS_CREDITS)),
        },
        EventReceiver { rx },
    )
}

/// Credits for one peer's control frames.
pub(crate) fn control_credits() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(CONTROL_CREDITS))
}

/// The transport's end of the channel.
#[derive(Clone)]
pub(crate) struct EventSender {
    tx: mpsc::UnboundedSender<Queued>,
    progress: Arc<Semaphore>,
}

impl EventSender {
    /// Queues an event bounded by what causes it (see the module docs).
    /// False when the receiver is gone.
    pub(crate) fn send(&self, event: TransportEvent) -> bool {
        self.tx
            .send(Queued {
                event,
                _credit: None,
            })
            .is_ok()
    }

    /// Queues a control frame's event once one of `credits` is free.
    /// False when the receiver is gone.
    pub(crate) async fn send_control(
        &self,
        credits: &Arc<Semaphore>,
        event: TransportEvent,
    ) -> bool {
        let Ok(credit) = credits.clone().acquire_owned().await else {
            return false;
        };
        self.tx
            .send(Queued {
                event,
                _credit: Some(credit),
            })
            .is_ok()
    }

    /// Queues a progress report if a credit is free now; else drops it.
    pub(crate) fn send_progress(&self, event: TransportEvent) {
        if let Ok(credit) = self.progress.clone().try_acquire_owned() {
            let _ = self.tx.send(Queued {
                event,
                _credit: Some(credit),
            });
        }
    }
}

/// Receives the transport's inbound events, in the order they happened.
/// Taking an event returns the credit it held (see the module docs), so a
/// runtime that stops taking events stops its peers' control streams.
pub struct EventReceiver {
    rx: mpsc::UnboundedReceiver<Queued>,
}

impl std::fmt::Debug for EventReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReceiver")
            .field("queued", &self.rx.len())
            .finish()
    }
}

impl EventReceiver {
    /// The next event; `None` once the transport is gone and every event
    /// was taken.
    pub async fn recv(&mut self) -> Option<TransportEvent> {
        self.rx.recv().await.map(|q| q.event)
    }

    /// The next event if one is queued now.
    ///
    /// # Errors
    ///
    /// `Empty` when none is queued, `Disconnected` once the transport is
    /// gone and every event was taken.
    pub fn try_recv(&mut self) -> Result<TransportEvent, mpsc::error::TryRecvError> {
        self.rx.try_recv().map(|q| q.event)
    }

    /// Polls for the next event (see [`EventReceiver::recv`]).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        self.rx.poll_recv(cx).map(|q| q.map(|q| q.event))
    }

    /// Events queued and not yet taken.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// No event is queued.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl tokio_stream::Stream for EventReceiver {
    type Item = TransportEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        self.get_mut().poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xsilo_wire::{ControlFrame, PartyName};

    fn frame() -> TransportEvent {
        TransportEvent::Control {
            from: PartyName::new("bob").unwrap(),
            frame: ControlFrame::Goodbye,
        }
    }

    #[tokio::test]
    async fn control_frames_wait_for_credit_until_the_runtime_takes_events() {
        let (tx, mut rx) = channel();
        let credits = control_credits();
        for _ in 0..CONTROL_CREDITS {
            assert!(tx.send_control(&credits, frame()).await);
        }
        // No credit left: the next frame waits (its stream is not read).
        let blocked = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            tx.send_control(&credits, frame()),
        )
        .await;
        assert!(blocked.is_err(), "a frame over the credit was queued");
        assert_eq!(rx.len(), CONTROL_CREDITS);
        // Taking one event frees one credit.
        assert!(rx.recv().await.is_some());
        assert!(tx.send_control(&credits, frame()).await);
        assert_eq!(rx.len(), CONTROL_CREDITS);
    }

    #[tokio::test]
    async fn progress_is_dropped_when_the_runtime_lags_and_other_events_are_not() {
        let (tx, mut rx) = channel();
        for _ in 0..PROGRESS_CREDITS + 10 {
            tx.send_progress(frame());
        }
        assert_eq!(rx.len(), PROGRESS_CREDITS);
        for _ in 0..1000 {
            assert!(tx.send(frame()));
        }
        assert_eq!(rx.len(), PROGRESS_CREDITS + 1000);
        while rx.try_recv().is_ok() {}
        tx.send_progress(frame());
        assert_eq!(rx.len(), 1, "credits came back when the events were taken");
    }

    #[tokio::test]
    async fn a_gone_receiver_is_reported() {
        let (tx, rx) = channel();
        drop(rx);
        assert!(!tx.send(frame()));
        assert!(!tx.send_control(&control_credits(), frame()).await);
    }
}
