//! The Customer aggregate: a name, a credit limit, and the credit reserved for open orders.
//!
//! A customer reserves credit for an order when the limit allows it. When it does not, the
//! customer records [`CustomerEvent::CreditLimitExceeded`]: an *event*, not a rejection,
//! because the order-credit saga must see the refusal to reject the order (a rejection leaves
//! nothing in the log for a subscriber to react to). Credit is released when an order that
//! held it is cancelled or rejected; a shipped order keeps its reservation (the credit is
//! used, and nothing in this domain pays it back).
//!
//! Money is an integer number of minor units (`u64`), never a float, of a currency
//! ([`crate::money`]): a customer's credit limit is in the currency set when the customer is
//! created ([`DEFAULT_CURRENCY`] if none is given). A reservation for an order in another
//! currency is not made: the customer records [`CustomerEvent::CreditCurrencyMismatch`], and the
//! saga rejects the order ("currency mismatch") instead of reserving its total as if it were the
//! same money.
//!
//! # Schema history
//! - [`CustomerEvent::CustomerCreated`] version 1 had no currency: every credit limit was in
//!   euros. Version 2 records it; [`Customer::upcast`](Aggregate::upcast) reads a version 1
//!   event as version 2 in [`DEFAULT_CURRENCY`]; `tests/corpus/` keeps one of each.
//! - The state gained [`Customer::currency`] at the same time: snapshots are at
//!   [`CUSTOMER_SNAPSHOT_SCHEMA_VERSION`] 2, and older ones are ignored (the customer replays).
//! - `ReserveCredit` stored in a saga's outbox by an older build has no currency: it decodes
//!   as a reservation in [`DEFAULT_CURRENCY`], which is what it meant then.
//!
//! # Who may send what, and what the customer can check
//! `CreateCustomer` is a client's command. `ReserveCredit` and `ReleaseCredit` are the
//! order-credit saga's ([`PROCESS_ONLY_COMMANDS`]): the HTTP API refuses them from clients, and
//! the saga sends them only in reaction to events in the log. The customer itself sees only its
//! own stream, so it refuses what that stream shows to be wrong and no more:
//!
//! - `ReserveCredit` — refused for an unknown customer or an amount of zero; a second one for an
//!   order that holds a reservation records nothing when the amount is the same (a redelivery)
//!   and is refused ([`CustomerRejection::ReservedWithAnotherAmount`]) when it is not, since an
//!   order's total never changes. The customer **cannot** tell whether the order exists, is
//!   pending, is this customer's, or has that total (the order is another aggregate), nor
//!   whether an order whose reservation was released is asked for again (it forgets released
//!   orders, or its state would grow without bound). The saga asks once per order, with the
//!   total and customer of the order's own `OrderCreated`.
//! - `ReleaseCredit` — refused for an unknown customer, and for an order that holds no
//!   reservation ([`CustomerRejection::NoReservation`]): never reserved, or released already.
//!   The customer **cannot** tell whether the order was cancelled or rejected, or is still
//!   approved or shipped (whose credit must stay held): that is the order's state. The saga
//!   releases only after it has seen the order's `OrderCancelled` or `OrderRejected` in the log.
//!
//! What is left — a reservation for an order that does not exist, a release for an order that
//! is still approved — can only come from a sender that is neither a client nor the saga, which
//! is why the API restriction and the saga together cover it; the order's side refuses an
//! approval whose reservation does not match it (see [`crate::order`]).

use std::collections::BTreeMap;

use annals::{Aggregate, AggregateOptions, DomainEvent, Upcast, UpcastError};
use serde::{Deserialize, Serialize};

pub use crate::money::DEFAULT_CURRENCY;
use crate::money::{is_currency_code, upcast_to_default_currency};

/// The schema version of [`CustomerEvent::CustomerCreated`] as written now (version 1 had no
/// currency; see the [module docs](self)).
pub const CUSTOMER_CREATED_SCHEMA_VERSION: u16 = 2;

/// The schema version of the serialized [`Customer`] state (its snapshots). Version 1 had no
/// currency.
pub const CUSTOMER_SNAPSHOT_SCHEMA_VERSION: u32 = 2;

