//! `--verify`: after the run, check from the target's own reads that nothing acknowledged was
//! lost or duplicated, and (for `orders`) that the saga and the read models finished their work.
//!
//! The checks, in order:
//! 1. **The global log**, read from position 1 to the head in pages: positions run 1, 2, 3, …
//!    without a gap; no event id appears twice; in every stream of this run (ids with the run's
//!    prefix) versions run 1, 2, 3, … in log order.
//! 2. **`orders`: settling.** Every order whose `CreateOrder` was acknowledged must reach a
//!    decision (`OrderApproved` or `OrderRejected`), and no rejected or cancelled order may
//!    still hold credit (the saga releases it). The log is read again until that holds, for at
//!    most `--saga-timeout`; what is still open then is reported.
//! 3. **Every acknowledged command**: each event its reply named (event id, version, position)
//!    is in the log exactly once, in its aggregate's stream, at that version and position; the
//!    reply's version is its last event's.
//! 4. **Every stream an acknowledged command touched**, read on its own (paged), holds the same
//!    events at the same versions as the global log: the per-stream index agrees with the log.
//! 5. **`orders`: read models.** Every approved or shipped order holds its credit; each
//!    customer's summary, read once the projection has reached the head
//!    (in-process `wait_for`, over HTTP `min_position`), equals what the log says: credit
//!    limit, available credit, orders by status, total shipped.
//!
//! Every finding is a sentence naming the aggregate, version, position or event id concerned;
//! the first [`PROBLEMS_KEPT`] are kept in the report, and all are counted.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use annals_domain::order::OrderStatus;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::target::{Ack, Client, LogEvent};
use crate::workload::Kind;

/// Findings kept in the report (all are counted).
pub(crate) const PROBLEMS_KEPT: usize = 100;
/// Events per read of the log or of a stream.
const PAGE_EVENTS: usize = 1000;
/// Streams read at once by the per-stream check (over HTTP, requests in flight).
const STREAM_READS_CONCURRENT: usize = 16;
/// Pause between reads of the log while waiting for the saga to settle.
const SETTLE_POLL: Duration = Duration::from_millis(50);

/// An acknowledged command, as the verifier needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckRecord {
    /// The aggregate type.
    pub(crate) kind: Kind,
    /// The aggregate id.
    pub(crate) id: String,
    /// The command's type name (`"Deposit"`), for messages.
    pub(crate) command: &'static str,
    /// What the reply said was committed.
    pub(crate) ack: Ack,
}

/// What verification checked and found (the `verify` object of the report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Verification {
    /// No problem found.
    pub(crate) ok: bool,
    /// Events read from the global log.
    pub(crate) log_events: u64,
    /// Acknowledged commands checked.
    pub(crate) commands: u64,
    /// Events of acknowledged commands checked.
    pub(crate) events: u64,
    /// Streams read on their own and compared with the log.
    pub(crate) streams: u64,
    /// Orders checked for a decision.
    pub(crate) orders: u64,
    /// Customer summaries compared with the log.
    pub(crate) customers: u64,
    /// Number of problems found.
    pub(crate) problems_total: u64,
    /// The first [`PROBLEMS_KEPT`] problems.
    pub(crate) problems: Vec<String>,
}

impl Verification {
    /// One line for the table.
    pub(crate) fn summary(&self) -> String {
        let checked = format!(
            "{} commands, {} events, {} streams, {} orders, {} customers checked against {} log events",
            self.commands, self.events, self.streams, self.orders, self.customers, self.log_events
        );
        if self.ok {
            format!("ok: {checked}")
        } else {
            format!("FAILED: {} problems; {checked}", self.problems_total)
        }
    }

    fn problem(&mut self, problem: String) {
        self.problems_total += 1;
        if self.problems.len() < PROBLEMS_KEPT {
            self.problems.push(problem);
        }
    }
}

/// What the run did, for verification.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Input<'a> {
    /// Every acknowledged command of the run and of its setup.
    pub(crate) acks: &'a [AckRecord],
    /// The run's id prefix: only its streams are checked in detail.
    pub(crate) prefix: &'a str,
    /// The `orders` workload (settle, decisions, read models).
    pub(crate) orders: bool,
    /// The run's customers (`orders`).
    pub(crate) customers: &'a [String],
    /// Bound of the settling, and of each read-model wait in-process.
    pub(crate) settle: Duration,
}

