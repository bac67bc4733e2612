//! Observing the order-credit saga's decisions for the `orders` workload.
//!
//! One watcher task tails the global log (the same paged read on both targets) and posts every
//! `OrderApproved` or `OrderRejected` of this run's orders on a [`Board`], stamped with the
//! instant it was seen. The session that created the order waits on the board; the saga
//! completion latency is the time from the `CreateOrder` acknowledgement to that instant, so it
//! includes at most one poll interval of the watcher ([`POLL_IDLE_INPROC`],
//! [`POLL_IDLE_HTTP`]) on top of the saga's own work.
//!
//! Tailing the log, rather than polling each order, costs one read per page of events however
//! many orders are waiting, and watches exactly what a subscriber of the log would see.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use parking_lot::Mutex;

use crate::target::Client;
use crate::workload::Kind;

/// Pause between reads of the log when the in-process log had nothing new.
pub(crate) const POLL_IDLE_INPROC: Duration = Duration::from_millis(1);
/// Pause between reads of the log when the server's log had nothing new (each read is a
/// request the server also serves).
pub(crate) const POLL_IDLE_HTTP: Duration = Duration::from_millis(2);
/// Pause after a failed read of the log.
const POLL_AFTER_ERROR: Duration = Duration::from_millis(50);
/// Events per read of the log.
const PAGE_EVENTS: usize = 1000;

/// The saga's decision on an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Approved (else rejected).
    pub(crate) approved: bool,
    /// When the watcher saw the decision in the log.
    pub(crate) observed_at: Instant,
}

/// What the board holds for one order.
#[derive(Debug)]
enum Slot {
    /// A session waits for the decision.
    Waiting(oneshot::Sender<Decision>),
    /// The decision arrived before anyone asked for it.
    Decided(Decision),
}

/// Decisions by order id, shared by the watcher and the client threads. An entry lives from
/// the first of (decision seen, session waits) to the second, or until the session gives up.
#[derive(Debug, Default)]
pub(crate) struct Board {
    slots: Mutex<HashMap<String, Slot>>,
}

/// A decision, or where it will arrive.
#[derive(Debug)]
pub(crate) enum Awaited {
    /// Already decided.
    Ready(Decision),
    /// Will be sent here.
    Pending(oneshot::Receiver<Decision>),
}

impl Board {
    /// Posts the decision on `order_id`. A second decision of one order (the log never has
    /// one; a redelivered page could) is ignored.
    pub(crate) fn decide(&self, order_id: &str, decision: Decision) {
        let mut slots = self.slots.lock();
        match slots.remove(order_id) {
            Some(Slot::Waiting(tx)) => {
                // The session may have given up meanwhile; nothing to do then.
                let _ = tx.send(decision);
            }
            Some(decided @ Slot::Decided(_)) => {
                slots.insert(order_id.to_string(), decided);
            }
            None => {
                slots.insert(order_id.to_string(), Slot::Decided(decision));
            }
        }
    }

    /// The decision on `order_id`, now or later.
    pub(crate) fn wait(&self, order_id: &str) -> Awaited {
        let mut slots = self.slots.lock();
        if let Some(Slot::Decided(decision)) = slots.get(order_id) {
            let decision = *decision;
            slots.remove(order_id);
            return Awaited::Ready(decision);
        }
        let (tx, rx) = oneshot::channel();
        slots.insert(order_id.to_string(), Slot::Waiting(tx));
        Awaited::Pending(rx)
    }

    /// Drops what the board holds for `order_id` (its session gave up).
    pub(crate) fn forget(&self, order_id: &str) {
        self.slots.lock().remove(order_id);
    }
}

/// Tails the log after position `after` and posts the decisions on orders whose id starts
/// with `order_prefix`, until `stop` says so.
pub(crate) async fn watch(
    client: &Client,
    board: &Board,
    order_prefix: &str,
    mut after: u64,
    stop: &std::cell::Cell<bool>,
) {
    let idle = match client {
        Client::Inproc(_) => POLL_IDLE_INPROC,
        Client::Http(_) => POLL_IDLE_HTTP,
    };
    while !stop.get() {
        let page = match client.log_after(after, PAGE_EVENTS, false).await {
            Ok(page) => page,
            Err(error) => {
                tracing::debug!(%error, "the saga watcher could not read the log");
                tokio::time::sleep(POLL_AFTER_ERROR).await;
                continue;
            }
        };
        let Some(last) = page.last() else {
            tokio::time::sleep(idle).await;
            continue;
        };
        after = after.max(last.position);
        let observed_at = Instant::now();
        for event in &page {
            if event.kind != Some(Kind::Order) || !event.id.starts_with(order_prefix) {
                continue;
            }
            let approved = match event.event_type.as_str() {
                "OrderApproved" => true,
                "OrderRejected" => false,
                _ => continue,
            };
            board.decide(
                &event.id,
                Decision {
                    approved,
                    observed_at,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_reaches_a_session_whichever_comes_first() {
        let board = Board::default();
        let decision = Decision {
            approved: true,
            observed_at: Instant::now(),
        };
        board.decide("o-1", decision);
        assert!(matches!(board.wait("o-1"), Awaited::Ready(d) if d == decision));
        let Awaited::Pending(mut rx) = board.wait("o-2") else {
            panic!("o-2 is not decided yet");
        };
        board.decide("o-2", decision);
        assert_eq!(rx.try_recv().ok().flatten(), Some(decision));
        board.forget("o-3");
        assert!(board.slots.lock().is_empty());
    }
}
