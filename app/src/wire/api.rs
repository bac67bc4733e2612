//! The bodies the API answers besides envelopes: command replies, states, pages of events,
//! subscribers, parked events, read-model pages, health and problem details. Each is a typed
//! struct the handler serializes and the OpenAPI document derives its schema from
//! (`http/openapi/schemas.rs`), so the two cannot drift.
//!
//! The generic members (`state`, `events`, ...) are the aggregate's own types; the document
//! derives each struct once, by its own name, and narrows the generic member per aggregate type
//! (`CustomerStateReply`: a `StateReply` whose `state` is a `Customer`).

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use super::time::Rfc3339;

/// The outcome of an accepted command (`POST /v1/{aggregate}/{id}/commands`).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "CommandReply")]
pub struct CommandReply<'a, E> {
    /// The aggregate id.
    pub id: &'a str,
    /// The aggregate's version after the command (the `ETag`).
    pub version: u64,
    /// The position of the command's last event: pass it as `min_position` to read your
    /// writes. `null` if the command recorded nothing.
    #[schemars(range(min = 1))]
    pub position: Option<u64>,
    /// The events the command recorded (none: it changed nothing).
    pub events: Vec<E>,
}

/// The state of an aggregate at a version (`GET /v1/{aggregate}/{id}`).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "StateReply")]
pub struct StateReply<'a, S> {
    /// The aggregate id.
    pub id: &'a str,
    /// The version of the state (the `ETag`).
    #[schemars(range(min = 1))]
    pub version: u64,
    /// The state.
    pub state: S,
}

/// A page of the events of one aggregate, oldest first (`GET /v1/{aggregate}/{id}/events`).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "History")]
pub struct History<'a, E> {
    /// The aggregate id.
    pub id: &'a str,
    /// The events.
    pub events: Vec<E>,
    /// The `from` of the next page; `null` when this page was not full (the end of the
    /// stream, for now).
    #[schemars(range(min = 2))]
    pub next_from: Option<u64>,
}

/// A page of the global log, by position (`GET /v1/events`).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "LogPage")]
pub struct LogPage<E> {
    /// The events.
    pub events: Vec<E>,
    /// The `after` of the next page: the last position of this page, or the request's `after`
    /// if it is empty.
    pub next_after: u64,
    /// The log's last position when the page was read.
    pub head: u64,
}

/// What a subscriber is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriberState {
    /// Reading the log from its checkpoint towards the head.
    CatchingUp,
    /// At the head, fed by the journal.
    Live,
    /// A rebuild from position 0, beside the live projection.
    Rebuilding,
    /// Stopped (the server is shutting down).
    Stopped,
    /// Waiting to retry after a store error (`reason`): it resumes by itself.
    Retrying,
    /// Failed (`reason`).
    Failed,
    /// Another node sharing the database runs it (PostgreSQL backend); this node takes over
    /// if that one stops.
    Standby,
}

/// A subscriber: a projection, a process manager, or a rebuild in progress (named
/// `{projection}#rebuild`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Subscriber<'a> {
    /// Its name.
    pub name: &'a str,
    /// The last position it has processed.
    pub checkpoint: u64,
    /// The log's head.
    pub head: u64,
    /// Events behind the head.
    pub lag_events: u64,
    /// Seconds since the oldest event it has not processed was recorded (0 at the head).
    #[schemars(range(min = 0))]
    pub lag_seconds: f64,
    /// What it is doing.
    pub status: SubscriberState,
    /// Why it failed (status `failed`), or the store error it waits to retry after (status
    /// `retrying`: it resumes by itself).
    pub reason: Option<&'a str>,
    /// The node that runs it, when several nodes share a PostgreSQL database
    /// (`store.postgres_node_id`); null on the embedded store.
    pub owner: Option<&'a str>,
    /// The owner's fencing epoch: it grows with every takeover, and a commit of an older owner
    /// is refused.
    pub owner_epoch: Option<u64>,
}

/// Every subscriber (`GET /v1/projections`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Subscribers<'a> {
    /// Projections, process managers and rebuilds in progress.
    pub subscribers: Vec<Subscriber<'a>>,
}

/// `rebuilding`.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rebuilding {
    /// The rebuild has started.
    Rebuilding,
}

/// A rebuild started (`POST /v1/projections/{name}/rebuild`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct RebuildStarted<'a> {
    /// The projection.
    pub name: &'a str,
    /// Always `rebuilding`.
    pub status: Rebuilding,
    /// What happens next.
    pub detail: String,
}

/// An event a subscriber could not handle and set aside.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ParkedEvent<'a> {
    /// Its position in the log.
    #[schemars(range(min = 1))]
    pub position: u64,
    /// The handler's last error.
    pub reason: &'a str,
    /// How many times the handler tried.
    pub attempts: u32,
    /// When it was parked.
    pub parked_at: Rfc3339,
}

/// The events a subscriber has parked (`GET /v1/projections/{name}/parked`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ParkedEvents<'a> {
    /// The subscriber.
    pub name: &'a str,
    /// Its parked events, by position.
    pub parked: Vec<ParkedEvent<'a>>,
}

/// `retried`.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Retried {
    /// The parked event was handled.
    Retried,
}