/// Runs the checks.
pub(crate) async fn verify(client: &Client, input: Input<'_>) -> Verification {
    let mut index = LogIndex::new(input.prefix, input.orders);
    if let Err(problem) = index.read_to_head(client).await {
        index.found.problem(problem);
        return index.finish();
    }
    let acked_orders: Vec<&str> = input
        .acks
        .iter()
        .filter(|a| a.kind == Kind::Order && a.command == "CreateOrder")
        .map(|a| a.id.as_str())
        .collect();
    if input.orders {
        settle(client, &mut index, &acked_orders, input.settle).await;
    }
    check_acks(&mut index, input.acks);
    check_streams(client, &mut index, input.acks).await;
    if input.orders {
        check_orders(&mut index, &acked_orders);
        check_summaries(client, &mut index, input.customers, input.settle).await;
    }
    index.finish()
}

/// Where an event is in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Located {
    kind: Kind,
    id: String,
    version: u64,
    position: u64,
}

/// The global log as read so far, with the findings.
#[derive(Debug)]
struct LogIndex {
    prefix: String,
    /// Decode payloads and fold the domain.
    orders: bool,
    /// The last position read.
    after: u64,
    /// Events of the run's streams by id.
    by_id: HashMap<Uuid, Located>,
    /// Event ids of each of the run's streams, by version - 1.
    streams: HashMap<(Kind, String), Vec<Uuid>>,
    fold: Fold,
    found: Verification,
}

impl LogIndex {
    fn new(prefix: &str, orders: bool) -> LogIndex {
        LogIndex {
            prefix: prefix.to_string(),
            orders,
            after: 0,
            by_id: HashMap::new(),
            streams: HashMap::new(),
            fold: Fold::default(),
            found: Verification::default(),
        }
    }

    fn finish(mut self) -> Verification {
        self.found.ok = self.found.problems_total == 0;
        self.found
    }

    /// Reads the log from the last position read to the current head.
    async fn read_to_head(&mut self, client: &Client) -> Result<(), String> {
        loop {
            let page = client
                .log_after(self.after, PAGE_EVENTS, self.orders)
                .await
                .map_err(|e| format!("verification stopped: {e}"))?;
            let before = self.after;
            for event in &page {
                self.add(event);
            }
            if self.after == before {
                return Ok(());
            }
        }
    }

    /// Checks and indexes one event of the log.
    fn add(&mut self, event: &LogEvent) {
        if event.position != self.after + 1 {
            self.found.problem(format!(
                "the global log goes from position {} to position {} (event {} of {} {})",
                self.after,
                event.position,
                event.event_id,
                event.kind.map_or("?", Kind::type_name),
                event.id
            ));
        }
        self.after = self.after.max(event.position);
        self.found.log_events += 1;
        let Some(kind) = event.kind else { return };
        if !event.id.starts_with(&self.prefix) {
            return;
        }
        let versions = self.streams.entry((kind, event.id.clone())).or_default();
        let expected = versions.len() as u64 + 1;
        if event.version != expected {
            self.found.problem(format!(
                "{} {}: version {} at position {} follows version {} (versions must be contiguous)",
                kind.type_name(),
                event.id,
                event.version,
                event.position,
                expected - 1
            ));
        }
        versions.push(event.event_id);
        let located = Located {
            kind,
            id: event.id.clone(),
            version: event.version,
            position: event.position,
        };
        if let Some(first) = self.by_id.insert(event.event_id, located) {
            self.found.problem(format!(
                "event id {} is in the log twice: at position {} ({} {} version {}) and at position {}",
                event.event_id,
                first.position,
                first.kind.type_name(),
                first.id,
                first.version,
                event.position
            ));
        }
        if self.orders {
            if let Err(problem) = self.fold.apply(kind, event) {
                self.found.problem(problem);
            }
        }
    }
}

