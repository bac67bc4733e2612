//! The aggregate routes: commands, current and temporal state, history.
//!
//! The routes are generic over the aggregate types the server registers: [`ApiAggregate`] is
//! the object-safe face of one `A: Aggregate` (its commands parsed from JSON, its state and
//! events rendered as JSON), and [`Aggregates`] maps route names (`customers`) to them. Adding
//! an aggregate type to the service is one line in [`Aggregates::domain`], which also says
//! which of its commands are *process-only*: sent by a process manager (the `order-credit`
//! saga), refused on the public API with 403 unless the token has the `admin` scope.
//!
//! A command goes through, in order: the store must be open (503); its body is read — JSON
//! only (415), at most `server.body_bytes_max` (413), within `server.body_read_timeout_ms`
//! (408, connection closed) — *before* it takes one of the `server.in_flight_max` slots, so
//! clients that trickle bodies hold no slot; a process-only command needs `admin` (403); the
//! headers and the id are checked (400, 412); then it takes a slot (503 when none is free) and
//! is executed within `server.request_deadline_ms` — past it the outcome is unknown (503: retry
//! with the same `Idempotency-Key`).
//!
//! Reads of state and history run on the blocking pool ([`AppState::read`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest, HttpResponse};
use annals::{Aggregate, CommandId, ExecuteOptions, RecordedEvent, Runtime, StreamId, Version};
use futures::future::LocalBoxFuture;
use futures::StreamExt as _;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::access::Grant;
use super::json::{parse_rfc3339, typed_envelope};
use super::metrics::Outcome;
use super::problem::{Kind, Problem};
use super::{AppState, Served};
use crate::wire;

/// A command's reply, before it becomes a response.
#[derive(Debug)]
pub struct CommandReply {
    /// The aggregate's version after the command.
    pub version: u64,
    /// `true` when this is the stored outcome of an earlier request with the same
    /// idempotency key (sent as the `Idempotent-Replayed: true` header; the body is the same).
    pub replayed: bool,
    /// The body (JSON).
    pub body: bytes::Bytes,
}

/// One aggregate type as the API sees it.
pub trait ApiAggregate: Send + Sync {
    /// The route segment (`customers`).
    fn route(&self) -> &'static str;
    /// The aggregate type name in the store (`Customer`).
    fn type_name(&self) -> &'static str;
    /// The command type names the aggregate accepts, for metrics labels and the docs.
    fn command_types(&self) -> &[&'static str];
    /// The command types only a process manager may send (a subset of
    /// [`command_types`](ApiAggregate::command_types)): refused with 403 on the public API
    /// unless the token has the `admin` scope.
    fn process_only_commands(&self) -> &[&'static str];
    /// The command type named by a JSON body's `type` member, if the aggregate knows it.
    fn command_type(&self, body: &[u8]) -> Option<&'static str> {
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        let tag: Tag<'_> = serde_json::from_slice(body).ok()?;
        self.command_types()
            .iter()
            .copied()
            .find(|t| *t == tag.kind)
    }
    /// Whether `body` is a command of the aggregate (400 otherwise), without executing it.
    fn validate(&self, body: &[u8]) -> Result<(), Problem>;
    /// Parses and executes a command. Business rejections are `Err` with [`Kind::Rejected`].
    fn execute<'a>(
        &'a self,
        runtime: &'a Runtime,
        id: &'a str,
        body: &'a [u8],
        options: ExecuteOptions,
    ) -> LocalBoxFuture<'a, Result<CommandReply, Problem>>;
    /// The state of `id` at `version` (`None`: the head), as `(version, state)`.
    fn state(
        &self,
        runtime: &Runtime,
        id: &str,
        at: StateAt,
    ) -> Result<Option<(u64, Value)>, Problem>;
    /// Renders a stored event of this type (upcast to the current schema: possibly several).
    fn render(&self, event: &RecordedEvent) -> Result<Vec<Value>, Problem>;
}

/// Which state a query asks for.
#[derive(Debug, Clone, Copy)]
pub enum StateAt {
    /// The current state.
    Head,
    /// As of a version.
    Version(Version),
    /// As of an instant.
    Instant(annals::Timestamp),
}

