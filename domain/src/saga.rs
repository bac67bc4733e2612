//! The order-credit saga: approves an order once its customer has reserved the credit for it,
//! without a transaction across the two aggregates.
//!
//! ```text
//! OrderCreated ──▶ ReserveCredit (customer) ─┬─ CreditReserved ──────▶ ApproveOrder (+ evidence)
//!     │                  │                   ├─ CreditLimitExceeded ─▶ RejectOrder
//!     │                  │                   └─ CreditCurrencyMismatch ▶ RejectOrder
//!     │                  └─ rejected: unknown customer ──────────────▶ RejectOrder
//!     └─ deadline: still pending after `decision_timeout` ────────────▶ RejectOrder
//! OrderCancelled / OrderRejected of an order holding credit ──────────▶ ReleaseCredit
//! CreditReserved of an order already rejected or cancelled ───────────▶ ReleaseCredit
//! ```
//!
//! One process instance per order (the order id). Order events name it by their stream; the
//! customer's credit events carry it as `order_id`. Each instance remembers the customer, the
//! total, whether the customer holds credit for the order and the order's last known status,
//! so that a late `CreditReserved` (the deadline or a cancellation got there first) is released
//! rather than approved.
//!
//! The reaction logic is a pure function, [`OrderCreditSaga::step`], from decoded events to
//! typed [`SagaStep`]s; [`ProcessManager::react`] only decodes and encodes around it.
//!
//! # The saga's commands are its own
//! `ReserveCredit`, `ReleaseCredit`, `ApproveOrder` and `RejectOrder` are sent by the saga alone
//! ([`customer::PROCESS_ONLY_COMMANDS`](crate::customer::PROCESS_ONLY_COMMANDS),
//! [`order::PROCESS_ONLY_COMMANDS`](crate::order::PROCESS_ONLY_COMMANDS); the HTTP API refuses
//! them from clients). The aggregates check what their own streams show (see their module
//! docs); the saga covers the rest by acting only on events of the log: it approves an order
//! only on its customer's `CreditReserved` for it, passing that event's customer, amount and
//! version as the approval's evidence ([`CreditReservation`]), which the order checks against
//! its own customer and total; it releases credit only once it has seen the reservation and
//! then the order's cancellation or rejection. An approval the order refuses (its evidence does
//! not match) leaves the order pending: the deadline rejects it, and the credit is released.
//!
//! # Why the deadline is scheduled first
//! The runtime sends a reaction's actions in order and stops at the first that fails
//! technically (the event is retried, then parked). The deadline is stored locally and cannot
//! be refused, so it goes first: even if `ReserveCredit` can never be sent, the order is
//! rejected when its time is up instead of staying pending forever.
//!
//! # The deadline is cancelled once the order is decided
//! [`ProcessManager::cancels_deadlines`] says so as soon as the order is no longer pending, so
//! an order decided in time never sees its `RejectOrder`. One that was due before the
//! cancellation was stored may still fire; the order refuses it (`NotPending`) and nothing
//! changes.

use std::time::Duration;

use annals::codec::CodecError;
use annals::{Action, Aggregate, HandlerError, ProcessManager, RecordedEvent, Timestamp, Version};
use serde::{Deserialize, Serialize};

use crate::customer::{Customer, CustomerCommand, CustomerEvent};
use crate::order::{CreditReservation, Order, OrderCommand, OrderEvent, OrderStatus};

/// The name the saga is registered under (its checkpoint, state and command ids use it).
pub const ORDER_CREDIT_SAGA: &str = "order-credit";

/// The rejection reason when the customer does not exist.
pub const REASON_UNKNOWN_CUSTOMER: &str = "unknown customer";
/// The rejection reason when the customer's available credit does not cover the order.
pub const REASON_CREDIT_LIMIT_EXCEEDED: &str = "credit limit exceeded";
/// The rejection reason when the order is in another currency than the customer's credit.
pub const REASON_CURRENCY_MISMATCH: &str = "currency mismatch";
/// The rejection reason when no decision was reached within the decision timeout.
pub const REASON_TIMED_OUT: &str = "credit check timed out";

/// Default time an order may stay pending. The saga normally decides in milliseconds; 30 s
/// leaves room for a restart or a backlog before an order is given up on.
pub const DECISION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// The order-credit saga. Register it with
/// [`Runtime::process_manager`](annals::Runtime::process_manager) under [`ORDER_CREDIT_SAGA`]
/// (or use [`register`](crate::register)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCreditSaga {
    /// How long after its creation a pending order is rejected ([`REASON_TIMED_OUT`]).
    pub decision_timeout: Duration,
}