/// Waits (reading the log again) until the saga has decided every acknowledged order and
/// released the credit of every rejected or cancelled one, for at most `bound`.
async fn settle(client: &Client, index: &mut LogIndex, acked_orders: &[&str], bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        let open = index.fold.unsettled(acked_orders);
        if open.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for problem in open {
                index
                    .found
                    .problem(format!("after waiting {bound:?} for the saga: {problem}"));
            }
            return;
        }
        tokio::time::sleep(SETTLE_POLL).await;
        if let Err(problem) = index.read_to_head(client).await {
            index.found.problem(problem);
            return;
        }
    }
}

/// Check 3: every acknowledged event is in the log where its reply said.
fn check_acks(index: &mut LogIndex, acks: &[AckRecord]) {
    for record in acks {
        index.found.commands += 1;
        let name = format!("{} {}", record.kind.type_name(), record.id);
        if let Some(last) = record.ack.events.last() {
            if last.version != record.ack.version {
                index.found.problem(format!(
                    "{name}: the reply to {} says version {} but its last event has version {}",
                    record.command, record.ack.version, last.version
                ));
            }
        }
        for event in &record.ack.events {
            index.found.events += 1;
            let expected = Located {
                kind: record.kind,
                id: record.id.clone(),
                version: event.version,
                position: event.position,
            };
            match index.by_id.get(&event.event_id) {
                None => index.found.problem(format!(
                    "missing: {name} version {} (event {}, position {}), acknowledged to {}, is not in the log",
                    event.version, event.event_id, event.position, record.command
                )),
                Some(found) if *found != expected => index.found.problem(format!(
                    "{name}: event {} acknowledged to {} at version {} position {} is in the log as {} {} version {} position {}",
                    event.event_id,
                    record.command,
                    event.version,
                    event.position,
                    found.kind.type_name(),
                    found.id,
                    found.version,
                    found.position
                )),
                Some(_) => {}
            }
        }
    }
}

/// Check 4: each touched stream, read on its own, equals its events in the global log. The
/// streams are read [`STREAM_READS_CONCURRENT`] at a time, then compared.
async fn check_streams(client: &Client, index: &mut LogIndex, acks: &[AckRecord]) {
    let touched: BTreeSet<(Kind, &str)> = acks.iter().map(|a| (a.kind, a.id.as_str())).collect();
    let mut reads = futures::stream::iter(touched)
        .map(|(kind, id)| async move { (kind, id, read_stream(client, kind, id).await) })
        .buffer_unordered(STREAM_READS_CONCURRENT);
    while let Some((kind, id, read)) = reads.next().await {
        index.found.streams += 1;
        let name = format!("{} {id}", kind.type_name());
        let read = match read {
            Ok(read) => read,
            Err(problem) => {
                index.found.problem(format!("{name}: {problem}"));
                continue;
            }
        };
        let empty = Vec::new();
        let in_log = index.streams.get(&(kind, id.to_string())).unwrap_or(&empty);
        let mut problems = Vec::new();
        for (i, (version, event_id)) in read.iter().enumerate() {
            let logged = in_log.get(i);
            if *version != i as u64 + 1 {
                problems.push(format!(
                    "{name}: the stream read gives version {version} after version {i}"
                ));
                break;
            } else if logged != Some(event_id) {
                problems.push(format!(
                    "{name}: the stream read has event {event_id} at version {version}, the global log {}",
                    logged.map_or_else(|| "nothing".to_string(), Uuid::to_string)
                ));
            }
        }
        if read.len() != in_log.len() {
            problems.push(format!(
                "{name}: the stream read has {} events, the global log {}",
                read.len(),
                in_log.len()
            ));
        }
        for problem in problems {
            index.found.problem(problem);
        }
    }
}

/// The (version, event id) of every event of a stream, read on its own in pages.
async fn read_stream(client: &Client, kind: Kind, id: &str) -> Result<Vec<(u64, Uuid)>, String> {
    let mut events: Vec<(u64, Uuid)> = Vec::new();
    loop {
        let from = events.last().map_or(1, |(version, _)| version + 1);
        let page = client
            .stream(kind, id, from, PAGE_EVENTS)
            .await
            .map_err(|e| e.to_string())?;
        let last_before = events.last().map(|(version, _)| *version);
        events.extend(page.iter().map(|e| (e.version, e.event_id)));
        let last_after = events.last().map(|(version, _)| *version);
        // A short page is the end when the target honours the page size; otherwise only an
        // empty page is. A page that does not move on ends the read too (the comparison then
        // reports what is wrong).
        let short = page.len() < PAGE_EVENTS && client.honours_page_size();
        if page.is_empty() || last_after <= last_before || short {
            return Ok(events);
        }
    }
}