/// The [`ApiAggregate`] of `A`.
#[derive(Debug)]
pub struct Api<A> {
    route: &'static str,
    command_types: Vec<&'static str>,
    process_only: Vec<&'static str>,
    _aggregate: std::marker::PhantomData<fn() -> A>,
}

impl<A: Aggregate> Api<A> {
    /// `A` served under `/v1/{route}`. `public` and `process_only` are the variant names of its
    /// command enum (the `type` tag of the JSON body): those anyone with the `commands` scope
    /// may send, and those only a process manager sends (public only with the `admin` scope).
    pub fn new(
        route: &'static str,
        public: &[&'static str],
        process_only: &[&'static str],
    ) -> Api<A> {
        Api {
            route,
            command_types: public.iter().chain(process_only).copied().collect(),
            process_only: process_only.to_vec(),
            _aggregate: std::marker::PhantomData,
        }
    }
}

impl<A: Aggregate> Api<A> {
    fn parse(&self, body: &[u8]) -> Result<A::Command, Problem> {
        parse_command(body).map_err(|e| {
            Problem::bad_request(format!("invalid {} command: {e}", A::TYPE))
                .with("command_types", self.command_types.clone())
        })
    }
}

impl<A: Aggregate> ApiAggregate for Api<A> {
    fn route(&self) -> &'static str {
        self.route
    }

    fn type_name(&self) -> &'static str {
        A::TYPE
    }

    fn command_types(&self) -> &[&'static str] {
        &self.command_types
    }

    fn process_only_commands(&self) -> &[&'static str] {
        &self.process_only
    }

    fn validate(&self, body: &[u8]) -> Result<(), Problem> {
        self.parse(body).map(|_| ())
    }

    fn execute<'a>(
        &'a self,
        runtime: &'a Runtime,
        id: &'a str,
        body: &'a [u8],
        options: ExecuteOptions,
    ) -> LocalBoxFuture<'a, Result<CommandReply, Problem>> {
        Box::pin(async move {
            let command = self.parse(body)?;
            let answered = runtime.execute_answered::<A>(id, command, options).await?;
            match answered.result {
                Ok(executed) => {
                    let reply = wire::api::CommandReply {
                        id,
                        version: executed.version.0,
                        position: executed.position.map(|p| p.0),
                        events: executed.events.iter().map(wire::Envelope::typed).collect(),
                    };
                    let body = serde_json::to_vec(&reply).map_err(|e| {
                        Problem::internal(format!("cannot render the reply as JSON: {e}"))
                    })?;
                    Ok(CommandReply {
                        version: executed.version.0,
                        replayed: executed.deduplicated,
                        body: body.into(),
                    })
                }
                Err(rejection) => {
                    let rendered = serde_json::to_value(&rejection).unwrap_or(Value::Null);
                    let problem = Problem::new(Kind::Rejected, rejection.to_string())
                        .with("rejection", rendered);
                    Err(if answered.replayed {
                        problem.replayed()
                    } else {
                        problem
                    })
                }
            }
        })
    }

    fn state(
        &self,
        runtime: &Runtime,
        id: &str,
        at: StateAt,
    ) -> Result<Option<(u64, Value)>, Problem> {
        let state = match at {
            StateAt::Head => runtime.state::<A>(id)?,
            StateAt::Version(v) => runtime.state_at::<A>(id, Some(v))?,
            StateAt::Instant(t) => runtime.state_as_of::<A>(id, t)?,
        };
        state
            .map(|s| {
                serde_json::to_value(&s.state)
                    .map(|json| (s.version.0, json))
                    .map_err(|e| Problem::internal(format!("cannot render state as JSON: {e}")))
            })
            .transpose()
    }

    fn render(&self, event: &RecordedEvent) -> Result<Vec<Value>, Problem> {
        let events = event.upcast::<A>().map_err(|e| {
            Problem::internal(format!(
                "cannot decode the event at position {}: {e}",
                event.position
            ))
        })?;
        events.iter().map(typed_envelope).collect()
    }
}

/// The aggregate types served, by route.
#[derive(Default)]
pub struct Aggregates {
    by_route: BTreeMap<&'static str, Arc<dyn ApiAggregate>>,
}

impl std::fmt::Debug for Aggregates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_route.keys()).finish()
    }
}

