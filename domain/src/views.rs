//! Read models of the reference domain: projections over [`View`]s, and the queries they
//! answer without touching the event log.
//!
//! - [`CustomerSummaries`] (projection [`CUSTOMER_SUMMARIES`]): per customer, the name, credit
//!   limit, available credit, orders counted by status and the total shipped
//!   ([`customer_summary`]); and the list of each customer's orders ([`customer_orders`]).
//! - [`ValuableCustomers`] (projection [`VALUABLE_CUSTOMERS`]): the classic query an
//!   event-sourced write side cannot answer — customers created after an instant who have a
//!   shipped order whose total exceeds an amount, by creation time
//!   ([`recent_valuable_customers`]).
//!
//! # Each event changes each record once
//! The runtime applies an event to a view record only if the record has not seen that position
//! yet, which makes redelivery after a crash harmless *per record*. Two consequences shape the
//! handlers.
//!
//! A stored event written with an older schema can upcast into several events, all at one
//! position: a second update of a record at that position would be skipped, so the handlers
//! fold all of them into one update per record.
//!
//! An event that updates several records can be interrupted between them, and redelivered;
//! every update is written so that applying it once, whatever happened to the other records,
//! gives what a rebuild from scratch gives:
//! - facts that never change (an order's customer and total, a customer's creation time) are
//!   read freely from other records;
//! - a customer's order counts move an order from its old status to its new one, and the old
//!   status is read from the order's list entry. Every event of an order updates its
//!   customer's summary *before* the order's entry, so whenever the summary has not seen an
//!   event yet, the entry has not seen it (nor any later one) either, and its status is the one
//!   before the event;
//! - the valuable-customers records keep a maximum, which the same total cannot raise twice.
//!
//! # Queries
//! The query functions take the [`Runtime`] and look the views up per call, as
//! [`Runtime::view`] asks (a rebuild swaps generations). To read your own writes, wait first
//! with [`Runtime::wait_for`] on the projection's name and the command's position.

use annals::{
    Aggregate, HandlerError, Position, Projection, RecordedEvent, Runtime, SubscribeError,
    Timestamp, View, ViewError, ViewSet,
};
use serde::{Deserialize, Serialize};

use crate::customer::{Customer, CustomerEvent};
use crate::order::{Order, OrderEvent, OrderStatus};

/// The name of the customer-summaries projection (summaries and order lists).
pub const CUSTOMER_SUMMARIES: &str = "customer-summaries";
/// The name of the valuable-customers projection.
pub const VALUABLE_CUSTOMERS: &str = "valuable-customers";

/// Customer id → [`SummaryRecord`].
const SUMMARIES: &str = "summaries";
/// `{customer id}/{order id}` → [`OrderListEntry`].
const CUSTOMER_ORDERS: &str = "customer-orders";
/// Order id → customer id: finds an order's list entry from events that do not name the
/// customer.
const ORDER_CUSTOMERS: &str = "order-customers";
/// Customer id → [`ValuableRecord`].
const VALUABLE_BY_CUSTOMER: &str = "by-customer";
/// Order id → [`OrderFacts`].
const VALUABLE_ORDERS: &str = "orders";
/// `[created_at: u64 BE][customer id]` → [`ValuableCustomer`], only customers with a shipped
/// order: a range from an instant is the customers created since, in creation order.
const VALUABLE_BY_CREATION: &str = "by-creation";

/// A customer's orders counted by status.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct OrderCounts {
    /// Waiting for the credit check.
    pub pending: u64,
    /// Approved, not shipped or cancelled.
    pub approved: u64,
    /// Rejected.
    pub rejected: u64,
    /// Shipped.
    pub shipped: u64,
    /// Cancelled.
    pub cancelled: u64,
}

impl OrderCounts {
    /// The count of orders in `status`.
    pub fn get(&self, status: OrderStatus) -> u64 {
        match status {
            OrderStatus::Pending => self.pending,
            OrderStatus::Approved => self.approved,
            OrderStatus::Rejected => self.rejected,
            OrderStatus::Shipped => self.shipped,
            OrderStatus::Cancelled => self.cancelled,
        }
    }