/// Check 5, first half: acknowledged orders were decided; approved ones hold credit.
fn check_orders(index: &mut LogIndex, acked_orders: &[&str]) {
    for order in acked_orders {
        index.found.orders += 1;
        let Some(fold) = index.fold.orders.get(*order) else {
            // Reported by the settling (and by the acknowledgement check).
            continue;
        };
        let holds = index
            .fold
            .customers
            .get(&fold.customer_id)
            .is_some_and(|c| c.open.contains_key(*order));
        if matches!(fold.status, OrderStatus::Approved | OrderStatus::Shipped) && !holds {
            index.found.problem(format!(
                "order {order} is {:?} but customer {} holds no credit for it",
                fold.status, fold.customer_id
            ));
        }
    }
}

/// Check 5, second half: each customer's summary equals the log's.
async fn check_summaries(
    client: &Client,
    index: &mut LogIndex,
    customers: &[String],
    wait: Duration,
) {
    let expected = index.fold.summaries();
    for customer in customers {
        index.found.customers += 1;
        let Some(want) = expected.get(customer.as_str()) else {
            index.found.problem(format!(
                "customer {customer}: no CustomerCreated in the log"
            ));
            continue;
        };
        let got = match summary_within(client, customer, index.after, wait).await {
            Ok(Some(got)) => got,
            Ok(None) => {
                index.found.problem(format!(
                    "customer {customer}: the read model has no summary (the log has one)"
                ));
                continue;
            }
            Err(e) => {
                index.found.problem(e.to_string());
                continue;
            }
        };
        for (field, want) in want.fields() {
            let path: Vec<&str> = field.split('.').collect();
            let got_value = path
                .iter()
                .try_fold(&got, |v, k| v.get(*k))
                .and_then(Value::as_u64);
            if got_value != Some(want) {
                index.found.problem(format!(
                    "customer {customer}: the read model says {field} = {}, the log says {want}",
                    got_value.map_or_else(|| "nothing".to_string(), |v| v.to_string())
                ));
            }
        }
    }
}

/// A customer's summary once the read model reached `position`; failed reads (a server's
/// bounded wait ran out, say) are retried until `wait` has passed.
async fn summary_within(
    client: &Client,
    customer: &str,
    position: u64,
    wait: Duration,
) -> Result<Option<Value>, crate::target::ReadError> {
    let deadline = Instant::now() + wait;
    loop {
        match client.customer_summary(customer, position, wait).await {
            Err(_) if Instant::now() < deadline => tokio::time::sleep(SETTLE_POLL).await,
            answer => return answer,
        }
    }
}

/// A customer as the log says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CustomerFold {
    credit_limit: Option<u64>,
    /// Open reservations: order id → amount.
    open: HashMap<String, u64>,
}

/// An order as the log says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OrderFold {
    customer_id: String,
    total: u64,
    status: OrderStatus,
}

/// A customer summary computed from the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ExpectedSummary {
    credit_limit: u64,
    available_credit: u64,
    total_shipped: u64,
    counts: [u64; 5],
}

impl ExpectedSummary {
    /// The fields compared, by their path in the summary's JSON.
    fn fields(&self) -> Vec<(String, u64)> {
        let mut fields = vec![
            ("credit_limit".to_string(), self.credit_limit),
            ("available_credit".to_string(), self.available_credit),
            ("total_shipped".to_string(), self.total_shipped),
        ];
        for (status, count) in OrderStatus::ALL.iter().zip(self.counts) {
            fields.push((format!("orders.{}", status_key(*status)), count));
        }
        fields
    }
}

/// The key of a status in `OrderCounts`' JSON.
fn status_key(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "pending",
        OrderStatus::Approved => "approved",
        OrderStatus::Rejected => "rejected",
        OrderStatus::Shipped => "shipped",
        OrderStatus::Cancelled => "cancelled",
    }
}

