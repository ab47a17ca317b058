//! The lifecycle ring: how lifecycle events reach [`Events`](crate::Events) without ever
//! waiting behind undelivered messages.
//!
//! Messages go through a bounded channel, and a full channel holds the driver back (it stops
//! decoding). Lifecycle events must not: an application that never reads its events (a
//! publisher) would otherwise stall the driver, and an application far behind on messages
//! would learn of a lost link only after every older message. So the driver writes lifecycle
//! events into this ring and never waits on it: when the ring is full the oldest event is
//! dropped and counted, and the application reads [`ClientEvent::Lagged`] with the count
//! before the events that are left. [`Client::state`](crate::Client::state) always has the
//! current state.
//!
//! Order: each event remembers how many messages had entered the application's channel when
//! it happened, and is handed out once those are read. So the application sees events and
//! messages in the order they happened, except that an event never waits for messages the
//! driver still holds back (more than the channel's capacity behind): those come after it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use steadfast_proto::Lifecycle;

use crate::client::ClientEvent;

#[derive(Debug)]
struct Inner {
    /// Each event with the count of messages sent to the channel before it.
    events: VecDeque<(u64, SystemTime, Lifecycle)>,
    cap: usize,
    missed: u64,
    waker: Option<Waker>,
    closed: bool,
}

/// The ring shared by the driver (writer) and [`Events`](crate::Events) (reader).
#[derive(Debug)]
pub(crate) struct Ring {
    inner: Mutex<Inner>,
}

impl Ring {
    pub(crate) fn new(cap: usize) -> Arc<Ring> {
        Arc::new(Ring {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                cap: cap.max(1),
                missed: 0,
                waker: None,
                closed: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The lock is never held across anything that can panic; a poisoned one still holds
        // consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an event that happened after `after` messages entered the channel, dropping (and
    /// counting) the oldest when the ring is full. Never waits.
    pub(crate) fn push(&self, after: u64, at: SystemTime, event: Lifecycle) {
        let waker = {
            let mut inner = self.lock();
            if inner.events.len() >= inner.cap {
                inner.events.pop_front();
                inner.missed += 1;
            }
            inner.events.push_back((after, at, event));
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// No more events will come (the driver has ended).
    pub(crate) fn close(&self) {
        let waker = {
            let mut inner = self.lock();
            inner.closed = true;
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The next event for an application that has read `received` messages: `Ready(Some)`
    /// for one, `Ready(None)` once closed and empty, `Pending` (with `cx`'s waker registered)
    /// when there is none or the next one waits for messages to be read first.
    pub(crate) fn poll_next(
        &self,
        cx: &mut Context<'_>,
        received: u64,
    ) -> Poll<Option<ClientEvent>> {
        let mut inner = self.lock();
        if inner.missed > 0 {
            let missed = std::mem::take(&mut inner.missed);
            return Poll::Ready(Some(ClientEvent::Lagged { missed }));
        }
        if inner
            .events
            .front()
            .is_some_and(|(after, ..)| *after > received)
        {
            // Messages from before it are still in the channel: those first. (Registering
            // is not needed: it is handed out when the application reads them.)
            return Poll::Pending;
        }
        if let Some((_, at, event)) = inner.events.pop_front() {
            if inner.events.capacity() > 4 * inner.events.len().max(8) {
                // A burst grew it: give the memory back once it is drained.
                inner.events.shrink_to_fit();
            }
            return Poll::Ready(Some(ClientEvent::Lifecycle { at, event }));
        }
        if inner.closed {
            return Poll::Ready(None);
        }
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The driver's handle: closes the ring when the driver ends, however it ends.
pub(crate) struct RingWriter(pub(crate) Arc<Ring>);

impl Drop for RingWriter {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(ring: &Ring) -> Poll<Option<ClientEvent>> {
        poll_after(ring, u64::MAX)
    }

    fn poll_after(ring: &Ring, received: u64) -> Poll<Option<ClientEvent>> {
        let mut cx = Context::from_waker(Waker::noop());
        ring.poll_next(&mut cx, received)
    }

    fn dormant(attempts: u32) -> Lifecycle {
        Lifecycle::Dormant { attempts }
    }

    #[test]
    fn a_full_ring_drops_the_oldest_and_says_how_many() {
        let ring = Ring::new(3);
        let at = SystemTime::UNIX_EPOCH;
        for n in 1..=5 {
            ring.push(0, at, dormant(n));
        }
        assert_eq!(
            poll(&ring),
            Poll::Ready(Some(ClientEvent::Lagged { missed: 2 }))
        );
        for n in 3..=5 {
            assert_eq!(
                poll(&ring),
                Poll::Ready(Some(ClientEvent::Lifecycle {
                    at,
                    event: dormant(n)
                }))
            );
        }
        assert_eq!(poll(&ring), Poll::Pending);
        ring.close();
        assert_eq!(poll(&ring), Poll::Ready(None));
    }

    #[test]
    fn events_pushed_before_close_are_still_read() {
        let ring = Ring::new(8);
        let writer = RingWriter(ring.clone());
        ring.push(0, SystemTime::UNIX_EPOCH, dormant(1));
        drop(writer);
        assert!(matches!(
            poll(&ring),
            Poll::Ready(Some(ClientEvent::Lifecycle { .. }))
        ));
        assert_eq!(poll(&ring), Poll::Ready(None));
    }

    #[test]
    fn an_event_waits_for_the_messages_sent_before_it() {
        let ring = Ring::new(8);
        ring.push(2, SystemTime::UNIX_EPOCH, dormant(1));
        assert_eq!(poll_after(&ring, 0), Poll::Pending);
        assert_eq!(poll_after(&ring, 1), Poll::Pending);
        assert!(matches!(
            poll_after(&ring, 2),
            Poll::Ready(Some(ClientEvent::Lifecycle { .. }))
        ));
    }
}