impl Default for OrderCreditSaga {
    fn default() -> Self {
        OrderCreditSaga {
            decision_timeout: DECISION_TIMEOUT_DEFAULT,
        }
    }
}

/// The state of one saga instance (one order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreditState {
    /// The order's customer; `None` until the saga has seen `OrderCreated`.
    pub customer_id: Option<String>,
    /// The order's total, in minor units.
    pub total: u64,
    /// Whether the customer holds credit for this order (between `CreditReserved` and
    /// `CreditReleased`).
    pub credit_reserved: bool,
    /// The order's status as of the last order event seen.
    pub status: Option<OrderStatus>,
    /// Whether the credit check has been answered: the customer reserved the credit, refused it
    /// (limit, currency), or the order was rejected because the customer does not exist.
    /// Instances stored before this field was added read `false`, so they are never taken for
    /// complete too early.
    #[serde(default)]
    pub reservation_settled: bool,
}

impl OrderCreditState {
    /// Whether the saga has nothing left to do for this order: it never started (a late event
    /// of an order it does not know), the order was shipped (its credit is spent), or the order
    /// was rejected or cancelled with its credit check answered and no credit held. An approved
    /// order is not done: it may still be cancelled, and its credit released.
    pub fn is_complete(&self) -> bool {
        match self.status {
            _ if self.customer_id.is_none() => true,
            Some(OrderStatus::Shipped) => true,
            Some(OrderStatus::Rejected | OrderStatus::Cancelled) => {
                self.reservation_settled && !self.credit_reserved
            }
            Some(OrderStatus::Pending | OrderStatus::Approved) | None => false,
        }
    }
}

/// An event the saga reacts to, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaEvent {
    /// An event of the order itself.
    Order(OrderEvent),
    /// A credit event of a customer about the order.
    Customer {
        /// The customer whose stream recorded it.
        customer_id: String,
        /// Its version in the customer's stream (an approval names the reservation by it).
        version: Version,
        /// The event.
        event: CustomerEvent,
    },
}

/// A command the saga sends for an order, as a typed value (see [`SagaStep::into_action`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaStep {
    /// `ReserveCredit` on the customer; if the customer rejects it (it does not exist),
    /// `RejectOrder` with [`REASON_UNKNOWN_CUSTOMER`] instead.
    ReserveCredit {
        /// The customer.
        customer_id: String,
        /// The order's total.
        amount: u64,
        /// The order's currency.
        currency: String,
    },
    /// `ApproveOrder` on the evidence of the customer's reservation.
    ApproveOrder {
        /// The reservation, as the `CreditReserved` event recorded it.
        reservation: CreditReservation,
    },
    /// `RejectOrder`, now.
    RejectOrder {
        /// Why.
        reason: &'static str,
    },
    /// `RejectOrder` once `at` has passed (refused by the order if it was decided meanwhile).
    RejectOrderAt {
        /// When.
        at: Timestamp,
        /// Why.
        reason: &'static str,
    },
    /// `ReleaseCredit` on the customer.
    ReleaseCredit {
        /// The customer.
        customer_id: String,
    },
}

impl SagaStep {
    /// The runtime action that carries out this step for order `order_id`.
    pub fn into_action(self, order_id: &str) -> Result<Action, CodecError> {
        let reject = |reason: &str| OrderCommand::RejectOrder {
            reason: reason.to_string(),
        };
        match self {
            SagaStep::ReserveCredit {
                customer_id,
                amount,
                currency,
            } => {
                let reserve = CustomerCommand::ReserveCredit {
                    order_id: order_id.to_string(),
                    amount,
                    currency: Some(currency),
                };
                let fallback =
                    Action::command::<Order>(order_id, &reject(REASON_UNKNOWN_CUSTOMER))?;
                Ok(Action::command::<Customer>(customer_id, &reserve)?.or_else(fallback))
            }
            SagaStep::ApproveOrder { reservation } => Action::command::<Order>(
                order_id,
                &OrderCommand::ApproveOrder {
                    reservation: Some(reservation),
                },
            ),
            SagaStep::RejectOrder { reason } => Action::command::<Order>(order_id, &reject(reason)),
            SagaStep::RejectOrderAt { at, reason } => {
                Action::schedule::<Order>(at, order_id, &reject(reason))
            }
            SagaStep::ReleaseCredit { customer_id } => Action::command::<Customer>(
                customer_id,
                &CustomerCommand::ReleaseCredit {
                    order_id: order_id.to_string(),
                },
            ),
        }
    }
}

