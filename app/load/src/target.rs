//! The two targets behind one [`Client`]: a [`Runtime`] in this process, or a running server
//! over HTTP ([`crate::http`]). The driver and the verifier only see what both have in common:
//! send a command and learn its [`Outcome`], read the global log and a stream as [`LogEvent`]s,
//! and read a customer summary once the read model has reached a position.
//!
//! A client lives on one thread (the HTTP client is not `Send`); each client thread builds its
//! own from a [`Connect`], which is `Send`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::rc::Rc;
use std::time::Duration;

use annals::{ExecuteError, Executed, Position, RecordedEvent, Runtime, StreamId, Version};
use annals_domain::bank::Account;
use annals_domain::customer::Customer;
use annals_domain::order::Order;
use annals_domain::views;
use serde_json::Value;
use uuid::Uuid;

use crate::http::HttpClient;
use crate::workload::{Command, Kind, Request};

/// One committed event, as a command's reply names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventRef {
    /// The event's id.
    pub(crate) event_id: Uuid,
    /// Its version in its stream.
    pub(crate) version: u64,
    /// Its position in the global log.
    pub(crate) position: u64,
}

/// What an acknowledged command committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    /// The aggregate's version after the command.
    pub(crate) version: u64,
    /// The committed events (none, for a command that changed nothing).
    pub(crate) events: Vec<EventRef>,
}

/// Why a command failed (as opposed to a business rejection, which is an answer). The names
/// are the keys of `failed_by_kind` in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum FailKind {
    /// No answer within `--timeout`: the outcome is unknown.
    Timeout,
    /// A queue was full (runtime `Overloaded`; HTTP 429 or 503).
    Overloaded,
    /// A version conflict (HTTP 409); the harness sends no expected version, so this is a
    /// finding.
    Conflict,
    /// The connection could not be made or broke.
    Connect,
    /// Another 4xx status: the server refused the request as malformed.
    ClientError,
    /// Another 5xx status.
    ServerError,
    /// The runtime is shutting down.
    ShuttingDown,
    /// The runtime could not tell whether the command was committed.
    OutcomeUnknown,
    /// The store failed.
    Store,
    /// The reply could not be understood.
    Protocol,
    /// Anything else.
    Other,
}

impl FailKind {
    /// The stable name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FailKind::Timeout => "timeout",
            FailKind::Overloaded => "overloaded",
            FailKind::Conflict => "conflict",
            FailKind::Connect => "connect",
            FailKind::ClientError => "client_error",
            FailKind::ServerError => "server_error",
            FailKind::ShuttingDown => "shutting_down",
            FailKind::OutcomeUnknown => "outcome_unknown",
            FailKind::Store => "store",
            FailKind::Protocol => "protocol",
            FailKind::Other => "other",
        }
    }
}

/// A failed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// What kind of failure.
    pub(crate) kind: FailKind,
    /// The pause the target asked for before retrying, if it did.
    pub(crate) retry_after: Option<Duration>,
    /// What happened, for the report's examples.
    pub(crate) detail: String,
}

impl Failure {
    /// A failure without a retry hint.
    pub(crate) fn new(kind: FailKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            retry_after: None,
            detail: detail.into(),
        }
    }
}

/// What became of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Committed (and, in durable mode, fsynced).
    Acked(Ack),
    /// Refused for a business reason; the rejection as the target describes it.
    Rejected(String),
    /// Not executed, or its outcome is unknown.
    Failed(Failure),
}

/// An event of the global log or of a stream, the same for both targets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogEvent {
    /// The event's id.
    pub(crate) event_id: Uuid,
    /// The aggregate type, if it is one the harness knows.
    pub(crate) kind: Option<Kind>,
    /// The aggregate id.
    pub(crate) id: String,
    /// The version in its stream.
    pub(crate) version: u64,
    /// The position in the global log.
    pub(crate) position: u64,
    /// The event type name (`"OrderApproved"`).
    pub(crate) event_type: String,
    /// The payload as JSON (the domain's serde shape), when asked for and decodable;
    /// [`Value::Null`] otherwise.
    pub(crate) data: Value,
}

/// Why a read (log, stream, view) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {what}: {reason}")]
pub(crate) struct ReadError {
    /// What was read.
    pub(crate) what: String,
    /// Why it failed.
    pub(crate) reason: String,
}