    /// Counts one more order in `status`.
    pub fn add(&mut self, status: OrderStatus) {
        let slot = self.slot(status);
        *slot = slot.saturating_add(1);
    }

    /// Moves one order from `from` to `to`.
    pub fn transfer(&mut self, from: OrderStatus, to: OrderStatus) {
        let slot = self.slot(from);
        *slot = slot.saturating_sub(1);
        self.add(to);
    }

    fn slot(&mut self, status: OrderStatus) -> &mut u64 {
        match status {
            OrderStatus::Pending => &mut self.pending,
            OrderStatus::Approved => &mut self.approved,
            OrderStatus::Rejected => &mut self.rejected,
            OrderStatus::Shipped => &mut self.shipped,
            OrderStatus::Cancelled => &mut self.cancelled,
        }
    }
}

/// A customer as the read model shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CustomerSummary {
    /// The customer's id.
    pub customer_id: String,
    /// The customer's name.
    pub name: String,
    /// In minor units of `currency`.
    pub credit_limit: u64,
    /// The ISO 4217 code of the credit limit's currency (and of every order the customer's
    /// credit approved).
    pub currency: String,
    /// The credit limit minus the open reservations, in minor units.
    pub available_credit: u64,
    /// When the customer was created (its `CustomerCreated` was recorded).
    #[schemars(with = "u64")]
    pub created_at: Timestamp,
    /// The customer's orders by status.
    pub orders: OrderCounts,
    /// The sum of the totals of the customer's shipped orders, in minor units.
    pub total_shipped: u64,
}

/// One order in its customer's order list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderListEntry {
    /// The order's id.
    pub order_id: String,
    /// The customer's id.
    pub customer_id: String,
    /// In minor units of `currency`.
    pub total: u64,
    /// The ISO 4217 code of the total's currency. Entries stored before orders listed their
    /// currency are read in euros, as every order was then.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// The order's current status.
    pub status: OrderStatus,
    /// When the order was created.
    #[schemars(with = "u64")]
    pub created_at: Timestamp,
}

/// A customer found by [`recent_valuable_customers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ValuableCustomer {
    /// The customer's id.
    pub customer_id: String,
    /// The customer's name.
    pub name: String,
    /// When the customer was created.
    #[schemars(with = "u64")]
    pub created_at: Timestamp,
    /// The largest total of the customer's shipped orders, in minor units.
    pub max_shipped_total: u64,
}

/// What the customer's `CustomerCreated` said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Profile {
    name: String,
    credit_limit: u64,
    /// Records written before customers had a currency have none: they were all in euros.
    #[serde(default = "default_currency")]
    currency: String,
    created_at: Timestamp,
}

fn default_currency() -> String {
    crate::money::DEFAULT_CURRENCY.to_string()
}

/// A customer summary as stored. Orders can be recorded for a customer id before (or
/// without) its creation, so the profile is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SummaryRecord {
    profile: Option<Profile>,
    reserved: u64,
    orders: OrderCounts,
    total_shipped: u64,
}

/// The projection behind [`customer_summary`] and [`customer_orders`].
#[derive(Debug, Clone)]
pub struct CustomerSummaries {
    summaries: View<SummaryRecord>,
    orders: View<OrderListEntry>,
    order_customers: View<String>,
}

/// The key of an order in its customer's list. Ids may contain `/`, so a prefix scan can also
/// meet another customer's orders (customer `a` and customer `a/b`); readers check the entry's
/// customer id.
fn order_key(customer_id: &str, order_id: &str) -> Vec<u8> {
    format!("{customer_id}/{order_id}").into_bytes()
}

/// A handler error for an event that the aggregates never produce in this order.
fn inconsistent(event: &RecordedEvent, what: &str) -> HandlerError {
    format!("{} at position {}: {what}", event.stream, event.position).into()
}

