//! The Annals reference domain: aggregates, a saga and read models defined on the runtime, used
//! by the service, the load harness, the benchmarks and the docs.
//!
//! - [`customer`]: the Customer aggregate (name, credit limit in a currency, credit
//!   reservations per order);
//! - [`money`]: currencies (ISO 4217 codes, the default `EUR`);
//! - [`order`]: the Order aggregate (Pending → Approved/Rejected → Shipped/Cancelled);
//! - [`saga`]: the order-credit saga, which approves an order once its customer has reserved
//!   the credit for it, rejects it otherwise (its credit is exceeded, or in another currency, or
//!   no decision comes in time), and releases
//!   the credit of orders that are cancelled or rejected;
//! - [`views`]: the read models — customer summaries, order lists per customer, and the
//!   "recent valuable customers" query;
//! - [`bank`]: a bank account, the benchmark aggregate of the runtime.
//!
//! Money is an integer number of minor units (`u64`), never a float. Commands and events are
//! serialized with a `"type"` tag and snake_case fields, the names the HTTP API exposes.
//! Commands refuse fields they do not have (a typo is an error, not a default); events accept
//! them (an event stored by an older build must always be read).
//!
//! Some commands belong to the saga alone: [`customer::PROCESS_ONLY_COMMANDS`] and
//! [`order::PROCESS_ONLY_COMMANDS`] list them for the HTTP layer, which refuses them from
//! clients; each aggregate's module docs say what it checks of them itself.
//!
//! [`register`] wires the customer-and-order domain into a [`Runtime`] in one call:
//!
//! ```
//! use annals::{Runtime, RuntimeOptions};
//! use annals_domain::customer::{Customer, CustomerCommand};
//! use annals_domain::order::{Order, OrderCommand, OrderStatus};
//! use annals_domain::{register, saga, views, DomainOptions};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let runtime = Runtime::open(RuntimeOptions::new(dir.path()))?;
//! register(&runtime, &DomainOptions::default())?;
//! futures::executor::block_on(async {
//!     let create = CustomerCommand::CreateCustomer {
//!         name: "Ada".into(),
//!         credit_limit: 150_000,
//!         currency: None, // euros
//!     };
//!     runtime.execute::<Customer>("c-1", create).await??;
//!     let order =
//!         OrderCommand::CreateOrder { customer_id: "c-1".into(), total: 5_000, currency: None };
//!     let created = runtime.execute::<Order>("o-1", order).await??;
//!     // The saga reacts asynchronously: wait until it has handled the order's creation and
//!     // the credit reservation that followed, then until the summaries show the approval.
//!     let wait = Duration::from_secs(5);
//!     let position = created.position.expect("an event was recorded");
//!     runtime.wait_for(saga::ORDER_CREDIT_SAGA, position.next(), wait).await?;
//!     let head = runtime.head_position();
//!     runtime.wait_for(views::CUSTOMER_SUMMARIES, head, wait).await?;
//!     let order = runtime.state::<Order>("o-1")?.expect("it exists").state;
//!     assert_eq!(order.status, Some(OrderStatus::Approved));
//!     let summary = views::customer_summary(&runtime, "c-1")?.expect("created");
//!     assert_eq!(summary.available_credit, 145_000);
//!     assert_eq!(summary.orders.approved, 1);
//!     runtime.shutdown().await?;
//!     Ok(())
//! })
//! # }
//! ```

use std::time::Duration;

use annals::{Aggregate, Runtime, RuntimeError, SubscribeError, SubscriberOptions};

pub mod bank;
pub mod customer;
pub mod money;
pub mod order;
pub mod saga;
pub mod views;

mod strict;
#[cfg(test)]
mod test_support;

/// How the domain is wired into a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DomainOptions {
    /// How long an order may stay pending before the saga rejects it.
    pub decision_timeout: Duration,
    /// Options of the saga's subscriber. The runtime pauses the saga (never parks an event)
    /// while an aggregate is overloaded or shutting down; other failures are retried per these
    /// options, then the event is parked for an operator.
    pub saga: SubscriberOptions,
    /// Options of the projections' subscribers. (`register` sets their `aggregate_types`, and
    /// the saga's, to customers and orders: what they read.)
    pub projections: SubscriberOptions,
}

impl Default for DomainOptions {
    fn default() -> Self {
        DomainOptions {
            decision_timeout: saga::DECISION_TIMEOUT_DEFAULT,
            saga: SubscriberOptions::default(),
            projections: SubscriberOptions::default(),
        }
    }
}

impl DomainOptions {
    /// Sets the decision timeout.
    #[must_use]
    pub fn with_decision_timeout(mut self, timeout: Duration) -> Self {
        self.decision_timeout = timeout;
        self
    }

    /// Sets the saga's subscriber options.
    #[must_use]
    pub fn with_saga_options(mut self, options: SubscriberOptions) -> Self {
        self.saga = options;
        self
    }

    /// Sets the projections' subscriber options.
    #[must_use]
    pub fn with_projection_options(mut self, options: SubscriberOptions) -> Self {
        self.projections = options;
        self
    }
}

/// Why the domain could not be wired into a runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// An aggregate type could not be registered (already registered, for example).
    #[error("cannot register the domain's aggregates")]
    Aggregate(#[source] RuntimeError),
    /// A projection or the saga could not be registered.
    #[error("cannot register the domain's projections or saga")]
    Subscriber(#[source] SubscribeError),
}

/// The aggregate types the views and the saga read: customers and orders.
pub const SAGA_AGGREGATE_TYPES: [&str; 2] = [customer::Customer::TYPE, order::Order::TYPE];

/// Registers the Customer and Order aggregates, the [`views`] projections
/// ([`views::CUSTOMER_SUMMARIES`], [`views::VALUABLE_CUSTOMERS`]) and the order-credit saga
/// ([`saga::ORDER_CREDIT_SAGA`]) on `runtime`. The runtime must use the sled store (it keeps
/// the views and the saga's state in it).
pub fn register(runtime: &Runtime, options: &DomainOptions) -> Result<(), RegisterError> {
    runtime
        .register::<customer::Customer>()
        .map_err(RegisterError::Aggregate)?;
    runtime
        .register::<order::Order>()
        .map_err(RegisterError::Aggregate)?;
    // The views and the saga read customers and orders only: other aggregate types' batches
    // (the benchmark's accounts, a user's own) do not wake them.
    let read = SAGA_AGGREGATE_TYPES;
    let projections = options.projections.clone().with_aggregate_types(read);
    runtime
        .project(
            views::CUSTOMER_SUMMARIES,
            projections.clone(),
            views::CustomerSummaries::new,
        )
        .map_err(RegisterError::Subscriber)?;
    runtime
        .project(
            views::VALUABLE_CUSTOMERS,
            projections,
            views::ValuableCustomers::new,
        )
        .map_err(RegisterError::Subscriber)?;
    runtime
        .process_manager(
            saga::ORDER_CREDIT_SAGA,
            saga::OrderCreditSaga {
                decision_timeout: options.decision_timeout,
            },
            options.saga.clone().with_aggregate_types(read),
        )
        .map_err(RegisterError::Subscriber)?;
    Ok(())
}