impl Aggregates {
    /// The reference domain: `customers`, `orders`, and the benchmark's `accounts`.
    ///
    /// The `order-credit` saga alone reserves and releases credit and approves or rejects
    /// orders: a client that could send those would ship an order its customer's credit does
    /// not cover (approve a fresh order before the saga has reserved anything, or release the
    /// credit of an approved one).
    pub fn domain() -> Aggregates {
        use annals_domain::{bank, customer, order};
        let mut all = Aggregates::default();
        all.add(Api::<customer::Customer>::new(
            "customers",
            &["CreateCustomer"],
            customer::PROCESS_ONLY_COMMANDS,
        ));
        all.add(Api::<order::Order>::new(
            "orders",
            &["CreateOrder", "ShipOrder", "CancelOrder"],
            order::PROCESS_ONLY_COMMANDS,
        ));
        all.add(Api::<bank::Account>::new(
            "accounts",
            &["Deposit", "Withdraw"],
            &[],
        ));
        all
    }

    /// Serves `api` under `/v1/{api.route()}`.
    ///
    /// # Panics
    /// If the route is already taken — by another aggregate type, or by a fixed route of
    /// [`ROUTES`](super::ROUTES) (`events`, `projections`, `views`): the server's own
    /// registration is wrong, which its start must not hide.
    pub fn add(&mut self, api: impl ApiAggregate + 'static) {
        let route = api.route();
        let fixed = super::ROUTES.iter().any(|r| {
            !r.pattern.starts_with(super::AGGREGATE_PREFIX)
                && r.pattern
                    .strip_prefix("/v1/")
                    .and_then(|rest| rest.split('/').next())
                    == Some(route)
        });
        assert!(
            !fixed && !self.by_route.contains_key(route),
            "the route /v1/{route} is already taken"
        );
        self.by_route.insert(route, Arc::new(api));
    }