impl OrderCreditSaga {
    /// The saga's reaction, as a pure function: updates `state` for `event` (recorded at
    /// `recorded_at`) and returns the commands to send, in order.
    pub fn step(
        &self,
        state: &mut OrderCreditState,
        event: &SagaEvent,
        recorded_at: Timestamp,
    ) -> Vec<SagaStep> {
        match event {
            SagaEvent::Order(event) => self.on_order(state, event, recorded_at),
            SagaEvent::Customer {
                customer_id,
                version,
                event,
            } => {
                // Not a reservation this saga asked for: made by hand for an order it does not
                // know (yet), or on another customer. Approving or releasing on its account
                // would act on the wrong order or the wrong customer.
                if state.customer_id.as_deref() != Some(customer_id.as_str()) {
                    return Vec::new();
                }
                on_credit(state, customer_id, *version, event)
            }
        }
    }

    fn on_order(
        &self,
        state: &mut OrderCreditState,
        event: &OrderEvent,
        recorded_at: Timestamp,
    ) -> Vec<SagaStep> {
        if let OrderEvent::OrderCreated {
            customer_id,
            total,
            currency,
        } = event
        {
            // An order is created once; anything else would be a second start of the saga.
            if state.customer_id.is_some() {
                return Vec::new();
            }
            state.customer_id = Some(customer_id.clone());
            state.total = *total;
            state.status = Some(OrderStatus::Pending);
            // The deadline derives from the event, not the clock: `react` may run again for
            // the same event after a crash and must decide the same.
            let timeout = u64::try_from(self.decision_timeout.as_micros()).unwrap_or(u64::MAX);
            return vec![
                SagaStep::RejectOrderAt {
                    at: Timestamp(recorded_at.as_micros().saturating_add(timeout)),
                    reason: REASON_TIMED_OUT,
                },
                SagaStep::ReserveCredit {
                    customer_id: customer_id.clone(),
                    amount: *total,
                    currency: currency.clone(),
                },
            ];
        }
        let status = event.status_after();
        state.status = Some(status);
        if matches!(event, OrderEvent::OrderRejected { reason } if reason == REASON_UNKNOWN_CUSTOMER)
        {
            // The reservation was refused for want of a customer: no credit event will come.
            state.reservation_settled = true;
        }
        match (status, &state.customer_id) {
            (OrderStatus::Rejected | OrderStatus::Cancelled, Some(customer_id))
                if state.credit_reserved =>
            {
                vec![SagaStep::ReleaseCredit {
                    customer_id: customer_id.clone(),
                }]
            }
            _ => Vec::new(),
        }
    }
}

/// Reacts to a credit event of the order's own customer, at `version` of its stream.
fn on_credit(
    state: &mut OrderCreditState,
    customer_id: &str,
    version: Version,
    event: &CustomerEvent,
) -> Vec<SagaStep> {
    match event {
        CustomerEvent::CustomerCreated { .. } => Vec::new(),
        CustomerEvent::CreditReserved { amount, .. } => {
            state.credit_reserved = true;
            state.reservation_settled = true;
            match state.status {
                // The evidence is the event's, not the saga's memory of the order: the order
                // checks it against its own customer and total.
                Some(OrderStatus::Pending) => vec![SagaStep::ApproveOrder {
                    reservation: CreditReservation {
                        customer_id: customer_id.to_string(),
                        amount: *amount,
                        customer_version: version.0,
                    },
                }],
                // Rejected by the deadline or cancelled while the credit was being reserved.
                Some(OrderStatus::Rejected | OrderStatus::Cancelled) => {
                    vec![SagaStep::ReleaseCredit {
                        customer_id: customer_id.to_string(),
                    }]
                }
                Some(OrderStatus::Approved | OrderStatus::Shipped) | None => Vec::new(),
            }
        }
        CustomerEvent::CreditLimitExceeded { .. }
        | CustomerEvent::CreditCurrencyMismatch { .. } => {
            // The customer refused the reservation: the check is answered either way.
            state.reservation_settled = true;
            let reason = match event {
                CustomerEvent::CreditLimitExceeded { .. } => REASON_CREDIT_LIMIT_EXCEEDED,
                _ => REASON_CURRENCY_MISMATCH,
            };
            match state.status {
                Some(OrderStatus::Pending) => vec![SagaStep::RejectOrder { reason }],
                _ => Vec::new(),
            }
        }
        CustomerEvent::CreditReleased { .. } => {
            state.credit_reserved = false;
            Vec::new()
        }
    }
}