/// A parked event handled again (`POST /v1/projections/{name}/parked/{position}/retry`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ParkedRetried<'a> {
    /// The subscriber.
    pub name: &'a str,
    /// The event's position.
    pub position: u64,
    /// Always `retried`.
    pub status: Retried,
}

/// The orders of a customer (`GET /v1/views/customers/{id}/orders`).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "CustomerOrders")]
pub struct CustomerOrders<'a, O> {
    /// The customer.
    pub customer_id: &'a str,
    /// In order id order; empty for an unknown customer.
    pub orders: Vec<O>,
}

/// A page of valuable customers (`GET /v1/views/valuable-customers`).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "ValuableCustomers")]
pub struct ValuableCustomers<C> {
    /// Oldest first.
    pub customers: Vec<C>,
    /// The `after` of the next page; null when there is none.
    pub next_after: Option<String>,
}

/// `live`.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LiveStatus {
    /// The process runs.
    Live,
}

/// `GET /livez`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Live {
    /// Always `live`.
    pub status: LiveStatus,
}

/// `ready`.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    /// Every readiness check passes.
    Ready,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Ready {
    /// Always `ready`.
    pub status: ReadyStatus,
    /// The log's last position (null while the store opens).
    pub head_position: Option<u64>,
    /// Free bytes on the disk holding the store (null if it cannot be read).
    pub disk_free_bytes: Option<u64>,
}

/// An error, as RFC 9457 problem details (`application/problem+json`).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Problem")]
pub struct Problem<'a> {
    /// What kind of problem: a link to its section of `/docs`.
    #[serde(rename = "type")]
    #[schemars(extend("format" = "uri-reference"))]
    pub type_uri: &'a str,
    /// The kind's fixed summary.
    pub title: &'a str,
    /// The HTTP status.
    #[schemars(range(min = 400, max = 599))]
    pub status: u16,
    /// What went wrong this time.
    pub detail: &'a str,
    /// The `Retry-After` header's value, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64", range(min = 1))]
    pub retry_after_seconds: Option<u64>,
    /// The members of the kind (`current_version` of a conflict, `rejection` of a business
    /// refusal...): each kind's schema lists them.
    #[serde(flatten)]
    pub extensions: &'a Map<String, Value>,
}

/// The console's overview (`GET /v1/console/overview`): counters the page turns into rates by
/// polling, recent latency, the journal, the disk, live actors and the subscribers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Overview<'a> {
    /// When this was taken.
    pub time: Rfc3339,
    /// Commands answered since the server started (every outcome).
    pub commands_total: u64,
    /// Command latency over about the last 10 seconds.
    pub command_latency_ms: Latency,
    /// The journal's counters and health.
    pub journal: JournalOverview,
    /// Bytes free on the disk holding the store (null on PostgreSQL, or if it cannot be read).
    pub disk_free_bytes: Option<u64>,
    /// Aggregate actors alive now.
    pub live_actors: u64,
    /// Every subscriber, as `GET /v1/projections` lists them.
    pub subscribers: Vec<Subscriber<'a>>,
}

/// Latency quantiles in milliseconds, interpolated within the histogram's buckets; null
/// without a command in the window.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Latency {
    /// The median.
    #[schemars(range(min = 0))]
    pub p50: Option<f64>,
    /// The 99th percentile.
    #[schemars(range(min = 0))]
    pub p99: Option<f64>,
}

/// The journal in the overview.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JournalOverview {
    /// Appends acknowledged since the store was opened (commits and recorded outcomes).
    pub appends_total: u64,
    /// Events committed since then.
    pub events_total: u64,
    /// Syncs (`fsync`) since then.
    pub fsyncs_total: u64,
    /// `ok`, `failed` or `closed`.
    pub health: JournalHealth,
}

/// The journal's health.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JournalHealth {
    /// Accepting writes.
    Ok,
    /// A write or sync failed: nothing more is acknowledged until the store is reopened.
    Failed,
    /// Shut down.
    Closed,
}

/// The chain of an event (`GET /v1/console/chain/{event_id}`): the events that caused it and
/// those it caused, and those of its correlation, in log order.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Chain")]
pub struct Chain<E> {
    /// The event asked about.
    pub event_id: String,
    /// A page of the chain's events, in log order.
    pub events: Vec<E>,
    /// The `after` of the next page (the last position of this one), or null on the last.
    pub next_after: Option<u64>,
    /// Whether the chain holds more events than it walks (at most 10,000).
    pub truncated: bool,
    /// The deadlines a process manager set because of one of this page's events (or for
    /// their correlation) that have not fired yet, soonest first.
    pub deadlines: Vec<ChainDeadline>,
}

/// A pending deadline in a chain: the command a process manager will send when it is due,
/// unless something cancels it first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ChainDeadline {
    /// When it is due.
    pub due: Rfc3339,
    /// The command id the command will carry.
    pub command_id: String,
    /// The event that set it (its id).
    pub causation_id: String,
    /// The target aggregate type.
    pub aggregate: String,
    /// The target aggregate id.
    pub id: String,
    /// The command, converted from its stored CBOR.
    pub command: Value,
}

/// Ids of one aggregate type (`GET /v1/console/aggregates/{aggregate}`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct AggregateIds {
    /// The ids that start with the prefix asked for, shortest first, then in byte order.
    pub ids: Vec<String>,
}
