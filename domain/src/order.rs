//! The Order aggregate: created for a customer with a total, decided by the order-credit saga
//! (approved or rejected), then shipped or cancelled.
//!
//! ```text
//!              ApproveOrder            ShipOrder
//!   Pending ─────────────────▶ Approved ─────────▶ Shipped
//!     │  │                        │
//!     │  │ RejectOrder            │ CancelOrder
//!     │  └──────────▶ Rejected    ▼
//!     └────────────────────▶ Cancelled
//!          CancelOrder
//! ```
//!
//! Money is an integer number of minor units of the order's currency (an ISO 4217 code such as
//! `"EUR"`).
//!
//! # Who may send what, and what the order can check
//! `CreateOrder`, `ShipOrder` and `CancelOrder` are a client's commands. `ApproveOrder` and
//! `RejectOrder` are the order-credit saga's ([`PROCESS_ONLY_COMMANDS`]): the HTTP API refuses
//! them from clients, and the saga sends them only in reaction to events in the log. The order
//! sees only its own stream, so it refuses what that stream shows to be wrong:
//!
//! - `ApproveOrder` carries the evidence it is based on, a [`CreditReservation`] (the customer
//!   and the amount of the `CreditReserved` event the saga reacted to, and that event's version
//!   in the customer's stream). It is refused unless the order is Pending
//!   ([`OrderRejection::NotPending`]), the evidence is there
//!   ([`OrderRejection::NoCreditReservation`]), names the order's own customer
//!   ([`OrderRejection::ReservationOfAnotherCustomer`]) and reserves exactly its total
//!   ([`OrderRejection::ReservationAmountMismatch`]). So no sender, the saga included, approves
//!   an order on a reservation made for another customer or another amount, or on none. The
//!   order **cannot** tell whether the reservation really happened: it cannot read the
//!   customer's stream. That is why only the saga, which builds the evidence from the event
//!   itself, may send the command; the envelope of `OrderApproved` names that event as its
//!   causation id.
//! - `RejectOrder` is refused unless the order is Pending. Its reason is free text the order
//!   cannot verify (credit limit exceeded, unknown customer, timed out). A rejection never
//!   moves credit in the customer's favour: the saga releases whatever the order held.
//!
//! # Approvals stored before they carried evidence
//! A process manager stores the commands it is about to send (its outbox) and its deadlines as
//! encoded commands, and a store written by an older build may still hold an `ApproveOrder`
//! without a reservation. It decodes (the field is optional for that reason) and is refused
//! with [`OrderRejection::NoCreditReservation`], like any approval without evidence; the order
//! stays Pending until the saga's deadline rejects it, and the saga then releases the credit it
//! saw reserved. The order is rejected instead of approved, but no credit is lost or given.
//! `tests/corpus/commands/` keeps those old encodings.
//!
//! # Schema history
//! - [`OrderEvent::OrderCreated`] version 1 had no currency: every order was in euros.
//!   Version 2 records the currency; [`Order::upcast`](Aggregate::upcast) reads a version 1
//!   event as version 2 in [`DEFAULT_CURRENCY`]. Stored events are never rewritten, so the
//!   upcaster stays as long as version 1 events may exist; `tests/corpus/` keeps one.
//! - The state gained [`Order::currency`] at the same time: snapshots are at
//!   [`ORDER_SNAPSHOT_SCHEMA_VERSION`] 2, and older ones are ignored (the order replays).
//!
//! Subscribers read events with [`RecordedEvent::upcast`](annals::RecordedEvent::upcast), so
//! they only ever see the current shape.

use annals::types::StreamId;
use annals::{Aggregate, AggregateOptions, DomainEvent, Upcast, UpcastError};
use serde::{Deserialize, Serialize};

use crate::customer::Customer;

/// The schema version of [`OrderEvent::OrderCreated`] as written now (version 1 had no
/// currency; see the [module docs](self)).
pub const ORDER_CREATED_SCHEMA_VERSION: u16 = 2;

/// The schema version of the serialized [`Order`] state (its snapshots). Version 1 had no
/// currency.
pub const ORDER_SNAPSHOT_SCHEMA_VERSION: u32 = 2;

pub use crate::money::DEFAULT_CURRENCY;
use crate::money::{is_currency_code, upcast_to_default_currency};

/// Where an order is in its life. Serialized as the variant name (`"Pending"`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum OrderStatus {
    /// Created; waiting for the credit check.
    Pending,
    /// The customer's credit covers it; it can be shipped or cancelled.
    Approved,
    /// Refused (credit limit exceeded, unknown customer, or no decision in time). Final.
    Rejected,
    /// Delivered. Final.
    Shipped,
    /// Cancelled before shipping. Final.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in the order of [`OrderStatus`]'s declaration.
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Approved,
        OrderStatus::Rejected,
        OrderStatus::Shipped,
        OrderStatus::Cancelled,
    ];

    /// Whether no command can change the order any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Rejected | OrderStatus::Shipped | OrderStatus::Cancelled
        )
    }
}