    /// The aggregate type served under `route`.
    pub fn get(&self, route: &str) -> Result<&Arc<dyn ApiAggregate>, Problem> {
        self.by_route.get(route).ok_or_else(|| {
            Problem::not_found(format!(
                "no aggregate type is served under /v1/{route}; known: {}",
                self.by_route.keys().copied().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The aggregate type stored as `type_name`.
    pub fn by_type(&self, type_name: &str) -> Option<&Arc<dyn ApiAggregate>> {
        self.by_route.values().find(|a| a.type_name() == type_name)
    }

    /// Every aggregate type served.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn ApiAggregate>> {
        self.by_route.values()
    }
}

/// The parsed `If-Match` header: an expected version.
///
/// One strong entity tag holding a version in canonical decimal (`"3"`; `"0"`: the aggregate
/// must not exist yet). A weak tag (`W/"3"`) never matches for `If-Match` (RFC 9110, 13.1.1):
/// 412, as is an empty field (a list of no tags, which nothing matches). `*` ("any current
/// representation") is valid HTTP but not supported: the runtime can
/// only check an exact version, and a check outside it would race; 400, saying to send the
/// version. Anything else (a bare `3`, `"03"`, `"+3"`, several tags, several headers) is 400.
fn expected_version(headers: &HeaderMap) -> Result<Option<Version>, Problem> {
    let mut values = headers.get_all(header::IF_MATCH);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Problem::bad_request(format!(
            "If-Match must be one entity tag holding a version, such as \"3\" as in ETag \
             (\"0\": the aggregate must not exist yet); {why}"
        ))
    };
    if values.next().is_some() {
        return Err(bad("this request has several If-Match headers"));
    }
    let text = value
        .to_str()
        .map_err(|_| bad("this one is not visible ASCII"))?
        .trim();
    if text.is_empty() {
        // An empty list of entity tags (valid syntax): none of them matches.
        return Err(Problem::new(
            Kind::PreconditionFailed,
            "If-Match is empty: a list of no entity tags, which no version matches (RFC 9110, \
             13.1.1); send the version from ETag, or no If-Match",
        ));
    }
    if text == "*" {
        return Err(bad(
            "If-Match: * (any version) is not supported: send the version the command expects",
        ));
    }
    let quoted = |t: &str| {
        t.len() >= 2 && t.starts_with('"') && t.ends_with('"') && !t[1..t.len() - 1].contains('"')
    };
    if let Some(weak) = text.strip_prefix("W/") {
        if quoted(weak) {
            return Err(Problem::new(
                Kind::PreconditionFailed,
                format!(
                    "If-Match holds the weak entity tag W/{weak}, and weak tags never match for \
                     If-Match (RFC 9110, 13.1.1): send the strong tag {weak}"
                ),
            ));
        }
        return Err(bad("this one is not an entity tag"));
    }
    if !quoted(text) {
        return Err(bad("this one is not one quoted entity tag"));
    }
    let digits = &text[1..text.len() - 1];
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    match digits.parse::<u64>() {
        Ok(version) if canonical => Ok(Some(Version(version))),
        _ => Err(bad("this one is not a version in canonical decimal")),
    }
}

/// The parsed `Idempotency-Key` header: a command id.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<CommandId>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Problem::bad_request("Idempotency-Key must be visible ASCII"))?;
    CommandId::new(text)
        .map(Some)
        .map_err(|e| Problem::bad_request(format!("Idempotency-Key: {e}")))
}

/// A trace id header (`X-Correlation-Id`, `X-Causation-Id`): 1 to `TRACE_ID_LEN_MAX` bytes
/// of visible ASCII (spaces and tabs inside), as the runtime and the document have it. Checked
/// here, before the precondition, so that a bad one is a 400 whatever `If-Match` says.
fn trace_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, Problem> {
    let max = annals::envelope::TRACE_ID_LEN_MAX;
    headers
        .get(name)
        .map(|v| {
            let text = v
                .to_str()
                .map_err(|_| Problem::bad_request(format!("{name} must be visible ASCII")))?;
            if text.is_empty() || text.len() > max {
                return Err(Problem::bad_request(format!(
                    "{name} is {} bytes: it must be 1 to {max}",
                    text.len()
                )));
            }
            Ok(text.to_owned())
        })
        .transpose()
}

/// Whether the request's `Content-Type` is JSON (`application/json` or `application/*+json`).
fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

/// Reads the body: JSON only, at most `limit` bytes, all of it within `deadline`.
async fn json_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    deadline: Duration,
) -> Result<bytes::Bytes, Problem> {
    if !is_json(req) {
        return Err(Problem::new(
            Kind::UnsupportedMediaType,
            "the command must be sent as Content-Type: application/json",
        ));
    }
    let too_large = || {
        Problem::new(
            Kind::PayloadTooLarge,
            format!("the body exceeds the limit of {limit} bytes"),
        )
        .with("limit", limit)
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut body = bytes::BytesMut::with_capacity(
            declared
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(1024)
                .min(limit),
        );
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| Problem::bad_request(format!("cannot read the body: {e}")))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or_else(|_| {
            Err(Problem::new(
                Kind::RequestTimeout,
                format!(
                    "the body did not arrive within {} ms (server.body_read_timeout_ms); nothing \
                     was executed and the connection is closed",
                    deadline.as_millis()
                ),
            ))
        })
}

/// `POST /v1/{aggregate}/{id}/commands`.
pub async fn post_command(
    state: web::Data<AppState>,
    req: HttpRequest,
    served: web::Data<Served>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let started = Instant::now();
    let id = path.into_inner();
    let api = Arc::clone(&served.0);
    let result = execute(&state, &req, api.as_ref(), &id, payload).await;
    let (command, outcome) = match &result {
        Ok((command, _)) => (*command, Outcome::Ok),
        Err((command, problem)) => (*command, outcome_of(problem.kind())),
    };
    state
        .metrics
        .command(api.type_name(), command, outcome, started.elapsed());
    let (_, reply) = result.map_err(|(_, problem)| problem)?;
    let mut response = HttpResponse::Ok();
    response.insert_header((header::ETAG, format!("\"{}\"", reply.version)));
    if reply.replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    Ok(response.content_type("application/json").body(reply.body))
}

type Executed = (&'static str, CommandReply);

/// 403: `command` is sent by a process manager only.
fn process_only(command: &str) -> Problem {
    Problem::new(
        Kind::Forbidden,
        format!(
            "{command} is sent by the order-credit saga (a process manager), not by clients: it \
             needs a token with the `admin` scope"
        ),
    )
    .with("scope", "admin")
    .with("command_type", command)
}

async fn execute(
    state: &AppState,
    req: &HttpRequest,
    api: &dyn ApiAggregate,
    id: &str,
    payload: web::Payload,
) -> Result<Executed, (&'static str, Problem)> {
    let invalid = |p: Problem| ("invalid", p);
    let runtime = state.runtime().map_err(invalid)?;
    let server = &state.config.server;
    // The body first, bounded in size and time, so that a client that trickles it holds no
    // in-flight slot.
    let body = json_body(
        req,
        payload,
        server.body_bytes_max.get(),
        server.body_read_timeout,
    )
    .await
    .map_err(invalid)?;
    let command = api.command_type(&body).unwrap_or("invalid");
    let fail = |p: Problem| (command, p);
    if api.process_only_commands().contains(&command)
        && !Grant::of(req).has(annals_config::Scope::Admin)
    {
        return Err(fail(process_only(command)));
    }
    let headers = req.headers();
    let mut options = ExecuteOptions::default();
    options.command_id = idempotency_key(headers).map_err(fail)?;
    options.correlation_id = trace_header(headers, "x-correlation-id")
        .map_err(fail)?
        .map(Into::into);
    options.causation_id = trace_header(headers, "x-causation-id")
        .map_err(fail)?
        .map(Into::into);
    // The id is checked here too so a bad one is a 400 whatever the body says.
    StreamId::new(api.type_name(), id).map_err(|e| fail(Problem::bad_request(e.to_string())))?;
    // The precondition last: a request that is otherwise bad is a 400, not a 412
    // (RFC 9110, 13.2.1). A body that is no command is found when it is parsed, so on the
    // (rare) way to a 412 it is parsed first.
    options.expected_version = match expected_version(headers) {
        Err(p) if p.kind() == Kind::PreconditionFailed => {
            api.validate(&body).map_err(fail)?;
            return Err(fail(p));
        }
        other => other.map_err(fail)?,
    };
    let _in_flight = state.in_flight.enter().ok_or_else(|| {
        fail(Problem::overloaded(
            Kind::Unavailable,
            format!(
                "{} commands are in flight, the configured limit (server.in_flight_max)",
                server.in_flight_max
            ),
            state.config.runtime.retry_after,
        ))
    })?;
    let deadline = server.request_deadline;
    let reply = tokio::time::timeout(deadline, api.execute(&runtime, id, &body, options))
        .await
        .unwrap_or_else(|_| {
            Err(Problem::new(
                Kind::OutcomeUnknown,
                format!(
                    "the command was not answered within {} ms (server.request_deadline_ms): it \
                     may or may not have been recorded; retry with the same Idempotency-Key to \
                     learn its outcome",
                    deadline.as_millis()
                ),
            )
            .retry_after(Duration::from_secs(1)))
        })
        .map_err(fail)?;
    Ok((command, reply))
}

fn outcome_of(kind: Kind) -> Outcome {
    match kind {
        Kind::Rejected | Kind::IdempotencyKeyReused => Outcome::Rejected,
        Kind::Conflict | Kind::PreconditionFailed => Outcome::Conflict,
        Kind::TooManyRequests | Kind::Unavailable => Outcome::Overloaded,
        Kind::Internal | Kind::OutcomeUnknown => Outcome::Error,
        _ => Outcome::Invalid,
    }
}

/// Query of `GET /v1/{aggregate}/{id}`; its schema documents the route's parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// The state as of this version.
    version: Option<u64>,
    /// The state as of this time (RFC 3339, any offset; before 1970 is a 400).
    as_of: Option<String>,
}

/// `GET /v1/{aggregate}/{id}`.
pub async fn get_state(
    state: web::Data<AppState>,
    served: web::Data<Served>,
    path: web::Path<String>,
    query: web::Query<StateQuery>,
) -> Result<HttpResponse, Problem> {
    let id = path.into_inner();
    let api = Arc::clone(&served.0);
    let runtime = state.runtime()?;
    let at = match (query.version, &query.as_of) {
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "give either version or as_of, not both",
            ))
        }
        (Some(0), None) => return Err(Problem::bad_request("version starts at 1")),
        (Some(v), None) => StateAt::Version(Version(v)),
        (None, Some(t)) => StateAt::Instant(parse_rfc3339("as_of", t)?),
        (None, None) => StateAt::Head,
    };
    StreamId::new(api.type_name(), id.as_str()).map_err(|e| Problem::bad_request(e.to_string()))?;
    let (version, json) = state
        .read(move || {
            let found = api.state(&runtime, &id, at)?.ok_or_else(|| {
                Problem::not_found(format!(
                    "{} {id:?} has no events{}",
                    api.type_name(),
                    match at {
                        StateAt::Head => String::new(),
                        StateAt::Version(v) => format!(" (at version {v})"),
                        StateAt::Instant(_) => " at that time".into(),
                    }
                ))
            })?;
            if let StateAt::Version(wanted) = at {
                if found.0 < wanted.0 {
                    return Err(Problem::not_found(format!(
                        "{} {id:?} is at version {}: version {wanted} does not exist yet",
                        api.type_name(),
                        found.0
                    ))
                    .with("current_version", found.0));
                }
            }
            let reply = wire::api::StateReply {
                id: &id,
                version: found.0,
                state: found.1,
            };
            Ok((
                found.0,
                serde_json::to_value(&reply).map_err(Problem::internal)?,
            ))
        })
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, format!("\"{version}\"")))
        .json(json))
}