/// The order id and the events the saga reacts to (decoded and brought to the current schema),
/// or `None` for an event the saga ignores.
///
/// A stored event can upcast into several events; a customer's are kept only if they are
/// about the same order as the first one that names an order (an upcaster that split one
/// event across orders would need one instance per order, which the runtime cannot express).
fn decode(event: &RecordedEvent) -> Result<Option<(String, Vec<SagaEvent>)>, CodecError> {
    match event.stream.aggregate_type() {
        Order::TYPE => {
            let events = event
                .upcast::<Order>()?
                .into_iter()
                .map(|e| SagaEvent::Order(e.payload))
                .collect();
            Ok(Some((event.stream.aggregate_id().to_string(), events)))
        }
        Customer::TYPE => {
            let events: Vec<CustomerEvent> = event
                .upcast::<Customer>()?
                .into_iter()
                .map(|e| e.payload)
                .collect();
            let Some(order_id) = events.iter().find_map(|e| e.order_id()).map(str::to_string)
            else {
                return Ok(None);
            };
            let customer_id = event.stream.aggregate_id();
            let events = events
                .into_iter()
                .filter(|e| e.order_id() == Some(order_id.as_str()))
                .map(|credit| SagaEvent::Customer {
                    customer_id: customer_id.to_string(),
                    version: event.version,
                    event: credit,
                })
                .collect();
            Ok(Some((order_id, events)))
        }
        _ => Ok(None),
    }
}