/// An order's state. JSON:
/// `{"status":"Pending","customer_id":"c-1","total":5000,"currency":"EUR",...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Order {
    /// `None` until the order is created.
    pub status: Option<OrderStatus>,
    /// The customer who placed the order.
    pub customer_id: String,
    /// In minor units of `currency`, more than zero.
    pub total: u64,
    /// The ISO 4217 code of the total's currency (empty until the order is created).
    pub currency: String,
    /// Why the order was rejected, once it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
}

/// The commands only the order-credit saga may send (their JSON `type`): the HTTP API refuses
/// them from clients. See the [module docs](self) for what the order checks itself.
pub const PROCESS_ONLY_COMMANDS: &[&str] = &["ApproveOrder", "RejectOrder"];

/// The evidence an [`OrderCommand::ApproveOrder`] carries: the credit reservation the approval
/// is based on, as the saga read it from the customer's `CreditReserved` event. JSON:
/// `{"customer_id":"c-1","amount":5000,"customer_version":2}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditReservation {
    /// The customer who reserved the credit: must be the order's.
    pub customer_id: String,
    /// The amount reserved, in minor units: must be the order's total.
    pub amount: u64,
    /// The version of the `CreditReserved` event in the customer's stream, naming which
    /// reservation it is for whoever traces an approval. The order cannot check it.
    pub customer_version: u64,
}

/// Commands of an order. JSON: `{"type":"CreateOrder","customer_id":"c-1","total":5000}`,
/// optionally with `"currency":"USD"`.
///
/// A field the command does not have is an error (`deny_unknown_fields`; the variants without
/// fields refuse any too): a typo such as `"curency"` must not be silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum OrderCommand {
    /// Creates the order, pending its credit check.
    CreateOrder {
        /// A valid customer id (1 to 256 bytes); whether the customer exists is the saga's
        /// question, not this aggregate's.
        customer_id: String,
        /// In minor units of the currency, more than zero.
        total: u64,
        /// An ISO 4217 code: three upper-case ASCII letters. Absent (`None`):
        /// [`DEFAULT_CURRENCY`], so that commands written before currencies existed keep
        /// their meaning.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        currency: Option<String>,
    },
    /// Approves a pending order on the evidence of its credit reservation. Sent by the saga
    /// only ([`PROCESS_ONLY_COMMANDS`]).
    ApproveOrder {
        /// The reservation the approval is based on. Absent only in approvals stored by builds
        /// before approvals carried one, which are refused
        /// ([`OrderRejection::NoCreditReservation`]; see the [module docs](self)).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reservation: Option<CreditReservation>,
    },
    /// Rejects a pending order. Sent by the saga only ([`PROCESS_ONLY_COMMANDS`]).
    RejectOrder {
        /// Why, for people reading the order.
        reason: String,
    },
    /// Ships an approved order.
    #[serde(deserialize_with = "crate::strict::no_fields")]
    ShipOrder,
    /// Cancels a pending or approved order.
    #[serde(deserialize_with = "crate::strict::no_fields")]
    CancelOrder,
}

impl OrderCommand {
    /// The command's type name: its JSON `type` tag (`"ApproveOrder"`).
    pub fn command_type(&self) -> &'static str {
        match self {
            OrderCommand::CreateOrder { .. } => "CreateOrder",
            OrderCommand::ApproveOrder { .. } => "ApproveOrder",
            OrderCommand::RejectOrder { .. } => "RejectOrder",
            OrderCommand::ShipOrder => "ShipOrder",
            OrderCommand::CancelOrder => "CancelOrder",
        }
    }

    /// Whether only the saga may send this command ([`PROCESS_ONLY_COMMANDS`]).
    pub fn is_process_only(&self) -> bool {
        PROCESS_ONLY_COMMANDS.contains(&self.command_type())
    }
}

/// Events of an order.
///
/// Unlike commands, events accept fields they do not know: an event stored by an older build
/// may carry a field that was removed since, and a stored event must always be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum OrderEvent {
    /// The order was created, pending its credit check. Schema version
    /// [`ORDER_CREATED_SCHEMA_VERSION`]; version 1 had no `currency`.
    OrderCreated {
        /// The customer who placed it.
        customer_id: String,
        /// In minor units of `currency`.
        total: u64,
        /// The ISO 4217 code of the total's currency.
        currency: String,
    },
    /// The order was approved.
    OrderApproved,
    /// The order was rejected.
    OrderRejected {
        /// Why.
        reason: String,
    },
    /// The order was shipped.
    OrderShipped,
    /// The order was cancelled.
    OrderCancelled,
}