impl CustomerSummaries {
    /// The projection over the views of one generation (the factory for
    /// [`Runtime::project`]).
    pub fn new(views: &ViewSet) -> Result<CustomerSummaries, ViewError> {
        Ok(CustomerSummaries {
            summaries: views.view(SUMMARIES)?,
            orders: views.view(CUSTOMER_ORDERS)?,
            order_customers: views.view(ORDER_CUSTOMERS)?,
        })
    }

    /// The views of the active generation, for queries.
    pub fn open(runtime: &Runtime) -> Result<CustomerSummaries, SubscribeError> {
        Ok(CustomerSummaries {
            summaries: runtime.view(CUSTOMER_SUMMARIES, SUMMARIES)?,
            orders: runtime.view(CUSTOMER_SUMMARIES, CUSTOMER_ORDERS)?,
            order_customers: runtime.view(CUSTOMER_SUMMARIES, ORDER_CUSTOMERS)?,
        })
    }

    /// The summary of customer `customer_id` (`None` if it was not created).
    pub fn summary(&self, customer_id: &str) -> Result<Option<CustomerSummary>, ViewError> {
        let Some(record) = self.summaries.get(customer_id.as_bytes())? else {
            return Ok(None);
        };
        Ok(summary_of(customer_id, record))
    }

    /// Every created customer's summary, in customer id order (for tests and admin tools: it
    /// reads the whole view).
    pub fn all(&self) -> Result<Vec<CustomerSummary>, ViewError> {
        let mut out = Vec::new();
        for item in self.summaries.iter() {
            let (key, record) = item?;
            let id = String::from_utf8_lossy(&key);
            out.extend(summary_of(&id, record));
        }
        Ok(out)
    }

    /// At most `limit` orders of customer `customer_id`, in order id order.
    pub fn orders(
        &self,
        customer_id: &str,
        limit: usize,
    ) -> Result<Vec<OrderListEntry>, ViewError> {
        let prefix = order_key(customer_id, "");
        let mut out = Vec::new();
        for item in self.orders.scan_prefix(&prefix) {
            if out.len() >= limit {
                break;
            }
            let (_, entry) = item?;
            if entry.customer_id == customer_id {
                out.push(entry);
            }
        }
        Ok(out)
    }

    fn on_customer(
        &self,
        event: &RecordedEvent,
        events: &[CustomerEvent],
    ) -> Result<(), HandlerError> {
        // Refusals change no summary; nothing to write (and no position to record).
        if events
            .iter()
            .all(|e| matches!(e, CustomerEvent::CreditLimitExceeded { .. }))
        {
            return Ok(());
        }
        let customer_id = event.stream.aggregate_id().as_bytes();
        self.summaries
            .update(customer_id, event.position, |record| {
                let mut record = record.unwrap_or_default();
                for e in events {
                    match e {
                        CustomerEvent::CustomerCreated {
                            name,
                            credit_limit,
                            currency,
                        } => {
                            record.profile = Some(Profile {
                                name: name.clone(),
                                credit_limit: *credit_limit,
                                currency: currency.clone(),
                                created_at: event.meta.recorded_at,
                            });
                        }
                        CustomerEvent::CreditReserved { amount, .. } => {
                            record.reserved = record.reserved.saturating_add(*amount);
                        }
                        CustomerEvent::CreditReleased { amount, .. } => {
                            record.reserved = record.reserved.saturating_sub(*amount);
                        }
                        CustomerEvent::CreditLimitExceeded { .. }
                        | CustomerEvent::CreditCurrencyMismatch { .. } => {}
                    }
                }
                Some(record)
            })?;
        Ok(())
    }