/// The customers and orders of the run, folded from the log.
#[derive(Debug, Default)]
struct Fold {
    customers: HashMap<String, CustomerFold>,
    orders: HashMap<String, OrderFold>,
}

impl Fold {
    fn apply(&mut self, kind: Kind, event: &LogEvent) -> Result<(), String> {
        let field = |name: &str| -> Result<&Value, String> {
            event.data.get(name).ok_or_else(|| {
                format!(
                    "{} {} at position {}: the {} has no `{name}` (or could not be decoded)",
                    kind.type_name(),
                    event.id,
                    event.position,
                    event.event_type
                )
            })
        };
        let number = |name: &str| -> Result<u64, String> {
            field(name)?.as_u64().ok_or_else(|| {
                format!(
                    "{} at position {}: `{name}` is not a whole number",
                    event.id, event.position
                )
            })
        };
        let text = |name: &str| -> Result<String, String> {
            field(name)?.as_str().map(str::to_string).ok_or_else(|| {
                format!(
                    "{} at position {}: `{name}` is not a string",
                    event.id, event.position
                )
            })
        };
        match (kind, event.event_type.as_str()) {
            (Kind::Customer, "CustomerCreated") => {
                let limit = number("credit_limit")?;
                self.customers
                    .entry(event.id.clone())
                    .or_default()
                    .credit_limit = Some(limit);
            }
            (Kind::Customer, "CreditReserved") => {
                let (order, amount) = (text("order_id")?, number("amount")?);
                self.customers
                    .entry(event.id.clone())
                    .or_default()
                    .open
                    .insert(order, amount);
            }
            (Kind::Customer, "CreditReleased") => {
                let order = text("order_id")?;
                self.customers
                    .entry(event.id.clone())
                    .or_default()
                    .open
                    .remove(&order);
            }
            (Kind::Order, "OrderCreated") => {
                let order = OrderFold {
                    customer_id: text("customer_id")?,
                    total: number("total")?,
                    status: OrderStatus::Pending,
                };
                self.orders.insert(event.id.clone(), order);
            }
            (Kind::Order, other) => {
                let status = match other {
                    "OrderApproved" => OrderStatus::Approved,
                    "OrderRejected" => OrderStatus::Rejected,
                    "OrderShipped" => OrderStatus::Shipped,
                    "OrderCancelled" => OrderStatus::Cancelled,
                    _ => return Ok(()),
                };
                let order = self.orders.get_mut(&event.id).ok_or_else(|| {
                    format!(
                        "order {} at position {}: {other} before OrderCreated",
                        event.id, event.position
                    )
                })?;
                order.status = status;
            }
            _ => {}
        }
        Ok(())
    }

    /// What keeps the saga from being settled, one sentence each.
    fn unsettled(&self, acked_orders: &[&str]) -> Vec<String> {
        let mut open = Vec::new();
        for order in acked_orders {
            match self.orders.get(*order) {
                None => open.push(format!("order {order} is not in the log")),
                Some(o) if o.status == OrderStatus::Pending => {
                    open.push(format!("order {order} was never decided (still Pending)"));
                }
                Some(_) => {}
            }
        }
        for (customer, fold) in &self.customers {
            for order in fold.open.keys() {
                let status = self.orders.get(order).map(|o| o.status);
                if matches!(status, Some(OrderStatus::Rejected | OrderStatus::Cancelled)) {
                    open.push(format!(
                        "customer {customer} still holds credit for order {order}, which is {:?}",
                        status.unwrap_or(OrderStatus::Pending)
                    ));
                }
            }
        }
        open
    }