/// A customer's state.
///
/// Reservations are kept per order id in a `BTreeMap`, not a `HashMap`, so that the state (and
/// its snapshot) is the same whatever order the entries were inserted in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Customer {
    /// Whether `CreateCustomer` has been accepted. A customer that does not exist refuses
    /// every other command.
    pub created: bool,
    /// The customer's name (not empty once created).
    pub name: String,
    /// The most credit the customer may have reserved at once, in minor units of `currency`.
    pub credit_limit: u64,
    /// The ISO 4217 code of the credit limit's currency (empty until the customer is created).
    pub currency: String,
    /// Open reservations: order id → amount in minor units.
    pub reservations: BTreeMap<String, u64>,
}

impl Customer {
    /// The credit reserved by open reservations, in minor units.
    pub fn reserved(&self) -> u64 {
        self.reservations
            .values()
            .fold(0u64, |sum, amount| sum.saturating_add(*amount))
    }

    /// The credit limit minus the open reservations, in minor units.
    pub fn available_credit(&self) -> u64 {
        self.credit_limit.saturating_sub(self.reserved())
    }

    /// The event that decides a new reservation of `amount` for `order_id`: reserved if the
    /// available credit covers it, otherwise the refusal the saga must see.
    fn reserve(&self, order_id: &str, amount: u64, currency: &str) -> CustomerEvent {
        if currency != self.currency {
            return CustomerEvent::CreditCurrencyMismatch {
                order_id: order_id.to_string(),
                amount,
                currency: currency.to_string(),
                credit_currency: self.currency.clone(),
            };
        }
        let available = self.available_credit();
        if amount <= available {
            CustomerEvent::CreditReserved {
                order_id: order_id.to_string(),
                amount,
            }
        } else {
            CustomerEvent::CreditLimitExceeded {
                order_id: order_id.to_string(),
                amount,
                available,
            }
        }
    }
}

/// The commands only the order-credit saga may send (their JSON `type`): the HTTP API refuses
/// them from clients. See the [module docs](self) for what the customer checks itself.
pub const PROCESS_ONLY_COMMANDS: &[&str] = &["ReserveCredit", "ReleaseCredit"];

/// Commands of a customer. JSON: `{"type":"CreateCustomer","name":"Ada","credit_limit":150000}`,
/// optionally with `"currency":"USD"`; `{"type":"ReserveCredit","order_id":"o-1","amount":5000,
/// "currency":"EUR"}`.
///
/// A field the command does not have is an error (`deny_unknown_fields`): a typo must not be
/// silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum CustomerCommand {
    /// Creates the customer.
    CreateCustomer {
        /// Not empty (nor only whitespace).
        name: String,
        /// In minor units of `currency`; zero is allowed (a customer who buys nothing on
        /// credit).
        credit_limit: u64,
        /// The credit limit's currency, an ISO 4217 code: three upper-case ASCII letters.
        /// Absent (`None`): [`DEFAULT_CURRENCY`], so that commands written before currencies
        /// existed keep their meaning.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        currency: Option<String>,
    },
    /// Reserves credit for an order, or records that the limit does not allow it.
    ///
    /// Idempotent per order: while the order holds a reservation, asking again for the same
    /// amount records nothing (another amount is refused). An order whose reservation was
    /// refused or released is decided afresh (the saga asks once per order, and its command id
    /// makes a redelivery return the first outcome); remembering every order ever decided
    /// would grow the state without bound. Sent by the saga only ([`PROCESS_ONLY_COMMANDS`]).
    ReserveCredit {
        /// The order the credit is for; at most one open reservation per order.
        order_id: String,
        /// In minor units of `currency`, more than zero.
        amount: u64,
        /// The order's currency. A reservation in another currency than the customer's is not
        /// made ([`CustomerEvent::CreditCurrencyMismatch`]). Absent (`None`, as in outboxes
        /// written before currencies): [`DEFAULT_CURRENCY`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        currency: Option<String>,
    },
    /// Releases the credit reserved for an order; refused if the order holds none. Sent by the
    /// saga only ([`PROCESS_ONLY_COMMANDS`]), once the order is cancelled or rejected.
    ReleaseCredit {
        /// The order whose reservation is released.
        order_id: String,
    },
}