    fn on_order(&self, event: &RecordedEvent, events: &[OrderEvent]) -> Result<(), HandlerError> {
        let order_id = event.stream.aggregate_id();
        let position = event.position;
        let created = events.iter().find_map(|e| match e {
            OrderEvent::OrderCreated { customer_id, .. } => Some(customer_id.clone()),
            _ => None,
        });
        let customer_id = match created {
            Some(customer_id) => {
                self.order_customers
                    .update(order_id.as_bytes(), position, |_| Some(customer_id.clone()))?;
                customer_id
            }
            None if events.is_empty() => return Ok(()),
            None => self
                .order_customers
                .get(order_id.as_bytes())?
                .ok_or_else(|| inconsistent(event, "an order event before its OrderCreated"))?,
        };
        let key = order_key(&customer_id, order_id);
        // The entry before this event: whenever the summary below has not seen the event, the
        // entry has not either (see the module docs); otherwise the summary update is skipped.
        let before = self.orders.get(&key)?;
        let mut after = before.clone();
        for e in events {
            match (e, &mut after) {
                (
                    OrderEvent::OrderCreated {
                        customer_id,
                        total,
                        currency,
                    },
                    None,
                ) => {
                    after = Some(OrderListEntry {
                        order_id: order_id.to_string(),
                        customer_id: customer_id.clone(),
                        total: *total,
                        currency: currency.clone(),
                        status: OrderStatus::Pending,
                        created_at: event.meta.recorded_at,
                    });
                }
                (OrderEvent::OrderCreated { .. }, Some(_)) => {}
                (e, Some(entry)) => entry.status = e.status_after(),
                (_, None) => {
                    return Err(inconsistent(
                        event,
                        "an order missing from its customer's list",
                    ))
                }
            }
        }
        let Some(after) = after else {
            return Ok(());
        };
        // Statuses only move forward, so the net effect of the events is one order leaving
        // its old status (if it had one) for its new one.
        let was = before.as_ref().map(|entry| entry.status);
        let shipped_now = after.status == OrderStatus::Shipped && was != Some(OrderStatus::Shipped);
        self.summaries
            .update(customer_id.as_bytes(), position, |record| {
                let mut record = record.unwrap_or_default();
                match was {
                    Some(was) => record.orders.transfer(was, after.status),
                    None => record.orders.add(after.status),
                }
                if shipped_now {
                    record.total_shipped = record.total_shipped.saturating_add(after.total);
                }
                Some(record)
            })?;
        self.orders.update(&key, position, |_| Some(after))?;
        Ok(())
    }
}

fn summary_of(customer_id: &str, record: SummaryRecord) -> Option<CustomerSummary> {
    let profile = record.profile?;
    Some(CustomerSummary {
        customer_id: customer_id.to_string(),
        available_credit: profile.credit_limit.saturating_sub(record.reserved),
        name: profile.name,
        credit_limit: profile.credit_limit,
        currency: profile.currency.clone(),
        created_at: profile.created_at,
        orders: record.orders,
        total_shipped: record.total_shipped,
    })
}

impl Projection for CustomerSummaries {
    fn handle(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        match event.stream.aggregate_type() {
            Customer::TYPE => self.on_customer(event, &payloads::<Customer>(event)?),
            Order::TYPE => self.on_order(event, &payloads::<Order>(event)?),
            _ => Ok(()),
        }
    }
}

/// The events a stored event stands for now: decoded, and upcast if it was written with an
/// older schema (possibly several, or none).
fn payloads<A: Aggregate>(event: &RecordedEvent) -> Result<Vec<A::Event>, HandlerError> {
    Ok(event
        .upcast::<A>()?
        .into_iter()
        .map(|e| e.payload)
        .collect())
}

/// What the valuable-customers projection knows of a customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ValuableRecord {
    /// Name and creation time, once created.
    created: Option<(String, Timestamp)>,
    /// The largest shipped total so far (0: none; totals are more than zero).
    max_shipped_total: u64,
}

/// What the valuable-customers projection keeps of an order: facts that never change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OrderFacts {
    customer_id: String,
    total: u64,
}

/// Where a page of [`ValuableCustomers::page`] continues: after the customer created at
/// `created_at` with id `customer_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValuableCursor {
    /// When the last customer read was created.
    pub created_at: Timestamp,
    /// Its id.
    pub customer_id: String,
}

/// One page of valuable customers and where the next continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValuablePage {
    /// The customers found, by creation time then id.
    pub customers: Vec<ValuableCustomer>,
    /// Where the next page continues; `None` when the view was read to its end.
    pub next: Option<ValuableCursor>,
}