    /// Each created customer's summary as the log says.
    fn summaries(&self) -> HashMap<&str, ExpectedSummary> {
        let mut out: HashMap<&str, ExpectedSummary> = HashMap::new();
        for (id, customer) in &self.customers {
            let Some(limit) = customer.credit_limit else {
                continue;
            };
            let reserved = customer
                .open
                .values()
                .fold(0u64, |sum, amount| sum.saturating_add(*amount));
            out.insert(
                id,
                ExpectedSummary {
                    credit_limit: limit,
                    available_credit: limit.saturating_sub(reserved),
                    ..ExpectedSummary::default()
                },
            );
        }
        for order in self.orders.values() {
            let Some(summary) = out.get_mut(order.customer_id.as_str()) else {
                continue;
            };
            if let Some(slot) = OrderStatus::ALL
                .iter()
                .position(|s| *s == order.status)
                .and_then(|i| summary.counts.get_mut(i))
            {
                *slot += 1;
            }
            if order.status == OrderStatus::Shipped {
                summary.total_shipped = summary.total_shipped.saturating_add(order.total);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(position: u64, kind: Kind, id: &str, version: u64, ty: &str, data: Value) -> LogEvent {
        LogEvent {
            event_id: Uuid::new_v4(),
            kind: Some(kind),
            id: id.into(),
            version,
            position,
            event_type: ty.into(),
            data,
        }
    }

    #[test]
    fn gaps_duplicates_and_version_jumps_are_found() {
        let mut index = LogIndex::new("r-", false);
        let first = event(1, Kind::Account, "r-a", 1, "Deposited", Value::Null);
        let mut again = event(2, Kind::Account, "r-a", 2, "Deposited", Value::Null);
        again.event_id = first.event_id;
        index.add(&first);
        index.add(&again);
        index.add(&event(4, Kind::Account, "r-a", 4, "Deposited", Value::Null));
        index.add(&event(
            5,
            Kind::Account,
            "other",
            9,
            "Deposited",
            Value::Null,
        ));
        let found = index.finish();
        assert!(!found.ok);
        assert_eq!(found.problems_total, 3, "{:#?}", found.problems);
        assert_eq!(found.log_events, 4);
    }

    #[test]
    fn acknowledged_events_must_be_where_the_reply_said() {
        let mut index = LogIndex::new("r-", false);
        let logged = event(1, Kind::Account, "r-a", 1, "Deposited", Value::Null);
        let ack = |event_id, position| AckRecord {
            kind: Kind::Account,
            id: "r-a".into(),
            command: "Deposit",
            ack: Ack {
                version: 1,
                events: vec![crate::target::EventRef {
                    event_id,
                    version: 1,
                    position,
                }],
            },
        };
        let acks = [
            ack(logged.event_id, 1),
            ack(logged.event_id, 2),
            ack(Uuid::new_v4(), 1),
        ];
        index.add(&logged);
        check_acks(&mut index, &acks);
        let found = index.finish();
        assert_eq!(found.problems_total, 2, "{:#?}", found.problems);
        assert!(found.problems[1].starts_with("missing: Account r-a version 1"));
    }

    #[test]
    fn the_fold_follows_the_saga() -> Result<(), String> {
        let mut fold = Fold::default();
        let events = [
            event(
                1,
                Kind::Customer,
                "c",
                1,
                "CustomerCreated",
                json!({"credit_limit": 100}),
            ),
            event(
                2,
                Kind::Order,
                "o1",
                1,
                "OrderCreated",
                json!({"customer_id": "c", "total": 60}),
            ),
            event(
                3,
                Kind::Order,
                "o2",
                1,
                "OrderCreated",
                json!({"customer_id": "c", "total": 50}),
            ),
            event(
                4,
                Kind::Customer,
                "c",
                2,
                "CreditReserved",
                json!({"order_id": "o1", "amount": 60}),
            ),
            event(
                5,
                Kind::Customer,
                "c",
                3,
                "CreditLimitExceeded",
                json!({"order_id": "o2"}),
            ),
            event(6, Kind::Order, "o1", 2, "OrderApproved", Value::Null),
            event(7, Kind::Order, "o1", 3, "OrderShipped", Value::Null),
        ];
        for e in &events {
            fold.apply(e.kind.unwrap_or(Kind::Account), e)?;
        }
        assert_eq!(fold.unsettled(&["o1", "o2"]).len(), 1);
        fold.apply(
            Kind::Order,
            &event(
                8,
                Kind::Order,
                "o2",
                2,
                "OrderRejected",
                json!({"reason": "x"}),
            ),
        )?;
        assert!(fold.unsettled(&["o1", "o2"]).is_empty());
        let summary = fold.summaries()["c"];
        assert_eq!(summary.available_credit, 40);
        assert_eq!(summary.total_shipped, 60);
        assert_eq!(summary.counts, [0, 0, 1, 1, 0]);
        Ok(())
    }
}