impl CustomerCommand {
    /// The command's type name: its JSON `type` tag (`"ReserveCredit"`).
    pub fn command_type(&self) -> &'static str {
        match self {
            CustomerCommand::CreateCustomer { .. } => "CreateCustomer",
            CustomerCommand::ReserveCredit { .. } => "ReserveCredit",
            CustomerCommand::ReleaseCredit { .. } => "ReleaseCredit",
        }
    }

    /// Whether only the saga may send this command ([`PROCESS_ONLY_COMMANDS`]).
    pub fn is_process_only(&self) -> bool {
        PROCESS_ONLY_COMMANDS.contains(&self.command_type())
    }
}

/// Events of a customer.
///
/// Unlike commands, events accept fields they do not know: an event stored by an older build
/// may carry a field that was removed since, and a stored event must always be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum CustomerEvent {
    /// The customer was created.
    CustomerCreated {
        /// The customer's name.
        name: String,
        /// In minor units of `currency`.
        credit_limit: u64,
        /// The ISO 4217 code of the credit limit's currency (since schema version 2).
        currency: String,
    },
    /// Credit was reserved for an order.
    CreditReserved {
        /// The order.
        order_id: String,
        /// In minor units.
        amount: u64,
    },
    /// The available credit did not cover an order: nothing was reserved.
    CreditLimitExceeded {
        /// The order.
        order_id: String,
        /// The amount asked for, in minor units.
        amount: u64,
        /// The credit that was available, in minor units.
        available: u64,
    },
    /// The order is in another currency than the customer's credit: nothing was reserved.
    CreditCurrencyMismatch {
        /// The order.
        order_id: String,
        /// The amount asked for, in minor units of `currency`.
        amount: u64,
        /// The order's currency.
        currency: String,
        /// The customer's currency.
        credit_currency: String,
    },
    /// The credit reserved for an order was released.
    CreditReleased {
        /// The order.
        order_id: String,
        /// The amount released, in minor units.
        amount: u64,
    },
}

impl CustomerEvent {
    /// The order this event is about (`None` for [`CustomerEvent::CustomerCreated`]).
    pub fn order_id(&self) -> Option<&str> {
        match self {
            CustomerEvent::CustomerCreated { .. } => None,
            CustomerEvent::CreditReserved { order_id, .. }
            | CustomerEvent::CreditLimitExceeded { order_id, .. }
            | CustomerEvent::CreditCurrencyMismatch { order_id, .. }
            | CustomerEvent::CreditReleased { order_id, .. } => Some(order_id),
        }
    }
}

impl DomainEvent for CustomerEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CustomerEvent::CustomerCreated { .. } => "CustomerCreated",
            CustomerEvent::CreditReserved { .. } => "CreditReserved",
            CustomerEvent::CreditLimitExceeded { .. } => "CreditLimitExceeded",
            CustomerEvent::CreditCurrencyMismatch { .. } => "CreditCurrencyMismatch",
            CustomerEvent::CreditReleased { .. } => "CreditReleased",
        }
    }

    fn current_schema_version(event_type: &str) -> u16 {
        match event_type {
            "CustomerCreated" => CUSTOMER_CREATED_SCHEMA_VERSION,
            _ => 1,
        }
    }
}