/// The projection behind [`recent_valuable_customers`].

#[derive(Debug, Clone)]
pub struct ValuableCustomers {
    by_customer: View<ValuableRecord>,
    orders: View<OrderFacts>,
    by_creation: View<ValuableCustomer>,
}

/// The key of a customer in the by-creation view.
fn creation_key(created_at: Timestamp, customer_id: &str) -> Vec<u8> {
    let mut key = created_at.as_micros().to_be_bytes().to_vec();
    key.extend_from_slice(customer_id.as_bytes());
    key
}

/// Key prefixes that together cover exactly the keys whose first 8 bytes, read as a big-endian
/// `u64`, are at least `from` — in ascending key order, without overlap.
///
/// [`View`] scans by prefix only, not by range, so a range `[from, ∞)` is decomposed into
/// blocks: the keys at exactly `from`, then for each byte from the last to the first, every
/// larger value of that byte after the same leading bytes. At most 1 + 8 × 255 prefixes, each
/// one seek; empty blocks cost a seek and return nothing.
fn prefixes_from(from: u64) -> impl Iterator<Item = Vec<u8>> {
    let bytes = from.to_be_bytes();
    let above = (0..bytes.len()).rev().flat_map(move |i| {
        bytes[i]
            .checked_add(1)
            .into_iter()
            .flat_map(|first| first..=u8::MAX)
            .map(move |b| {
                let mut prefix = bytes[..i].to_vec();
                prefix.push(b);
                prefix
            })
    });
    std::iter::once(bytes.to_vec()).chain(above)
}

impl ValuableCustomers {
    /// The projection over the views of one generation (the factory for
    /// [`Runtime::project`]).
    pub fn new(views: &ViewSet) -> Result<ValuableCustomers, ViewError> {
        Ok(ValuableCustomers {
            by_customer: views.view(VALUABLE_BY_CUSTOMER)?,
            orders: views.view(VALUABLE_ORDERS)?,
            by_creation: views.view(VALUABLE_BY_CREATION)?,
        })
    }

    /// The views of the active generation, for queries.
    pub fn open(runtime: &Runtime) -> Result<ValuableCustomers, SubscribeError> {
        Ok(ValuableCustomers {
            by_customer: runtime.view(VALUABLE_CUSTOMERS, VALUABLE_BY_CUSTOMER)?,
            orders: runtime.view(VALUABLE_CUSTOMERS, VALUABLE_ORDERS)?,
            by_creation: runtime.view(VALUABLE_CUSTOMERS, VALUABLE_BY_CREATION)?,
        })
    }

    /// At most `limit` customers created strictly after `created_after` who have a shipped
    /// order whose total exceeds `total_above`, by creation time (then customer id).
    ///
    /// It reads the customers with a shipped order created since the instant, never the log,
    /// but all of them if too few qualify: [`ValuableCustomers::page`] bounds the read.
    pub fn query(
        &self,
        created_after: Timestamp,
        total_above: u64,
        limit: usize,
    ) -> Result<Vec<ValuableCustomer>, ViewError> {
        Ok(self
            .page(created_after, total_above, None, limit, usize::MAX)?
            .customers)
    }