impl OrderEvent {
    /// The status an order has right after this event.
    pub fn status_after(&self) -> OrderStatus {
        match self {
            OrderEvent::OrderCreated { .. } => OrderStatus::Pending,
            OrderEvent::OrderApproved => OrderStatus::Approved,
            OrderEvent::OrderRejected { .. } => OrderStatus::Rejected,
            OrderEvent::OrderShipped => OrderStatus::Shipped,
            OrderEvent::OrderCancelled => OrderStatus::Cancelled,
        }
    }
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderCreated { .. } => "OrderCreated",
            OrderEvent::OrderApproved => "OrderApproved",
            OrderEvent::OrderRejected { .. } => "OrderRejected",
            OrderEvent::OrderShipped => "OrderShipped",
            OrderEvent::OrderCancelled => "OrderCancelled",
        }
    }

    fn current_schema_version(event_type: &str) -> u16 {
        match event_type {
            "OrderCreated" => ORDER_CREATED_SCHEMA_VERSION,
            _ => 1,
        }
    }
}

/// Why an order refused a command.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, schemars::JsonSchema,
)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum OrderRejection {
    /// `CreateOrder` for an order that already exists.
    #[error("cannot create the order: it already exists")]
    AlreadyExists,
    /// `CreateOrder` with a total of zero.
    #[error("cannot create the order: the total must be more than zero")]
    ZeroTotal,
    /// `CreateOrder` with a customer id that cannot name an aggregate (empty or too long), so
    /// that no credit could ever be reserved for it.
    #[error("cannot create the order: invalid customer id: {reason}")]
    InvalidCustomerId {
        /// What is wrong with it.
        reason: String,
    },
    /// `CreateOrder` with a currency that is not an ISO 4217 code (three upper-case ASCII
    /// letters).
    #[error("cannot create the order: {currency:?} is not an ISO 4217 currency code")]
    InvalidCurrency {
        /// The currency given.
        currency: String,
    },
    /// A command for an order that was never created.
    #[error("cannot change the order: no such order")]
    UnknownOrder,
    /// `ApproveOrder` or `RejectOrder` when the order is no longer pending.
    #[error("cannot decide the order: it is {status:?}, not Pending")]
    NotPending {
        /// The order's status.
        status: OrderStatus,
    },
    /// `ApproveOrder` without the evidence of a credit reservation (as stored by builds before
    /// approvals carried one).
    #[error(
        "cannot approve the order: the command names no credit reservation, and an order is \
         approved only on one"
    )]
    NoCreditReservation,
    /// `ApproveOrder` on a reservation by a customer other than the order's.
    #[error(
        "cannot approve the order: the credit was reserved by customer {reserved_by}, but the \
         order is customer {customer_id}'s"
    )]
    ReservationOfAnotherCustomer {
        /// The order's customer.
        customer_id: String,
        /// The customer the reservation names.
        reserved_by: String,
    },
    /// `ApproveOrder` on a reservation of an amount other than the order's total.
    #[error(
        "cannot approve the order: the credit reserved ({reserved}) is not the order's total \
         ({total})"
    )]
    ReservationAmountMismatch {
        /// The order's total, in minor units.
        total: u64,
        /// The amount the reservation names, in minor units.
        reserved: u64,
    },
    /// `ShipOrder` when the order is not approved.
    #[error("cannot ship the order: it is {status:?}, not Approved")]
    NotApproved {
        /// The order's status.
        status: OrderStatus,
    },
    /// `CancelOrder` when the order is rejected, shipped or cancelled already.
    #[error("cannot cancel the order: it is {status:?}, only Pending or Approved orders can be")]
    NotCancellable {
        /// The order's status.
        status: OrderStatus,
    },
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Rejection = OrderRejection;

    fn decide(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderRejection> {
        let Some(status) = self.status else {
            return match command {
                OrderCommand::CreateOrder {
                    customer_id,
                    total,
                    currency,
                } => create(customer_id, *total, currency.as_deref()),
                _ => Err(OrderRejection::UnknownOrder),
            };
        };
        let event = match (command, status) {
            (OrderCommand::CreateOrder { .. }, _) => return Err(OrderRejection::AlreadyExists),
            (OrderCommand::ApproveOrder { reservation }, OrderStatus::Pending) => {
                self.approve(reservation.as_ref())?
            }
            (OrderCommand::RejectOrder { reason }, OrderStatus::Pending) => {
                OrderEvent::OrderRejected {
                    reason: reason.clone(),
                }
            }
            (OrderCommand::ApproveOrder { .. } | OrderCommand::RejectOrder { .. }, status) => {
                return Err(OrderRejection::NotPending { status })
            }
            (OrderCommand::ShipOrder, OrderStatus::Approved) => OrderEvent::OrderShipped,
            (OrderCommand::ShipOrder, status) => {
                return Err(OrderRejection::NotApproved { status })
            }
            (OrderCommand::CancelOrder, OrderStatus::Pending | OrderStatus::Approved) => {
                OrderEvent::OrderCancelled
            }
            (OrderCommand::CancelOrder, status) => {
                return Err(OrderRejection::NotCancellable { status })
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::OrderCreated {
                customer_id,
                total,
                currency,
            } => {
                self.customer_id.clone_from(customer_id);
                self.total = *total;
                self.currency.clone_from(currency);
            }
            OrderEvent::OrderRejected { reason } => {
                self.rejection_reason = Some(reason.clone());
            }
            OrderEvent::OrderApproved | OrderEvent::OrderShipped | OrderEvent::OrderCancelled => {}
        }
        self.status = Some(event.status_after());
    }

    fn options() -> AggregateOptions {
        AggregateOptions::default().with_snapshot_schema_version(ORDER_SNAPSHOT_SCHEMA_VERSION)
    }

    fn upcast(old: Upcast) -> Result<Vec<Upcast>, UpcastError> {
        match (old.event_type.as_str(), old.schema_version) {
            // Version 1 predates currencies: every order was in euros.
            ("OrderCreated", 1) => upcast_to_default_currency(old),
            _ => Err(UpcastError::NoUpcaster {
                event_type: old.event_type,
                schema_version: old.schema_version,
            }),
        }
    }
}

impl Order {
    /// Decides `ApproveOrder` for a pending order: only on the evidence of a reservation of
    /// exactly its total by its own customer.
    fn approve(
        &self,
        reservation: Option<&CreditReservation>,
    ) -> Result<OrderEvent, OrderRejection> {
        let Some(reservation) = reservation else {
            return Err(OrderRejection::NoCreditReservation);
        };
        if reservation.customer_id != self.customer_id {
            return Err(OrderRejection::ReservationOfAnotherCustomer {
                customer_id: self.customer_id.clone(),
                reserved_by: reservation.customer_id.clone(),
            });
        }
        if reservation.amount != self.total {
            return Err(OrderRejection::ReservationAmountMismatch {
                total: self.total,
                reserved: reservation.amount,
            });
        }
        Ok(OrderEvent::OrderApproved)
    }
}

/// Decides `CreateOrder` for an order that does not exist yet.
fn create(
    customer_id: &str,
    total: u64,
    currency: Option<&str>,
) -> Result<Vec<OrderEvent>, OrderRejection> {
    if total == 0 {
        return Err(OrderRejection::ZeroTotal);
    }
    // The saga sends `ReserveCredit` to this id: one that cannot name a stream would fail that
    // command technically (and forever), instead of rejecting the order.
    StreamId::new(Customer::TYPE, customer_id)
        .map_err(|e| OrderRejection::InvalidCustomerId { reason: e.reason })?;
    let currency = currency.unwrap_or(DEFAULT_CURRENCY);
    if !is_currency_code(currency) {
        return Err(OrderRejection::InvalidCurrency {
            currency: currency.to_string(),
        });
    }
    Ok(vec![OrderEvent::OrderCreated {
        customer_id: customer_id.to_string(),
        total,
        currency: currency.to_string(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_shape, text, to_value};
    use annals::testkit::AggregateTest;

    fn created() -> OrderEvent {
        OrderEvent::OrderCreated {
            customer_id: "c-1".into(),
            total: 5_000,
            currency: "EUR".into(),
        }
    }

    fn create(customer_id: &str, total: u64, currency: Option<&str>) -> OrderCommand {
        OrderCommand::CreateOrder {
            customer_id: customer_id.into(),
            total,
            currency: currency.map(str::to_string),
        }
    }

    /// The evidence of a reservation by `customer_id` of `amount`.
    fn reservation(customer_id: &str, amount: u64) -> CreditReservation {
        CreditReservation {
            customer_id: customer_id.into(),
            amount,
            customer_version: 2,
        }
    }

    /// `ApproveOrder` on the reservation of the order of [`created`]: c-1, 5,000.
    fn approve() -> OrderCommand {
        approve_on(Some(reservation("c-1", 5_000)))
    }

    fn approve_on(reservation: Option<CreditReservation>) -> OrderCommand {
        OrderCommand::ApproveOrder { reservation }
    }

    fn rejected(reason: &str) -> OrderEvent {
        OrderEvent::OrderRejected {
            reason: reason.into(),
        }
    }

    /// The events that bring an order to `status`.
    fn history(status: OrderStatus) -> Vec<OrderEvent> {
        match status {
            OrderStatus::Pending => vec![created()],
            OrderStatus::Approved => vec![created(), OrderEvent::OrderApproved],
            OrderStatus::Rejected => vec![created(), rejected("no")],
            OrderStatus::Shipped => vec![
                created(),
                OrderEvent::OrderApproved,
                OrderEvent::OrderShipped,
            ],
            OrderStatus::Cancelled => vec![created(), OrderEvent::OrderCancelled],
        }
    }

    fn pending() -> Order {
        Order {
            status: Some(OrderStatus::Pending),
            customer_id: "c-1".into(),
            total: 5_000,
            currency: "EUR".into(),
            rejection_reason: None,
        }
    }

    #[test]
    fn create_order_is_pending_in_euros_by_default() {
        AggregateTest::<Order>::given_no_previous_events()
            .when(create("c-1", 5_000, None))
            .then_expect_events(vec![created()])
            .then_expect_state_eq(pending())
            .then_expect_deterministic();
    }

    #[test]
    fn create_order_records_its_currency() {
        AggregateTest::<Order>::given_no_previous_events()
            .when(create("c-1", 5_000, Some("USD")))
            .then_expect_events(vec![OrderEvent::OrderCreated {
                customer_id: "c-1".into(),
                total: 5_000,
                currency: "USD".into(),
            }])
            .then_expect_state_eq(Order {
                currency: "USD".into(),
                ..pending()
            })
            .then_expect_deterministic();
    }

    #[test]
    fn create_order_with_an_invalid_currency_is_rejected() {
        for currency in ["", "EU", "EURO", "eur", "E1R", "ÉUR"] {
            AggregateTest::<Order>::given_no_previous_events()
                .when(create("c-1", 5_000, Some(currency)))
                .then_expect_rejection(OrderRejection::InvalidCurrency {
                    currency: currency.into(),
                });
        }
    }

    #[test]
    fn create_order_twice_is_rejected() {
        for status in OrderStatus::ALL {
            AggregateTest::<Order>::given(history(status))
                .when(create("c-2", 1, None))
                .then_expect_rejection(OrderRejection::AlreadyExists);
        }
    }

    #[test]
    fn create_order_with_a_zero_total_is_rejected() {
        AggregateTest::<Order>::given_no_previous_events()
            .when(create("c-1", 0, None))
            .then_expect_rejection(OrderRejection::ZeroTotal);
    }

    #[test]
    fn create_order_with_an_invalid_customer_id_is_rejected() {
        for customer_id in [String::new(), "c".repeat(257)] {
            let result = AggregateTest::<Order>::given_no_previous_events()
                .when(create(&customer_id, 1, None))
                .into_result();
            assert!(
                matches!(result, Err(OrderRejection::InvalidCustomerId { .. })),
                "{result:?}"
            );
        }
    }

    #[test]
    fn commands_for_an_unknown_order_are_rejected() {
        for command in [
            approve(),
            OrderCommand::RejectOrder { reason: "x".into() },
            OrderCommand::ShipOrder,
            OrderCommand::CancelOrder,
        ] {
            AggregateTest::<Order>::given_no_previous_events()
                .when(command)
                .then_expect_rejection(OrderRejection::UnknownOrder);
        }
    }

    #[test]
    fn a_pending_order_is_approved_on_a_reservation_of_its_total_by_its_customer() {
        AggregateTest::<Order>::given(history(OrderStatus::Pending))
            .when(approve())
            .then_expect_events(vec![OrderEvent::OrderApproved])
            .then_expect_state(|o| assert_eq!(o.status, Some(OrderStatus::Approved)))
            .then_expect_deterministic();
    }

    /// The black-box finding: an `ApproveOrder` without evidence (a client racing the saga, or
    /// an approval stored by an older build) approves nothing.
    #[test]
    fn an_approval_without_a_reservation_is_refused() {
        AggregateTest::<Order>::given(history(OrderStatus::Pending))
            .when(approve_on(None))
            .then_expect_rejection(OrderRejection::NoCreditReservation)
            .then_expect_deterministic();
    }

    #[test]
    fn an_approval_on_a_reservation_by_another_customer_is_refused() {
        AggregateTest::<Order>::given(history(OrderStatus::Pending))
            .when(approve_on(Some(reservation("c-2", 5_000))))
            .then_expect_rejection(OrderRejection::ReservationOfAnotherCustomer {
                customer_id: "c-1".into(),
                reserved_by: "c-2".into(),
            })
            .then_expect_deterministic();
    }

    #[test]
    fn an_approval_on_a_reservation_of_another_amount_is_refused() {
        for reserved in [0, 4_999, 5_001, u64::MAX] {
            AggregateTest::<Order>::given(history(OrderStatus::Pending))
                .when(approve_on(Some(reservation("c-1", reserved))))
                .then_expect_rejection(OrderRejection::ReservationAmountMismatch {
                    total: 5_000,
                    reserved,
                });
        }
    }

    /// Whatever the evidence, an order that is no longer pending says so first.
    #[test]
    fn an_approval_of_an_order_no_longer_pending_is_refused_whatever_its_evidence() {
        for command in [
            approve(),
            approve_on(None),
            approve_on(Some(reservation("c-9", 1))),
        ] {
            AggregateTest::<Order>::given(history(OrderStatus::Approved))
                .when(command)
                .then_expect_rejection(OrderRejection::NotPending {
                    status: OrderStatus::Approved,
                });
        }
    }

    #[test]
    fn a_pending_order_can_be_rejected_with_a_reason() {
        AggregateTest::<Order>::given(history(OrderStatus::Pending))
            .when(OrderCommand::RejectOrder {
                reason: "credit limit exceeded".into(),
            })
            .then_expect_events(vec![rejected("credit limit exceeded")])
            .then_expect_state_eq(Order {
                status: Some(OrderStatus::Rejected),
                rejection_reason: Some("credit limit exceeded".into()),
                ..pending()
            })
            .then_expect_deterministic();
    }

    #[test]
    fn only_pending_orders_are_approved_or_rejected() {
        for status in OrderStatus::ALL
            .into_iter()
            .filter(|s| *s != OrderStatus::Pending)
        {
            AggregateTest::<Order>::given(history(status))
                .when(approve())
                .then_expect_rejection(OrderRejection::NotPending { status });
            AggregateTest::<Order>::given(history(status))
                .when(OrderCommand::RejectOrder {
                    reason: "late".into(),
                })
                .then_expect_rejection(OrderRejection::NotPending { status });
        }
    }

    #[test]
    fn only_approved_orders_are_shipped() {
        AggregateTest::<Order>::given(history(OrderStatus::Approved))
            .when(OrderCommand::ShipOrder)
            .then_expect_events(vec![OrderEvent::OrderShipped])
            .then_expect_state(|o| assert_eq!(o.status, Some(OrderStatus::Shipped)));
        for status in OrderStatus::ALL
            .into_iter()
            .filter(|s| *s != OrderStatus::Approved)
        {
            AggregateTest::<Order>::given(history(status))
                .when(OrderCommand::ShipOrder)
                .then_expect_rejection(OrderRejection::NotApproved { status });
        }
    }

    #[test]
    fn pending_and_approved_orders_can_be_cancelled() {
        for status in [OrderStatus::Pending, OrderStatus::Approved] {
            AggregateTest::<Order>::given(history(status))
                .when(OrderCommand::CancelOrder)
                .then_expect_events(vec![OrderEvent::OrderCancelled])
                .then_expect_state(|o| assert_eq!(o.status, Some(OrderStatus::Cancelled)))
                .then_expect_deterministic();
        }
        for status in [
            OrderStatus::Rejected,
            OrderStatus::Shipped,
            OrderStatus::Cancelled,
        ] {
            AggregateTest::<Order>::given(history(status))
                .when(OrderCommand::CancelOrder)
                .then_expect_rejection(OrderRejection::NotCancellable { status });
        }
    }

    #[test]
    fn final_statuses_accept_no_transition() {
        for status in OrderStatus::ALL.into_iter().filter(|s| s.is_final()) {
            for command in [
                approve(),
                OrderCommand::RejectOrder { reason: "x".into() },
                OrderCommand::ShipOrder,
                OrderCommand::CancelOrder,
            ] {
                let result = AggregateTest::<Order>::given(history(status))
                    .when(command)
                    .into_result();
                assert!(result.is_err(), "{status:?}: {result:?}");
            }
        }
    }

    /// One command of every variant (the `match` stops compiling when a variant is added).
    fn every_command() -> Vec<OrderCommand> {
        let all = vec![
            create("c-1", 5_000, Some("USD")),
            create("c-1", 5_000, None),
            approve(),
            approve_on(None),
            OrderCommand::RejectOrder {
                reason: "credit limit exceeded".into(),
            },
            OrderCommand::ShipOrder,
            OrderCommand::CancelOrder,
        ];
        for command in &all {
            match command {
                OrderCommand::CreateOrder { .. }
                | OrderCommand::ApproveOrder { .. }
                | OrderCommand::RejectOrder { .. }
                | OrderCommand::ShipOrder
                | OrderCommand::CancelOrder => {}
            }
        }
        all
    }

    #[test]
    fn process_only_commands_name_real_command_variants() {
        let commands = every_command();
        for command in &commands {
            assert_eq!(
                crate::test_support::tag(&to_value(command)),
                command.command_type(),
                "the command type is the JSON tag"
            );
        }
        for name in PROCESS_ONLY_COMMANDS {
            assert!(
                commands.iter().any(|c| c.command_type() == *name),
                "{name} is no command of an order"
            );
        }
        let mut process_only: Vec<&str> = commands
            .iter()
            .filter(|c| c.is_process_only())
            .map(OrderCommand::command_type)
            .collect();
        process_only.dedup();
        assert_eq!(process_only, ["ApproveOrder", "RejectOrder"]);
    }

    /// The black-box finding: `"curency"` used to be dropped, creating an order in euros.
    #[test]
    fn commands_refuse_unknown_fields_and_accept_their_own() {
        use crate::test_support::{assert_json_decodes, assert_unknown_field_refused};
        assert_json_decodes(
            r#"{"type":"CreateOrder","customer_id":"c-1","total":5000,"currency":"USD"}"#,
            &create("c-1", 5_000, Some("USD")),
        );
        assert_json_decodes(
            r#"{"type":"CreateOrder","customer_id":"c-1","total":5000}"#,
            &create("c-1", 5_000, None),
        );
        assert_unknown_field_refused::<OrderCommand>(
            r#"{"type":"CreateOrder","customer_id":"c-1","total":5000,"curency":"USD"}"#,
            "curency",
        );
        assert_json_decodes(
            r#"{"type":"ApproveOrder","reservation":{"customer_id":"c-1","amount":5000,"customer_version":2}}"#,
            &approve(),
        );
        assert_json_decodes(r#"{"type":"ApproveOrder"}"#, &approve_on(None));
        assert_unknown_field_refused::<OrderCommand>(
            r#"{"type":"ApproveOrder","reservaton":{"customer_id":"c-1","amount":5000,"customer_version":2}}"#,
            "reservaton",
        );
        assert_unknown_field_refused::<OrderCommand>(
            r#"{"type":"ApproveOrder","reservation":{"customer_id":"c-1","amount":5000,"customer_version":2,"event":"x"}}"#,
            "event",
        );
        assert_json_decodes(
            r#"{"type":"RejectOrder","reason":"no"}"#,
            &OrderCommand::RejectOrder {
                reason: "no".into(),
            },
        );
        assert_unknown_field_refused::<OrderCommand>(
            r#"{"type":"RejectOrder","reason":"no","reasons":["no"]}"#,
            "reasons",
        );
        assert_json_decodes(r#"{"type":"ShipOrder"}"#, &OrderCommand::ShipOrder);
        assert_unknown_field_refused::<OrderCommand>(
            r#"{"type":"ShipOrder","carrier":"post"}"#,
            "carrier",
        );
        assert_json_decodes(r#"{"type":"CancelOrder"}"#, &OrderCommand::CancelOrder);
        assert_unknown_field_refused::<OrderCommand>(
            r#"{"type":"CancelOrder","reason":"changed my mind"}"#,
            "reason",
        );
    }

    #[test]
    fn commands_round_trip_through_the_outbox_encoding() {
        for command in every_command() {
            crate::test_support::assert_cbor_round_trip(&command);
        }
    }

    /// Events stay lenient: a field an older build wrote and this one dropped is ignored.
    #[test]
    fn events_ignore_fields_they_do_not_know() {
        let stored: OrderEvent =
            serde_json::from_str(r#"{"type":"OrderShipped","carrier":"post"}"#).expect("decodes");
        assert_eq!(stored, OrderEvent::OrderShipped);
        let stored: OrderEvent =
            serde_json::from_str(r#"{"type":"OrderRejected","reason":"no","code":7}"#)
                .expect("decodes");
        assert_eq!(stored, rejected("no"));
    }

    /// The payload of an `OrderCreated` as version 1 wrote it.
    fn created_v1(customer_id: &str, total: u64) -> ciborium::Value {
        ciborium::Value::Map(vec![
            (text("type"), text("OrderCreated")),
            (text("customer_id"), text(customer_id)),
            (text("total"), total.into()),
        ])
    }

    fn old(event_type: &str, schema_version: u16, payload: ciborium::Value) -> Upcast {
        Upcast {
            event_type: event_type.into(),
            schema_version,
            payload,
        }
    }

    #[test]
    fn only_order_created_changed_schema() {
        assert_eq!(OrderEvent::current_schema_version("OrderCreated"), 2);
        assert_eq!(created().schema_version(), ORDER_CREATED_SCHEMA_VERSION);
        for event in history(OrderStatus::Shipped)
            .into_iter()
            .skip(1)
            .chain([rejected("x"), OrderEvent::OrderCancelled])
        {
            assert_eq!(event.schema_version(), 1, "{event:?}");
        }
        assert_eq!(
            Order::options().snapshot_schema_version,
            ORDER_SNAPSHOT_SCHEMA_VERSION
        );
    }

    #[test]
    fn order_created_version_1_is_read_in_euros() {
        let upcast = Order::upcast(old("OrderCreated", 1, created_v1("c-1", 5_000)))
            .expect("version 1 has an upcaster");
        let [current] = upcast.as_slice() else {
            panic!("one event: {upcast:?}");
        };
        assert_eq!(
            (current.event_type.as_str(), current.schema_version),
            ("OrderCreated", 2)
        );
        let event: OrderEvent = current.payload.deserialized().expect("a current event");
        assert_eq!(event, created());
        // Applied like any other event.
        let order = AggregateTest::<Order>::given(vec![event]).state().clone();
        assert_eq!(order, pending());
    }

    #[test]
    fn an_order_created_version_1_that_is_no_map_is_invalid() {
        let error = Order::upcast(old("OrderCreated", 1, text("c-1"))).expect_err("invalid");
        assert!(
            matches!(
                &error,
                UpcastError::Invalid {
                    event_type,
                    schema_version: 1,
                    ..
                } if event_type == "OrderCreated"
            ),
            "{error:?}"
        );
    }

    #[test]
    fn versions_this_build_does_not_know_have_no_upcaster() {
        for (event_type, schema_version) in [("OrderCreated", 3), ("OrderCreated", 0), ("Gone", 1)]
        {
            let error = Order::upcast(old(event_type, schema_version, created_v1("c-1", 1)))
                .expect_err("no upcaster");
            assert_eq!(
                error,
                UpcastError::NoUpcaster {
                    event_type: event_type.into(),
                    schema_version,
                }
            );
        }
    }

    #[test]
    fn serialized_shape_uses_the_documented_names() {
        // Without a currency, the command has the shape it had before currencies existed.
        assert_shape(
            &create("c-1", 5_000, None),
            &[
                ("type", text("CreateOrder")),
                ("customer_id", text("c-1")),
                ("total", 5_000.into()),
            ],
        );
        assert_shape(
            &create("c-1", 5_000, Some("USD")),
            &[
                ("type", text("CreateOrder")),
                ("customer_id", text("c-1")),
                ("total", 5_000.into()),
                ("currency", text("USD")),
            ],
        );
        assert_shape(
            &created(),
            &[
                ("type", text("OrderCreated")),
                ("customer_id", text("c-1")),
                ("total", 5_000.into()),
                ("currency", text("EUR")),
            ],
        );
        assert_shape(
            &approve(),
            &[
                ("type", text("ApproveOrder")),
                (
                    "reservation",
                    ciborium::Value::Map(vec![
                        (text("customer_id"), text("c-1")),
                        (text("amount"), 5_000.into()),
                        (text("customer_version"), 2.into()),
                    ]),
                ),
            ],
        );
        // Without evidence, the shape approvals had before they carried one.
        assert_shape(&approve_on(None), &[("type", text("ApproveOrder"))]);
        assert_shape(
            &OrderCommand::RejectOrder {
                reason: "why".into(),
            },
            &[("type", text("RejectOrder")), ("reason", text("why"))],
        );
        assert_shape(&OrderCommand::ShipOrder, &[("type", text("ShipOrder"))]);
        assert_shape(&OrderCommand::CancelOrder, &[("type", text("CancelOrder"))]);
        assert_shape(
            &pending(),
            &[
                ("status", text("Pending")),
                ("customer_id", text("c-1")),
                ("total", 5_000.into()),
                ("currency", text("EUR")),
            ],
        );
        for status in OrderStatus::ALL {
            assert_eq!(to_value(&status), text(&format!("{status:?}")));
        }
        for event in history(OrderStatus::Shipped)
            .into_iter()
            .chain([rejected("x"), OrderEvent::OrderCancelled])
        {
            assert_eq!(
                crate::test_support::tag(&to_value(&event)),
                event.event_type()
            );
        }
        assert_shape(
            &OrderRejection::NotPending {
                status: OrderStatus::Shipped,
            },
            &[("type", text("NotPending")), ("status", text("Shipped"))],
        );
        assert_shape(
            &OrderRejection::InvalidCurrency {
                currency: "eur".into(),
            },
            &[("type", text("InvalidCurrency")), ("currency", text("eur"))],
        );
    }
}