/// Query of `GET /v1/{aggregate}/{id}/events`; its schema documents the route's parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// The first version (default 1; 0 reads as 1).
    from: Option<u64>,
    /// At most this many events (default `server.page_size_default`; at most
    /// `server.page_size_max`).
    limit: Option<usize>,
}

/// `GET /v1/{aggregate}/{id}/events`.
pub async fn get_history(
    state: web::Data<AppState>,
    served: web::Data<Served>,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, Problem> {
    let id = path.into_inner();
    let api = Arc::clone(&served.0);
    let runtime = state.runtime()?;
    let limit = state.page_size(query.limit)?;
    let from = Version(query.from.unwrap_or(1).max(1));
    let stream = StreamId::new(api.type_name(), id.as_str())
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    let page = state
        .read(move || {
            let stored = runtime.read_stream(&stream, from, None, limit)?;
            let mut events = Vec::with_capacity(stored.len());
            for event in &stored {
                events.extend(super::log::render_event(Some(api.as_ref()), event)?);
            }
            let next = (stored.len() == limit)
                .then(|| stored.last().map(|e| e.version.0 + 1))
                .flatten();
            let page = wire::api::History {
                id: &id,
                events,
                next_from: next,
            };
            serde_json::to_value(&page).map_err(Problem::internal)
        })
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Parses a command. A number with a zero fraction (`5000.0`) is the integer it spells, as JSON
/// Schema (and the API description) has it, though serde's integer types refuse it; the
/// fallback costs nothing on the usual path.
fn parse_command<C: serde::de::DeserializeOwned>(body: &[u8]) -> serde_json::Result<C> {
    serde_json::from_slice(body).or_else(|error| {
        let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
            return Err(error);
        };
        if !whole_floats_to_integers(&mut value) {
            return Err(error);
        }
        serde_json::from_value(value)
    })
}

/// Replaces every float with a zero fraction (within the integers a float spells exactly) by
/// that integer; `true` if any was.
fn whole_floats_to_integers(value: &mut Value) -> bool {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() <= EXACT {
                #[allow(clippy::cast_possible_truncation)]
                let i = f as i64;
                *value = Value::from(i);
                true
            } else {
                false
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, v| whole_floats_to_integers(v) | any),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |any, v| whole_floats_to_integers(v) | any),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "the route /v1/events is already taken")]
    fn an_aggregate_cannot_take_a_fixed_route() {
        let mut all = Aggregates::domain();
        all.add(Api::<annals_domain::bank::Account>::new(
            "events",
            &["Deposit"],
            &[],
        ));
    }

    #[test]
    #[should_panic(expected = "the route /v1/orders is already taken")]
    fn two_aggregates_cannot_share_a_route() {
        let mut all = Aggregates::domain();
        all.add(Api::<annals_domain::bank::Account>::new(
            "orders",
            &["Deposit"],
            &[],
        ));
    }
}