    /// One page of [`ValuableCustomers::query`], reading at most `budget` records of the view:
    /// at most `limit` customers created strictly after `created_after` (and after `after`,
    /// the previous page's [`ValuablePage::next`]) whose shipped total exceeds `total_above`.
    /// A page that stops early (`limit` customers found, or `budget` records read) says where
    /// the next one continues; `next: None` means the view was read to its end.
    pub fn page(
        &self,
        created_after: Timestamp,
        total_above: u64,
        after: Option<&ValuableCursor>,
        limit: usize,
        budget: usize,
    ) -> Result<ValuablePage, ViewError> {
        let mut page = ValuablePage {
            customers: Vec::new(),
            next: None,
        };
        if limit == 0 {
            return Ok(page);
        }
        let (from, skip_through) = match after {
            // Resume at the cursor's instant, skipping the keys up to and including its own.
            Some(cursor) if cursor.created_at > created_after => (
                cursor.created_at.as_micros(),
                Some(creation_key(cursor.created_at, &cursor.customer_id)),
            ),
            _ => match created_after.as_micros().checked_add(1) {
                Some(from) => (from, None),
                None => return Ok(page),
            },
        };
        let mut read = 0;
        for prefix in prefixes_from(from) {
            for item in self.by_creation.scan_prefix(&prefix) {
                let (key, customer) = item?;
                if skip_through.as_ref().is_some_and(|k| key <= *k) {
                    continue;
                }
                read += 1;
                let here = ValuableCursor {
                    created_at: customer.created_at,
                    customer_id: customer.customer_id.clone(),
                };
                if customer.max_shipped_total > total_above {
                    page.customers.push(customer);
                }
                if page.customers.len() >= limit || read >= budget {
                    page.next = Some(here);
                    return Ok(page);
                }
            }
        }
        Ok(page)
    }

    /// Records `max_shipped_total` in the by-creation view, if the customer is created.
    fn index(
        &self,
        customer_id: &str,
        record: &ValuableRecord,
        position: Position,
    ) -> Result<(), ViewError> {
        let Some((name, created_at)) = &record.created else {
            return Ok(());
        };
        if record.max_shipped_total == 0 {
            return Ok(());
        }
        self.by_creation.update(
            &creation_key(*created_at, customer_id),
            position,
            |current| {
                let max = current.map_or(0, |c| c.max_shipped_total);
                Some(ValuableCustomer {
                    customer_id: customer_id.to_string(),
                    name: name.clone(),
                    created_at: *created_at,
                    max_shipped_total: max.max(record.max_shipped_total),
                })
            },
        )?;
        Ok(())
    }

    fn on_customer(
        &self,
        event: &RecordedEvent,
        events: &[CustomerEvent],
    ) -> Result<(), HandlerError> {
        let Some(name) = events.iter().find_map(|e| match e {
            CustomerEvent::CustomerCreated { name, .. } => Some(name.clone()),
            _ => None,
        }) else {
            return Ok(());
        };
        let customer_id = event.stream.aggregate_id();
        let created_at = event.meta.recorded_at;
        self.by_customer
            .update(customer_id.as_bytes(), event.position, |record| {
                let mut record = record.unwrap_or_default();
                record.created = Some((name, created_at));
                Some(record)
            })?;
        // Orders shipped before the customer was created (approved by hand) count too.
        if let Some(record) = self.by_customer.get(customer_id.as_bytes())? {
            self.index(customer_id, &record, event.position)?;
        }
        Ok(())
    }

    fn on_order(&self, event: &RecordedEvent, events: &[OrderEvent]) -> Result<(), HandlerError> {
        let order_id = event.stream.aggregate_id();
        let created = events.iter().find_map(|e| match e {
            OrderEvent::OrderCreated {
                customer_id, total, ..
            } => Some(OrderFacts {
                customer_id: customer_id.clone(),
                total: *total,
            }),
            _ => None,
        });
        if let Some(facts) = &created {
            self.orders
                .update(order_id.as_bytes(), event.position, |_| Some(facts.clone()))?;
        }
        if !events.iter().any(|e| matches!(e, OrderEvent::OrderShipped)) {
            return Ok(());
        }
        let facts = match created {
            Some(facts) => facts,
            None => self
                .orders
                .get(order_id.as_bytes())?
                .ok_or_else(|| inconsistent(event, "an order shipped before its OrderCreated"))?,
        };
        let key = facts.customer_id.as_bytes();
        self.by_customer.update(key, event.position, |record| {
            let mut record = record.unwrap_or_default();
            record.max_shipped_total = record.max_shipped_total.max(facts.total);
            Some(record)
        })?;
        if let Some(record) = self.by_customer.get(key)? {
            self.index(&facts.customer_id, &record, event.position)?;
        }
        Ok(())
    }
}