/// Why a customer refused a command.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, schemars::JsonSchema,
)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum CustomerRejection {
    /// `CreateCustomer` for a customer that already exists.
    #[error("cannot create the customer: it already exists")]
    AlreadyExists,
    /// `CreateCustomer` with an empty (or whitespace-only) name.
    #[error("cannot create the customer: the name is empty")]
    EmptyName,
    /// A currency that is not an ISO 4217 code (three upper-case ASCII letters).
    #[error("{currency:?} is not an ISO 4217 currency code")]
    InvalidCurrency {
        /// The currency given.
        currency: String,
    },
    /// A credit command for a customer that was never created.
    #[error("cannot reserve or release credit: no such customer")]
    UnknownCustomer,
    /// `ReserveCredit` for zero: an order always has a positive total.
    #[error("cannot reserve credit: the amount must be more than zero")]
    ZeroAmount,
    /// `ReserveCredit` for an order that already holds a reservation of another amount: an
    /// order's total never changes, so one of the two is not this order's.
    #[error(
        "cannot reserve {amount} for order {order_id}: it already holds a reservation of \
         {reserved}, and an order's total never changes"
    )]
    ReservedWithAnotherAmount {
        /// The order.
        order_id: String,
        /// The amount it holds, in minor units.
        reserved: u64,
        /// The amount asked for, in minor units.
        amount: u64,
    },
    /// `ReleaseCredit` for an order that holds no reservation: it never had one, or it was
    /// released already.
    #[error(
        "cannot release credit for order {order_id}: the customer holds no reservation for it \
         (never reserved, or released already)"
    )]
    NoReservation {
        /// The order.
        order_id: String,
    },
}

impl Aggregate for Customer {
    const TYPE: &'static str = "Customer";
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Rejection = CustomerRejection;

    fn options() -> AggregateOptions {
        AggregateOptions::default().with_snapshot_schema_version(CUSTOMER_SNAPSHOT_SCHEMA_VERSION)
    }

    fn upcast(old: Upcast) -> Result<Vec<Upcast>, UpcastError> {
        match (old.event_type.as_str(), old.schema_version) {
            // Version 1 predates currencies: every credit limit was in euros.
            ("CustomerCreated", 1) => upcast_to_default_currency(old),
            _ => Err(UpcastError::NoUpcaster {
                event_type: old.event_type,
                schema_version: old.schema_version,
            }),
        }
    }

    fn decide(&self, command: &CustomerCommand) -> Result<Vec<CustomerEvent>, CustomerRejection> {
        match command {
            CustomerCommand::CreateCustomer { .. } if self.created => {
                Err(CustomerRejection::AlreadyExists)
            }
            CustomerCommand::CreateCustomer { name, .. } if name.trim().is_empty() => {
                Err(CustomerRejection::EmptyName)
            }
            CustomerCommand::CreateCustomer {
                name,
                credit_limit,
                currency,
            } => {
                let currency = valid_currency(currency.as_deref())?;
                Ok(vec![CustomerEvent::CustomerCreated {
                    name: name.clone(),
                    credit_limit: *credit_limit,
                    currency: currency.to_string(),
                }])
            }
            _ if !self.created => Err(CustomerRejection::UnknownCustomer),
            CustomerCommand::ReserveCredit { amount: 0, .. } => Err(CustomerRejection::ZeroAmount),
            // Idempotent per order: the order already holds this credit, so asking again
            // changes nothing; another amount cannot be this order's (its total is fixed).
            CustomerCommand::ReserveCredit {
                order_id,
                amount,
                currency,
            } => {
                let currency = valid_currency(currency.as_deref())?;
                match self.reservations.get(order_id) {
                    Some(reserved) if reserved == amount => Ok(vec![]),
                    Some(&reserved) => Err(CustomerRejection::ReservedWithAnotherAmount {
                        order_id: order_id.clone(),
                        reserved,
                        amount: *amount,
                    }),
                    None => Ok(vec![self.reserve(order_id, *amount, currency)]),
                }
            }
            CustomerCommand::ReleaseCredit { order_id } => match self.reservations.get(order_id) {
                Some(&amount) => Ok(vec![CustomerEvent::CreditReleased {
                    order_id: order_id.clone(),
                    amount,
                }]),
                None => Err(CustomerRejection::NoReservation {
                    order_id: order_id.clone(),
                }),
            },
        }
    }

    fn apply(&mut self, event: &CustomerEvent) {
        match event {
            CustomerEvent::CustomerCreated {
                name,
                credit_limit,
                currency,
            } => {
                self.created = true;
                self.name.clone_from(name);
                self.credit_limit = *credit_limit;
                self.currency.clone_from(currency);
            }
            CustomerEvent::CreditReserved { order_id, amount } => {
                self.reservations.insert(order_id.clone(), *amount);
            }
            CustomerEvent::CreditLimitExceeded { .. }
            | CustomerEvent::CreditCurrencyMismatch { .. } => {}
            CustomerEvent::CreditReleased { order_id, .. } => {
                self.reservations.remove(order_id);
            }
        }
    }
}