impl ProcessManager for OrderCreditSaga {
    type State = OrderCreditState;

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        match decode(event) {
            Ok(decoded) => decoded.map(|(order_id, _)| order_id),
            // Undecodable: hand it to `react` under the stream's id, so that the decoding
            // error is reported (retried, then parked) instead of the event being skipped.
            Err(_) => Some(event.stream.aggregate_id().to_string()),
        }
    }

    fn react(
        &self,
        state: &mut OrderCreditState,
        event: &RecordedEvent,
    ) -> Result<Vec<Action>, HandlerError> {
        let Some((order_id, decoded)) = decode(event)? else {
            return Ok(Vec::new());
        };
        let mut actions = Vec::new();
        for decoded in &decoded {
            for step in self.step(state, decoded, event.meta.recorded_at) {
                actions.push(step.into_action(&order_id)?);
            }
        }
        Ok(actions)
    }

    /// The decision deadline is needed only while the order is pending: once it is approved,
    /// rejected or cancelled, the deadline is cancelled instead of firing a `RejectOrder` that
    /// the order would refuse.
    fn cancels_deadlines(&self, state: &OrderCreditState) -> bool {
        state
            .status
            .is_some_and(|status| status != OrderStatus::Pending)
    }

    /// See [`OrderCreditState::is_complete`]: a shipped order, or a rejected or cancelled one
    /// whose credit is settled, leaves no instance behind.
    fn is_complete(&self, state: &OrderCreditState) -> bool {
        state.is_complete()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use annals::envelope::EncodedPayload;
    use annals::{CommitMeta, DomainEvent, Envelope, Position, StreamId, Version};

    use super::*;

    const T0: Timestamp = Timestamp(1_700_000_000_000_000);

    fn saga() -> OrderCreditSaga {
        OrderCreditSaga {
            decision_timeout: Duration::from_secs(5),
        }
    }

    fn created(total: u64) -> SagaEvent {
        SagaEvent::Order(OrderEvent::OrderCreated {
            customer_id: "c-1".into(),
            total,
            currency: "EUR".into(),
        })
    }

    /// The customer's stream version of the credit events of these tests.
    const CUSTOMER_VERSION: Version = Version(4);

    fn credit(customer_id: &str, event: CustomerEvent) -> SagaEvent {
        SagaEvent::Customer {
            customer_id: customer_id.into(),
            version: CUSTOMER_VERSION,
            event,
        }
    }

    /// The approval the saga sends on [`reserved`].
    fn approve() -> SagaStep {
        SagaStep::ApproveOrder {
            reservation: CreditReservation {
                customer_id: "c-1".into(),
                amount: 500,
                customer_version: CUSTOMER_VERSION.0,
            },
        }
    }

    fn reserved() -> SagaEvent {
        credit(
            "c-1",
            CustomerEvent::CreditReserved {
                order_id: "o-1".into(),
                amount: 500,
            },
        )
    }

    fn exceeded() -> SagaEvent {
        credit(
            "c-1",
            CustomerEvent::CreditLimitExceeded {
                order_id: "o-1".into(),
                amount: 500,
                available: 10,
            },
        )
    }

    fn released() -> SagaEvent {
        credit(
            "c-1",
            CustomerEvent::CreditReleased {
                order_id: "o-1".into(),
                amount: 500,
            },
        )
    }

    fn order(event: OrderEvent) -> SagaEvent {
        SagaEvent::Order(event)
    }

    fn rejected() -> SagaEvent {
        order(OrderEvent::OrderRejected {
            reason: REASON_TIMED_OUT.into(),
        })
    }

    fn release() -> SagaStep {
        SagaStep::ReleaseCredit {
            customer_id: "c-1".into(),
        }
    }

    /// Runs `events` through the saga from a fresh instance; returns the steps of the last
    /// event and the state after all of them.
    fn run(events: &[SagaEvent]) -> (Vec<SagaStep>, OrderCreditState) {
        let saga = saga();
        let mut state = OrderCreditState::default();
        let mut steps = Vec::new();
        for event in events {
            steps = saga.step(&mut state, event, T0);
        }
        (steps, state)
    }

    #[test]
    fn an_instance_is_complete_only_when_nothing_left_could_make_it_act() {
        let shipped = order(OrderEvent::OrderShipped);
        let cancelled = order(OrderEvent::OrderCancelled);
        let approved = order(OrderEvent::OrderApproved);
        let unknown = order(OrderEvent::OrderRejected {
            reason: REASON_UNKNOWN_CUSTOMER.into(),
        });
        let cases: Vec<(Vec<SagaEvent>, bool)> = vec![
            (vec![], true),
            (vec![created(500)], false),
            (vec![created(500), reserved()], false),
            (vec![created(500), reserved(), approved.clone()], false),
            (
                vec![created(500), reserved(), approved.clone(), shipped],
                true,
            ),
            // Cancelled after approval: complete once the credit is released.
            (
                vec![created(500), reserved(), approved, cancelled.clone()],
                false,
            ),
            (
                vec![created(500), reserved(), cancelled.clone(), released()],
                true,
            ),
            (vec![created(500), exceeded()], false),
            (vec![created(500), exceeded(), rejected()], true),
            // Rejected by the deadline while the reservation is on its way: a late
            // CreditReserved must still find the instance, to release the credit.
            (vec![created(500), rejected()], false),
            (vec![created(500), rejected(), reserved()], false),
            (vec![created(500), rejected(), reserved(), released()], true),
            (vec![created(500), unknown], true),
            (vec![created(500), cancelled], false),
        ];
        for (events, complete) in cases {
            let (_, state) = run(&events);
            assert_eq!(state.is_complete(), complete, "after {events:?}: {state:?}");
        }
    }

    #[test]
    fn order_created_reserves_credit_and_schedules_the_deadline_first() {
        let (steps, state) = run(&[created(500)]);
        assert_eq!(
            steps,
            vec![
                SagaStep::RejectOrderAt {
                    at: Timestamp(T0.0 + 5_000_000),
                    reason: REASON_TIMED_OUT,
                },
                SagaStep::ReserveCredit {
                    customer_id: "c-1".into(),
                    amount: 500,
                    currency: "EUR".into(),
                },
            ]
        );
        assert_eq!(
            state,
            OrderCreditState {
                customer_id: Some("c-1".into()),
                total: 500,
                credit_reserved: false,
                status: Some(OrderStatus::Pending),
                reservation_settled: false,
            }
        );
    }

    #[test]
    fn credit_reserved_approves_a_pending_order_on_the_evidence_of_the_event() {
        let (steps, state) = run(&[created(500), reserved()]);
        assert_eq!(steps, vec![approve()]);
        assert!(state.credit_reserved);
    }

    /// The evidence is what the customer recorded, not what the saga remembers of the order:
    /// a reservation of another amount goes to the order as such, and the order refuses it.
    #[test]
    fn the_evidence_carries_the_amount_the_customer_reserved() {
        let odd = credit(
            "c-1",
            CustomerEvent::CreditReserved {
                order_id: "o-1".into(),
                amount: 499,
            },
        );
        let (steps, _) = run(&[created(500), odd]);
        assert_eq!(
            steps,
            vec![SagaStep::ApproveOrder {
                reservation: CreditReservation {
                    customer_id: "c-1".into(),
                    amount: 499,
                    customer_version: CUSTOMER_VERSION.0,
                },
            }]
        );
    }

    #[test]
    fn credit_limit_exceeded_rejects_a_pending_order() {
        let (steps, state) = run(&[created(500), exceeded()]);
        assert_eq!(
            steps,
            vec![SagaStep::RejectOrder {
                reason: REASON_CREDIT_LIMIT_EXCEEDED
            }]
        );
        assert!(!state.credit_reserved);
    }

    #[test]
    fn the_deadline_is_cancelled_once_the_order_is_no_longer_pending() {
        let saga = saga();
        let (_, pending) = run(&[created(500)]);
        assert!(
            !saga.cancels_deadlines(&pending),
            "still waiting for a decision"
        );
        assert!(!saga.cancels_deadlines(&OrderCreditState::default()));
        for decided in [
            order(OrderEvent::OrderApproved),
            rejected(),
            order(OrderEvent::OrderCancelled),
        ] {
            let (_, state) = run(&[created(500), decided.clone()]);
            assert!(saga.cancels_deadlines(&state), "{decided:?}");
        }
    }

    #[test]
    fn an_order_in_another_currency_than_the_credit_is_rejected_for_it() {
        let usd = order(OrderEvent::OrderCreated {
            customer_id: "c-1".into(),
            total: 500,
            currency: "USD".into(),
        });
        let (steps, _) = run(std::slice::from_ref(&usd));
        assert!(
            steps.iter().any(|s| matches!(
                s,
                SagaStep::ReserveCredit { currency, .. } if currency == "USD"
            )),
            "the reservation names the order's currency: {steps:?}"
        );
        let mismatch = credit(
            "c-1",
            CustomerEvent::CreditCurrencyMismatch {
                order_id: "o-1".into(),
                amount: 500,
                currency: "USD".into(),
                credit_currency: "EUR".into(),
            },
        );
        let (steps, state) = run(&[usd.clone(), mismatch.clone()]);
        assert_eq!(
            steps,
            vec![SagaStep::RejectOrder {
                reason: REASON_CURRENCY_MISMATCH
            }]
        );
        assert!(!state.credit_reserved);
        // Once the order is decided, a late mismatch changes nothing.
        let (steps, _) = run(&[usd, rejected(), mismatch]);
        assert!(steps.is_empty(), "{steps:?}");
    }

    #[test]
    fn credit_reserved_after_the_order_was_rejected_or_cancelled_is_released() {
        for late in [rejected(), order(OrderEvent::OrderCancelled)] {
            let (steps, state) = run(&[created(500), late, reserved()]);
            assert_eq!(steps, vec![release()]);
            assert!(state.credit_reserved, "until CreditReleased is seen");
        }
    }

    #[test]
    fn credit_limit_exceeded_after_a_cancellation_does_nothing() {
        let (steps, _) = run(&[created(500), order(OrderEvent::OrderCancelled), exceeded()]);
        assert_eq!(steps, vec![]);
    }

    #[test]
    fn cancelling_or_rejecting_an_order_that_holds_credit_releases_it() {
        let approved = order(OrderEvent::OrderApproved);
        let cases = [
            vec![
                created(500),
                reserved(),
                approved.clone(),
                order(OrderEvent::OrderCancelled),
            ],
            // Cancelled (or rejected by the deadline) between the reservation and approval.
            vec![created(500), reserved(), order(OrderEvent::OrderCancelled)],
            vec![created(500), reserved(), rejected()],
        ];
        for events in cases {
            let (steps, _) = run(&events);
            assert_eq!(steps, vec![release()], "{events:?}");
        }
    }

    #[test]
    fn cancelling_or_rejecting_an_order_without_credit_releases_nothing() {
        for events in [
            vec![created(500), order(OrderEvent::OrderCancelled)],
            vec![created(500), rejected()],
            vec![created(500), exceeded(), rejected()],
            vec![
                created(500),
                reserved(),
                released(),
                order(OrderEvent::OrderCancelled),
            ],
        ] {
            let (steps, _) = run(&events);
            assert_eq!(steps, vec![], "{events:?}");
        }
    }

    #[test]
    fn approval_and_shipping_only_track_the_status() {
        let (steps, state) = run(&[
            created(500),
            reserved(),
            order(OrderEvent::OrderApproved),
            order(OrderEvent::OrderShipped),
        ]);
        assert_eq!(steps, vec![]);
        assert_eq!(state.status, Some(OrderStatus::Shipped));
        assert!(state.credit_reserved, "a shipped order keeps its credit");
        // A late CreditReserved for an order already approved changes nothing.
        let (steps, _) = run(&[created(500), order(OrderEvent::OrderApproved), reserved()]);
        assert_eq!(steps, vec![]);
    }

    #[test]
    fn credit_events_of_another_customer_or_an_unknown_order_are_ignored() {
        let elsewhere = credit(
            "c-2",
            CustomerEvent::CreditReserved {
                order_id: "o-1".into(),
                amount: 500,
            },
        );
        let (steps, state) = run(&[created(500), elsewhere]);
        assert_eq!(steps, vec![]);
        assert!(!state.credit_reserved);
        let (steps, state) = run(&[reserved()]);
        assert_eq!(steps, vec![]);
        assert_eq!(state, OrderCreditState::default());
    }

    #[test]
    fn a_second_order_created_does_not_start_again() {
        let (steps, state) = run(&[created(500), reserved(), created(900)]);
        assert_eq!(steps, vec![]);
        assert_eq!(state.total, 500);
    }

    #[test]
    fn the_deadline_saturates_instead_of_overflowing() {
        let saga = OrderCreditSaga {
            decision_timeout: Duration::MAX,
        };
        let steps = saga.step(&mut OrderCreditState::default(), &created(1), T0);
        assert_eq!(
            steps[0],
            SagaStep::RejectOrderAt {
                at: Timestamp(u64::MAX),
                reason: REASON_TIMED_OUT
            }
        );
    }

    // ---- `instance` and `react` on recorded events ----

    fn recorded<E: DomainEvent>(aggregate_type: &str, id: &str, event: &E) -> RecordedEvent {
        Envelope {
            event_id: uuid::Uuid::from_u128(7),
            stream: StreamId::new(aggregate_type, id).expect("a valid stream id"),
            version: CUSTOMER_VERSION,
            position: Position(1),
            event_type: Arc::from(event.event_type()),
            schema_version: event.schema_version(),
            meta: Arc::new(CommitMeta {
                recorded_at: T0,
                ..CommitMeta::default()
            }),
            payload: EncodedPayload(
                annals::codec::encode_plain("test event", event).expect("encodes"),
            ),
        }
    }

    #[test]
    fn instance_is_the_order_id_for_order_and_credit_events() {
        let saga = saga();
        let order_created = recorded(
            Order::TYPE,
            "o-1",
            &OrderEvent::OrderCreated {
                customer_id: "c-1".into(),
                total: 5,
                currency: "EUR".into(),
            },
        );
        assert_eq!(saga.instance(&order_created).as_deref(), Some("o-1"));
        assert_eq!(
            saga.instance(&recorded(Order::TYPE, "o-2", &OrderEvent::OrderShipped))
                .as_deref(),
            Some("o-2")
        );
        for event in [
            CustomerEvent::CreditReserved {
                order_id: "o-3".into(),
                amount: 1,
            },
            CustomerEvent::CreditLimitExceeded {
                order_id: "o-3".into(),
                amount: 1,
                available: 0,
            },
            CustomerEvent::CreditReleased {
                order_id: "o-3".into(),
                amount: 1,
            },
        ] {
            let event = recorded(Customer::TYPE, "c-1", &event);
            assert_eq!(saga.instance(&event).as_deref(), Some("o-3"));
        }
        let customer_created = CustomerEvent::CustomerCreated {
            name: "Ada".into(),
            credit_limit: 1,
            currency: "EUR".into(),
        };
        assert_eq!(
            saga.instance(&recorded(Customer::TYPE, "c-1", &customer_created)),
            None
        );
        let other = crate::bank::AccountEvent::Deposited { amount: 1 };
        assert_eq!(saga.instance(&recorded("Account", "a-1", &other)), None);
    }

    #[test]
    fn undecodable_events_are_reported_not_skipped() {
        let saga = saga();
        let mut event = recorded(Order::TYPE, "o-1", &OrderEvent::OrderShipped);
        event.payload = EncodedPayload(vec![0xff, 0x00]);
        assert_eq!(saga.instance(&event).as_deref(), Some("o-1"));
        let mut state = OrderCreditState::default();
        assert!(saga.react(&mut state, &event).is_err());
    }

    #[test]
    fn react_turns_order_created_into_a_deadline_and_a_reservation_with_a_fallback() {
        let event = recorded(
            Order::TYPE,
            "o-1",
            &OrderEvent::OrderCreated {
                customer_id: "c-1".into(),
                total: 500,
                currency: "EUR".into(),
            },
        );
        expect_order_created_reaction(&event);
    }

    /// An `OrderCreated` stored before orders had a currency (schema version 1) is upcast
    /// before the saga sees it, so the saga reacts to it as to a current one.
    #[test]
    fn react_to_an_order_created_of_schema_version_1_is_the_same() {
        #[derive(Serialize)]
        #[serde(tag = "type")]
        enum OrderEventV1 {
            OrderCreated { customer_id: String, total: u64 },
        }
        let old = OrderEventV1::OrderCreated {
            customer_id: "c-1".into(),
            total: 500,
        };
        let mut event = recorded(Order::TYPE, "o-1", &OrderEvent::OrderShipped);
        event.event_type = Arc::from("OrderCreated");
        event.schema_version = 1;
        event.payload = EncodedPayload(annals::codec::encode_plain("v1", &old).expect("encodes"));
        expect_order_created_reaction(&event);
    }

    /// Checks the reaction to `event`, an `OrderCreated` of order o-1 for customer c-1 with a
    /// total of 500.
    fn expect_order_created_reaction(event: &RecordedEvent) {
        let saga = saga();
        let mut state = OrderCreditState::default();
        let actions = saga.react(&mut state, event).expect("reacts");
        let reject = |reason: &str| OrderCommand::RejectOrder {
            reason: reason.into(),
        };
        let expected = vec![
            Action::schedule::<Order>(
                Timestamp(T0.0 + 5_000_000),
                "o-1",
                &reject(REASON_TIMED_OUT),
            )
            .expect("encodes"),
            Action::command::<Customer>(
                "c-1",
                &CustomerCommand::ReserveCredit {
                    order_id: "o-1".into(),
                    amount: 500,
                    currency: Some("EUR".into()),
                },
            )
            .expect("encodes")
            .or_else(
                Action::command::<Order>("o-1", &reject(REASON_UNKNOWN_CUSTOMER)).expect("encodes"),
            ),
        ];
        assert_eq!(actions, expected);
        assert_eq!(state.customer_id.as_deref(), Some("c-1"));
    }

    #[test]
    fn react_approves_on_credit_reserved_and_releases_on_cancel() {
        let saga = saga();
        let mut state = OrderCreditState {
            customer_id: Some("c-1".into()),
            total: 500,
            credit_reserved: false,
            status: Some(OrderStatus::Pending),
            reservation_settled: false,
        };
        let reserved = recorded(
            Customer::TYPE,
            "c-1",
            &CustomerEvent::CreditReserved {
                order_id: "o-1".into(),
                amount: 500,
            },
        );
        let actions = saga.react(&mut state, &reserved).expect("reacts");
        let approve = OrderCommand::ApproveOrder {
            reservation: Some(CreditReservation {
                customer_id: "c-1".into(),
                amount: 500,
                customer_version: CUSTOMER_VERSION.0,
            }),
        };
        assert_eq!(
            actions,
            vec![Action::command::<Order>("o-1", &approve).expect("encodes")]
        );
        let cancelled = recorded(Order::TYPE, "o-1", &OrderEvent::OrderCancelled);
        let actions = saga.react(&mut state, &cancelled).expect("reacts");
        assert_eq!(
            actions,
            vec![Action::command::<Customer>(
                "c-1",
                &CustomerCommand::ReleaseCredit {
                    order_id: "o-1".into()
                }
            )
            .expect("encodes")]
        );
    }
}