impl Projection for ValuableCustomers {
    fn handle(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        match event.stream.aggregate_type() {
            Customer::TYPE => self.on_customer(event, &payloads::<Customer>(event)?),
            Order::TYPE => self.on_order(event, &payloads::<Order>(event)?),
            _ => Ok(()),
        }
    }
}

/// The summary of customer `customer_id` (`None` if it was not created).
pub fn customer_summary(
    runtime: &Runtime,
    customer_id: &str,
) -> Result<Option<CustomerSummary>, SubscribeError> {
    Ok(CustomerSummaries::open(runtime)?.summary(customer_id)?)
}

/// At most `limit` orders of customer `customer_id`, in order id order.
pub fn customer_orders(
    runtime: &Runtime,
    customer_id: &str,
    limit: usize,
) -> Result<Vec<OrderListEntry>, SubscribeError> {
    Ok(CustomerSummaries::open(runtime)?.orders(customer_id, limit)?)
}

/// At most `limit` customers created strictly after `created_after` who have at least one
/// shipped order whose total exceeds `total_above`, sorted by creation time. The SQL it
/// replaces: `SELECT * FROM customer c, order o WHERE c.id = o.customer_id AND o.total > ?
/// AND o.state = 'SHIPPED' AND c.creation_date > ?`.
pub fn recent_valuable_customers(
    runtime: &Runtime,
    created_after: Timestamp,
    total_above: u64,
    limit: usize,
) -> Result<Vec<ValuableCustomer>, SubscribeError> {
    Ok(ValuableCustomers::open(runtime)?.query(created_after, total_above, limit)?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A small deterministic generator (SplitMix64), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// A value whose bytes are mostly shared with `base`, so blocks at every depth occur.
        fn near(&mut self, base: u64) -> u64 {
            let bits = self.next() % 64;
            base ^ (self.next() & ((1u64 << bits) - 1))
        }
    }

    /// The keys a prefix decomposition yields from a sorted key set, in scan order.
    fn scan(keys: &BTreeSet<Vec<u8>>, from: u64) -> Vec<Vec<u8>> {
        prefixes_from(from)
            .flat_map(|prefix| {
                keys.range(prefix.clone()..)
                    .take_while(move |k| k.starts_with(&prefix))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn prefixes_cover_exactly_the_keys_at_or_above_the_bound_in_order() {
        let mut rng = Rng(42);
        for round in 0..200 {
            let base = rng.next();
            let keys: BTreeSet<Vec<u8>> = (0..50)
                .map(|i| creation_key(Timestamp(rng.near(base)), &format!("c-{i}")))
                .collect();
            let from = match round % 4 {
                0 => 0,
                1 => u64::MAX,
                _ => rng.near(base),
            };
            let expected: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| k[..8] >= from.to_be_bytes()[..])
                .cloned()
                .collect();
            assert_eq!(scan(&keys, from), expected, "from {from:#x}");
        }
    }

    #[test]
    fn prefix_count_is_bounded() {
        assert_eq!(prefixes_from(u64::MAX).count(), 1);
        assert_eq!(prefixes_from(0).count(), 1 + 8 * 255);
        for from in [1, 1_700_000_000_000_000, u64::MAX / 3] {
            assert!(prefixes_from(from).count() <= 1 + 8 * 255);
        }
    }

    #[test]
    fn order_counts_move_orders_between_statuses() {
        let mut counts = OrderCounts::default();
        counts.add(OrderStatus::Pending);
        counts.add(OrderStatus::Pending);
        counts.transfer(OrderStatus::Pending, OrderStatus::Approved);
        counts.transfer(OrderStatus::Approved, OrderStatus::Shipped);
        assert_eq!(
            counts,
            OrderCounts {
                pending: 1,
                shipped: 1,
                ..OrderCounts::default()
            }
        );
        for status in OrderStatus::ALL {
            assert_eq!(
                counts.get(status),
                u64::from(status == OrderStatus::Pending || status == OrderStatus::Shipped)
            );
        }
    }
}