/// The currency a command names ([`DEFAULT_CURRENCY`] if none), if it is a currency code.
fn valid_currency(currency: Option<&str>) -> Result<&str, CustomerRejection> {
    let currency = currency.unwrap_or(DEFAULT_CURRENCY);
    if is_currency_code(currency) {
        Ok(currency)
    } else {
        Err(CustomerRejection::InvalidCurrency {
            currency: currency.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annals::testkit::AggregateTest;

    fn created(limit: u64) -> CustomerEvent {
        CustomerEvent::CustomerCreated {
            name: "Ada".into(),
            credit_limit: limit,
            currency: "EUR".into(),
        }
    }

    fn reserved(order: &str, amount: u64) -> CustomerEvent {
        CustomerEvent::CreditReserved {
            order_id: order.into(),
            amount,
        }
    }

    fn reserve(order: &str, amount: u64) -> CustomerCommand {
        CustomerCommand::ReserveCredit {
            order_id: order.into(),
            amount,
            currency: None,
        }
    }

    fn release(order: &str) -> CustomerCommand {
        CustomerCommand::ReleaseCredit {
            order_id: order.into(),
        }
    }

    #[test]
    fn create_customer_records_name_and_limit() {
        AggregateTest::<Customer>::given_no_previous_events()
            .when(CustomerCommand::CreateCustomer {
                name: "Ada".into(),
                credit_limit: 150_000,
                currency: None,
            })
            .then_expect_events(vec![created(150_000)])
            .then_expect_state_eq(Customer {
                created: true,
                name: "Ada".into(),
                credit_limit: 150_000,
                currency: "EUR".into(),
                reservations: BTreeMap::new(),
            })
            .then_expect_deterministic();
    }

    #[test]
    fn create_customer_twice_is_rejected() {
        AggregateTest::<Customer>::given(vec![created(100)])
            .when(CustomerCommand::CreateCustomer {
                name: "Bob".into(),
                credit_limit: 5,
                currency: None,
            })
            .then_expect_rejection(CustomerRejection::AlreadyExists);
    }

    #[test]
    fn create_customer_with_an_empty_name_is_rejected() {
        for name in ["", "   "] {
            AggregateTest::<Customer>::given_no_previous_events()
                .when(CustomerCommand::CreateCustomer {
                    name: name.into(),
                    credit_limit: 100,
                    currency: None,
                })
                .then_expect_rejection(CustomerRejection::EmptyName);
        }
    }

    #[test]
    fn reservation_within_the_limit_is_recorded() {
        AggregateTest::<Customer>::given(vec![created(10_000), reserved("o-1", 4_000)])
            .when(reserve("o-2", 6_000))
            .then_expect_events(vec![reserved("o-2", 6_000)])
            .then_expect_state(|c| {
                assert_eq!(c.reserved(), 10_000);
                assert_eq!(c.available_credit(), 0);
            })
            .then_expect_deterministic();
    }

    #[test]
    fn reservation_beyond_the_available_credit_is_an_event_not_a_rejection() {
        AggregateTest::<Customer>::given(vec![created(10_000), reserved("o-1", 4_000)])
            .when(reserve("o-2", 6_001))
            .then_expect_events(vec![CustomerEvent::CreditLimitExceeded {
                order_id: "o-2".into(),
                amount: 6_001,
                available: 6_000,
            }])
            .then_expect_state(|c| {
                assert_eq!(c.reserved(), 4_000, "nothing more is reserved");
                assert!(!c.reservations.contains_key("o-2"));
            })
            .then_expect_deterministic();
    }

    #[test]
    fn a_customer_with_no_credit_limit_exceeds_it_at_once() {
        AggregateTest::<Customer>::given(vec![created(0)])
            .when(reserve("o-1", 1))
            .then_expect_events(vec![CustomerEvent::CreditLimitExceeded {
                order_id: "o-1".into(),
                amount: 1,
                available: 0,
            }]);
    }

    fn reserve_in(order: &str, amount: u64, currency: &str) -> CustomerCommand {
        CustomerCommand::ReserveCredit {
            order_id: order.into(),
            amount,
            currency: Some(currency.into()),
        }
    }

    #[test]
    fn a_customer_is_created_in_the_currency_given_or_in_euros() {
        AggregateTest::<Customer>::given_no_previous_events()
            .when(CustomerCommand::CreateCustomer {
                name: "Ada".into(),
                credit_limit: 100,
                currency: Some("USD".into()),
            })
            .then_expect_events(vec![CustomerEvent::CustomerCreated {
                name: "Ada".into(),
                credit_limit: 100,
                currency: "USD".into(),
            }])
            .then_expect_state(|c| assert_eq!(c.currency, "USD"));
        AggregateTest::<Customer>::given_no_previous_events()
            .when(CustomerCommand::CreateCustomer {
                name: "Ada".into(),
                credit_limit: 100,
                currency: None,
            })
            .then_expect_state(|c| assert_eq!(c.currency, DEFAULT_CURRENCY));
        for bad in ["usd", "US", "", "EURO"] {
            AggregateTest::<Customer>::given_no_previous_events()
                .when(CustomerCommand::CreateCustomer {
                    name: "Ada".into(),
                    credit_limit: 100,
                    currency: Some(bad.into()),
                })
                .then_expect_rejection(CustomerRejection::InvalidCurrency {
                    currency: bad.into(),
                });
        }
    }

    #[test]
    fn a_reservation_in_another_currency_is_an_event_and_reserves_nothing() {
        AggregateTest::<Customer>::given(vec![created(10_000)])
            .when(reserve_in("o-1", 5, "USD"))
            .then_expect_events(vec![CustomerEvent::CreditCurrencyMismatch {
                order_id: "o-1".into(),
                amount: 5,
                currency: "USD".into(),
                credit_currency: "EUR".into(),
            }])
            .then_expect_state(|c| assert_eq!(c.reserved(), 0))
            .then_expect_deterministic();
        // In its own currency, or without one (an outbox written before currencies), it is made.
        for command in [reserve_in("o-1", 5, "EUR"), reserve("o-1", 5)] {
            AggregateTest::<Customer>::given(vec![created(10_000)])
                .when(command)
                .then_expect_events(vec![reserved("o-1", 5)]);
        }
        AggregateTest::<Customer>::given(vec![created(10_000)])
            .when(reserve_in("o-1", 5, "eur"))
            .then_expect_rejection(CustomerRejection::InvalidCurrency {
                currency: "eur".into(),
            });
    }

    #[test]
    fn customer_created_version_1_is_read_in_euros() {
        let v1 = ciborium::Value::Map(vec![
            ("type".into(), "CustomerCreated".into()),
            ("name".into(), "Ada".into()),
            ("credit_limit".into(), 100u64.into()),
        ]);
        let upcast = Customer::upcast(Upcast {
            event_type: "CustomerCreated".into(),
            schema_version: 1,
            payload: v1,
        })
        .expect("version 1 has an upcaster");
        let [current] = upcast.as_slice() else {
            panic!("one event: {upcast:?}");
        };
        assert_eq!(current.schema_version, CUSTOMER_CREATED_SCHEMA_VERSION);
        let event: CustomerEvent = current.payload.deserialized().expect("a current event");
        assert_eq!(event, created(100));
        assert_eq!(
            Customer::options().snapshot_schema_version,
            CUSTOMER_SNAPSHOT_SCHEMA_VERSION
        );
        for (event_type, schema_version) in [("CustomerCreated", 3), ("CreditReserved", 2)] {
            let error = Customer::upcast(Upcast {
                event_type: event_type.into(),
                schema_version,
                payload: ciborium::Value::Map(Vec::new()),
            })
            .expect_err("no upcaster");
            assert!(matches!(error, UpcastError::NoUpcaster { .. }), "{error:?}");
        }
    }

    /// One command of every variant (the `match` stops compiling when a variant is added).
    fn every_command() -> Vec<CustomerCommand> {
        let all = vec![
            CustomerCommand::CreateCustomer {
                name: "Ada".into(),
                credit_limit: 150_000,
                currency: None,
            },
            reserve("o-1", 5_000),
            release("o-1"),
        ];
        for command in &all {
            match command {
                CustomerCommand::CreateCustomer { .. }
                | CustomerCommand::ReserveCredit { .. }
                | CustomerCommand::ReleaseCredit { .. } => {}
            }
        }
        all
    }

    #[test]
    fn process_only_commands_name_real_command_variants() {
        let commands = every_command();
        for command in &commands {
            assert_eq!(
                crate::test_support::tag(&crate::test_support::to_value(command)),
                command.command_type(),
                "the command type is the JSON tag"
            );
        }
        for name in PROCESS_ONLY_COMMANDS {
            assert!(
                commands.iter().any(|c| c.command_type() == *name),
                "{name} is no command of a customer"
            );
        }
        let process_only: Vec<&str> = commands
            .iter()
            .filter(|c| c.is_process_only())
            .map(CustomerCommand::command_type)
            .collect();
        assert_eq!(process_only, ["ReserveCredit", "ReleaseCredit"]);
    }

    #[test]
    fn commands_refuse_unknown_fields_and_accept_their_own() {
        use crate::test_support::{assert_json_decodes, assert_unknown_field_refused};
        assert_json_decodes(
            r#"{"type":"CreateCustomer","name":"Ada","credit_limit":100}"#,
            &CustomerCommand::CreateCustomer {
                name: "Ada".into(),
                credit_limit: 100,
                currency: None,
            },
        );
        assert_unknown_field_refused::<CustomerCommand>(
            r#"{"type":"CreateCustomer","name":"Ada","credit_limit":100,"credit_limt":5}"#,
            "credit_limt",
        );
        assert_json_decodes(
            r#"{"type":"ReserveCredit","order_id":"o-1","amount":5}"#,
            &reserve("o-1", 5),
        );
        assert_unknown_field_refused::<CustomerCommand>(
            r#"{"type":"ReserveCredit","order_id":"o-1","amount":5,"ammount":6}"#,
            "ammount",
        );
        assert_json_decodes(
            r#"{"type":"ReleaseCredit","order_id":"o-1"}"#,
            &release("o-1"),
        );
        assert_unknown_field_refused::<CustomerCommand>(
            r#"{"type":"ReleaseCredit","order_id":"o-1","amount":5}"#,
            "amount",
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
        let stored: CustomerEvent = serde_json::from_str(
            r#"{"type":"CreditReserved","order_id":"o-1","amount":5,"note":"gone"}"#,
        )
        .expect("an event with an extra field decodes");
        assert_eq!(stored, reserved("o-1", 5));
    }

    #[test]
    fn reserve_credit_is_idempotent_per_order() {
        AggregateTest::<Customer>::given(vec![created(10_000), reserved("o-1", 4_000)])
            .when(reserve("o-1", 4_000))
            .then_expect_no_events()
            .then_expect_state(|c| assert_eq!(c.reserved(), 4_000))
            .then_expect_deterministic();
        // Even when the order could not be covered a second time.
        AggregateTest::<Customer>::given(vec![created(5_000), reserved("o-1", 4_000)])
            .when(reserve("o-1", 4_000))
            .then_expect_no_events();
    }

    #[test]
    fn a_refused_order_is_decided_afresh() {
        let refused = CustomerEvent::CreditLimitExceeded {
            order_id: "o-1".into(),
            amount: 6_000,
            available: 5_000,
        };
        AggregateTest::<Customer>::given(vec![created(5_000), refused.clone()])
            .when(reserve("o-1", 6_000))
            .then_expect_events(vec![CustomerEvent::CreditLimitExceeded {
                order_id: "o-1".into(),
                amount: 6_000,
                available: 5_000,
            }]);
        AggregateTest::<Customer>::given(vec![created(5_000), refused])
            .when(reserve("o-1", 5_000))
            .then_expect_events(vec![reserved("o-1", 5_000)]);
    }

    #[test]
    fn credit_commands_for_an_unknown_customer_are_rejected() {
        AggregateTest::<Customer>::given_no_previous_events()
            .when(reserve("o-1", 100))
            .then_expect_rejection(CustomerRejection::UnknownCustomer)
            .then_expect_deterministic();
        AggregateTest::<Customer>::given_no_previous_events()
            .when(release("o-1"))
            .then_expect_rejection(CustomerRejection::UnknownCustomer);
    }

    #[test]
    fn reserving_zero_is_rejected() {
        AggregateTest::<Customer>::given(vec![created(100)])
            .when(reserve("o-1", 0))
            .then_expect_rejection(CustomerRejection::ZeroAmount);
    }

    #[test]
    fn release_credit_frees_the_reservation() {
        AggregateTest::<Customer>::given(vec![
            created(10_000),
            reserved("o-1", 4_000),
            reserved("o-2", 1_000),
        ])
        .when(release("o-1"))
        .then_expect_events(vec![CustomerEvent::CreditReleased {
            order_id: "o-1".into(),
            amount: 4_000,
        }])
        .then_expect_state(|c| {
            assert_eq!(c.available_credit(), 9_000);
            assert_eq!(c.reservations.keys().collect::<Vec<_>>(), ["o-2"]);
        })
        .then_expect_deterministic();
    }

    #[test]
    fn release_without_a_reservation_is_refused() {
        AggregateTest::<Customer>::given(vec![created(10_000), reserved("o-2", 1_000)])
            .when(release("o-1"))
            .then_expect_rejection(CustomerRejection::NoReservation {
                order_id: "o-1".into(),
            })
            .then_expect_deterministic();
    }

    #[test]
    fn releasing_twice_is_refused_the_second_time() {
        AggregateTest::<Customer>::given(vec![
            created(10_000),
            reserved("o-1", 4_000),
            CustomerEvent::CreditReleased {
                order_id: "o-1".into(),
                amount: 4_000,
            },
        ])
        .when(release("o-1"))
        .then_expect_rejection(CustomerRejection::NoReservation {
            order_id: "o-1".into(),
        });
    }

    #[test]
    fn reserving_another_amount_for_an_order_that_holds_credit_is_refused() {
        AggregateTest::<Customer>::given(vec![created(10_000), reserved("o-1", 4_000)])
            .when(reserve("o-1", 4_001))
            .then_expect_rejection(CustomerRejection::ReservedWithAnotherAmount {
                order_id: "o-1".into(),
                reserved: 4_000,
                amount: 4_001,
            })
            .then_expect_deterministic();
    }

    #[test]
    fn released_credit_can_be_reserved_again() {
        AggregateTest::<Customer>::given(vec![
            created(5_000),
            reserved("o-1", 5_000),
            CustomerEvent::CreditReleased {
                order_id: "o-1".into(),
                amount: 5_000,
            },
        ])
        .when(reserve("o-2", 5_000))
        .then_expect_events(vec![reserved("o-2", 5_000)]);
    }

    #[test]
    fn serialized_shape_uses_the_documented_names() {
        use crate::test_support::{assert_shape, text};
        assert_shape(
            &reserve("o-1", 5_000),
            &[
                ("type", text("ReserveCredit")),
                ("order_id", text("o-1")),
                ("amount", 5_000.into()),
            ],
        );
        assert_shape(
            &CustomerCommand::CreateCustomer {
                name: "Ada".into(),
                credit_limit: 150_000,
                currency: None,
            },
            &[
                ("type", text("CreateCustomer")),
                ("name", text("Ada")),
                ("credit_limit", 150_000.into()),
            ],
        );
        assert_shape(
            &release("o-1"),
            &[("type", text("ReleaseCredit")), ("order_id", text("o-1"))],
        );
        let events = [
            created(1),
            reserved("o-1", 1),
            CustomerEvent::CreditLimitExceeded {
                order_id: "o-1".into(),
                amount: 2,
                available: 1,
            },
            CustomerEvent::CreditReleased {
                order_id: "o-1".into(),
                amount: 1,
            },
        ];
        for event in &events {
            let shape = crate::test_support::to_value(event);
            assert_eq!(
                crate::test_support::tag(&shape),
                event.event_type(),
                "event types match the variant names"
            );
        }
        assert_shape(
            &CustomerRejection::UnknownCustomer,
            &[("type", text("UnknownCustomer"))],
        );
    }
}