impl ReadError {
    /// A read error.
    pub(crate) fn new(what: impl Into<String>, reason: impl Display) -> ReadError {
        ReadError {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// How to build a client on a thread.
#[derive(Debug, Clone)]
pub(crate) enum Connect {
    /// Share this runtime.
    Inproc(Runtime),
    /// Connect to a server.
    Http {
        /// `http://host:port`.
        base: String,
        /// Most connections the client opens (one per concurrent request).
        connections: usize,
        /// Bound of one request.
        timeout: Duration,
    },
}

/// A client of the target, for one thread.
#[derive(Debug, Clone)]
pub(crate) enum Client {
    /// In-process.
    Inproc(Runtime),
    /// Over HTTP.
    Http(Rc<HttpClient>),
}

impl Client {
    /// Builds the client (on the thread that will use it).
    pub(crate) fn connect(how: &Connect) -> Client {
        match how {
            Connect::Inproc(runtime) => Client::Inproc(runtime.clone()),
            Connect::Http {
                base,
                connections,
                timeout,
            } => Client::Http(Rc::new(HttpClient::new(base, *connections, *timeout))),
        }
    }

    /// Sends one command and waits at most `timeout` for its outcome.
    pub(crate) async fn send(&self, request: &Request, timeout: Duration) -> Outcome {
        let answer = async {
            match self {
                Client::Inproc(runtime) => execute(runtime, request).await,
                Client::Http(http) => http.command(request).await,
            }
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Failed(Failure::new(
                FailKind::Timeout,
                format!("no answer within {timeout:?}"),
            )),
        }
    }

    /// Checks that the target accepts commands (HTTP: `GET /readyz`, waiting at most `wait`
    /// for a server that is starting).
    pub(crate) async fn ready(&self, wait: Duration) -> Result<(), ReadError> {
        match self {
            Client::Inproc(runtime) => match runtime.health() {
                annals::store::StoreHealth::Ready => Ok(()),
                other => Err(ReadError::new("the runtime's health", format!("{other:?}"))),
            },
            Client::Http(http) => http.ready(wait).await,
        }
    }

    /// The position of the last acknowledged event.
    pub(crate) async fn head(&self) -> Result<u64, ReadError> {
        match self {
            Client::Inproc(runtime) => Ok(runtime.head_position().0),
            Client::Http(http) => http.head().await,
        }
    }

    /// At most `limit` events of the global log after position `after`, in position order.
    /// With `with_data`, each event's payload is decoded to JSON (in-process, only the
    /// customer and order events: the verifier folds those).
    pub(crate) async fn log_after(
        &self,
        after: u64,
        limit: usize,
        with_data: bool,
    ) -> Result<Vec<LogEvent>, ReadError> {
        match self {
            Client::Inproc(runtime) => {
                let what = || format!("the global log after position {after}");
                let recorded = runtime
                    .read_all(Position(after.saturating_add(1)), limit)
                    .map_err(|e| ReadError::new(what(), e))?;
                Ok(recorded.iter().map(|r| log_event(r, with_data)).collect())
            }
            Client::Http(http) => http.log_after(after, limit).await,
        }
    }

    /// Whether a page shorter than the `limit` asked for is the end of what there is (the
    /// runtime's reads; a server that accepted our page size).
    pub(crate) fn honours_page_size(&self) -> bool {
        match self {
            Client::Inproc(_) => true,
            Client::Http(http) => http.honours_page_size(),
        }
    }

    /// At most `limit` events of aggregate `kind`/`id` from version `from`.
    pub(crate) async fn stream(
        &self,
        kind: Kind,
        id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, ReadError> {
        match self {
            Client::Inproc(runtime) => {
                let what = || format!("stream {} {id}", kind.type_name());
                let stream =
                    StreamId::new(kind.type_name(), id).map_err(|e| ReadError::new(what(), e))?;
                let recorded = runtime
                    .read_stream(&stream, Version(from), None, limit)
                    .map_err(|e| ReadError::new(what(), e))?;
                Ok(recorded.iter().map(|r| log_event(r, false)).collect())
            }
            Client::Http(http) => http.stream(kind, id, from, limit).await,
        }
    }

    /// The summary of customer `id` (`None`: unknown) once the customer-summaries read model
    /// has reached `position`, waiting at most `wait` in-process (the server applies its own
    /// bound).
    pub(crate) async fn customer_summary(
        &self,
        id: &str,
        position: u64,
        wait: Duration,
    ) -> Result<Option<Value>, ReadError> {
        match self {
            Client::Inproc(runtime) => {
                let what = || format!("the summary of customer {id}");
                runtime
                    .wait_for(views::CUSTOMER_SUMMARIES, Position(position), wait)
                    .await
                    .map_err(|e| ReadError::new(what(), e))?;
                let summary =
                    views::customer_summary(runtime, id).map_err(|e| ReadError::new(what(), e))?;
                summary
                    .map(serde_json::to_value)
                    .transpose()
                    .map_err(|e| ReadError::new(what(), e))
            }
            Client::Http(http) => http.customer_summary(id, position).await,
        }
    }
}

/// Executes a command in-process.
async fn execute(runtime: &Runtime, request: &Request) -> Outcome {
    let id = request.id.as_str();
    match &request.command {
        Command::Account(c) => outcome(runtime.execute::<Account>(id, c.clone()).await),
        Command::Customer(c) => outcome(runtime.execute::<Customer>(id, c.clone()).await),
        Command::Order(c) => outcome(runtime.execute::<Order>(id, c.clone()).await),
    }
}

/// The outcome of an in-process execution.
fn outcome<E, R: Display>(result: Result<Result<Executed<E>, R>, ExecuteError>) -> Outcome {
    match result {
        Ok(Ok(executed)) => Outcome::Acked(Ack {
            version: executed.version.0,
            events: executed
                .events
                .iter()
                .map(|e| EventRef {
                    event_id: e.event_id,
                    version: e.version.0,
                    position: e.position.0,
                })
                .collect(),
        }),
        Ok(Err(rejection)) => Outcome::Rejected(rejection.to_string()),
        Err(error) => {
            let kind = match &error {
                ExecuteError::Overloaded { retry_after, .. } => {
                    return Outcome::Failed(Failure {
                        kind: FailKind::Overloaded,
                        retry_after: Some(*retry_after),
                        detail: error.to_string(),
                    })
                }
                ExecuteError::Conflict { .. } => FailKind::Conflict,
                ExecuteError::ShuttingDown => FailKind::ShuttingDown,
                ExecuteError::OutcomeUnknown(_) => FailKind::OutcomeUnknown,
                ExecuteError::Store(_) => FailKind::Store,
                _ => FailKind::Other,
            };
            Outcome::Failed(Failure::new(kind, error.to_string()))
        }
    }
}

/// A stored event as a [`LogEvent`]; the payload is decoded only when asked for, and only for
/// customers and orders.
fn log_event(recorded: &RecordedEvent, with_data: bool) -> LogEvent {
    let kind = Kind::parse(recorded.stream.aggregate_type());
    let data = match kind {
        _ if !with_data => Value::Null,
        Some(Kind::Customer) => first_json(recorded.upcast::<Customer>().ok()),
        Some(Kind::Order) => first_json(recorded.upcast::<Order>().ok()),
        Some(Kind::Account) | None => Value::Null,
    };
    LogEvent {
        event_id: recorded.event_id,
        kind,
        id: recorded.stream.aggregate_id().to_string(),
        version: recorded.version.0,
        position: recorded.position.0,
        event_type: recorded.event_type.to_string(),
        data,
    }
}

/// The JSON of the first upcast event (the current schemas upcast one stored event to one).
fn first_json<E: serde::Serialize>(events: Option<Vec<annals::Envelope<E>>>) -> Value {
    events
        .and_then(|events| events.into_iter().next())
        .and_then(|event| serde_json::to_value(&event.payload).ok())
        .unwrap_or(Value::Null)
}

/// Failures counted by kind, with one example message per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Failures {
    /// Count per kind.
    pub(crate) counts: BTreeMap<FailKind, u64>,
    /// The first message seen per kind.
    pub(crate) examples: BTreeMap<FailKind, String>,
}

impl Failures {
    /// Counts one failure.
    pub(crate) fn add(&mut self, failure: &Failure) {
        *self.counts.entry(failure.kind).or_default() += 1;
        self.examples
            .entry(failure.kind)
            .or_insert_with(|| failure.detail.clone());
    }

    /// Adds another thread's failures.
    pub(crate) fn merge(&mut self, other: Failures) {
        for (kind, n) in other.counts {
            *self.counts.entry(kind).or_default() += n;
        }
        for (kind, example) in other.examples {
            self.examples.entry(kind).or_insert(example);
        }
    }
}
