//! The operations of the document, one function per area of `routes()` (`super::super::routes`),
//! each an [`Operation`] listing what its handler reads (path, query, headers, body) and every
//! status it can answer, with the body of each. Query parameters are generated from the
//! handlers' query structs (`query.rs`), adjusted here where the configuration or the handler
//! says more than the type.
//!
//! The aggregate routes (`/v1/{aggregate}/...`) are one route each in the server, matched
//! for every registered aggregate type; the document spells them out per type
//! (`/v1/customers/{id}/commands`, ...), because each type takes its own commands and returns
//! its own state and events. A request for an aggregate type that is not served is a 404.

use std::collections::BTreeMap;

use annals::envelope::TRACE_ID_LEN_MAX;
use annals::types::{AGGREGATE_ID_LEN_MAX, COMMAND_ID_LEN_MAX};
use annals_config::Config;
use serde_json::{json, Map, Value};

use super::super::access::Access;
use super::super::aggregates::{ApiAggregate, HistoryQuery, StateQuery};
use super::super::log::{LiveQuery, LogQuery};
use super::super::problem::{Kind, PROBLEM_JSON};
use super::super::read::{ValuableQuery, ViewQuery};
use super::components::{header, problem_response_name};
use super::operation::{Example, Header, In, MediaType, Operation, Or, Parameter, Response};
use super::query::{self, Adjust};
use super::schemas::{a, problem_schema, reference, Schemas};

/// Visible ASCII, spaces and tabs allowed inside: what `HeaderValue::to_str` accepts once
/// HTTP has trimmed the value.
const HEADER_TEXT: &str = "^[!-~]([\\t -~]*[!-~])?$";

/// An RFC 3339 time from 1971 on. Earlier times are refused (the store counts microseconds
/// from 1970; a 1970 time with a positive offset is before it), and JSON Schema's `date-time`
/// cannot say so alone.
const TIME_SINCE_1971: &str = "^(197[1-9]|19[89][0-9]|[2-9][0-9]{3})-";

/// The largest `u64`.
const U64_MAX: u64 = u64::MAX;

/// Builds `paths` for one server.
pub(super) struct Paths<'a> {
    schemas: &'a Schemas,
    config: &'a Config,
    projection_names: Vec<String>,
    paths: BTreeMap<String, BTreeMap<&'static str, Operation>>,
}

impl std::fmt::Debug for Paths<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.paths.keys()).finish()
    }
}

/// What the description of a command route says of its process-only commands.
fn process_only_text(process_only: &[&str]) -> String {
    if process_only.is_empty() {
        return String::new();
    }
    format!(
        "\n\nProcess-only commands: {}. These are sent by the `order-credit` saga (a process \
         manager), not by clients: on the public API they are refused with 403 unless the \
         token has the `admin` scope, and always on a server without tokens.",
        process_only
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The `Idempotent-Replayed` header of a command's reply, which is `what`.
fn replayed(what: &str) -> Or<Header> {
    Header::new(
        false,
        json!({"const": "true"}),
        &format!(
            "`true` when the {what} is the stored outcome of an earlier request with the same \
             `Idempotency-Key`; absent otherwise."
        ),
    )
}

/// An RFC 3339 time from 1971 on: the adjustment of an `as_of` or `created_after` parameter.
fn since_1971() -> Adjust {
    Adjust::schema(json!({"format": "date-time", "pattern": TIME_SINCE_1971}))
}

/// An optional header of 1 to `max` bytes of visible ASCII.
fn header_text(name: &str, max: usize, description: &str) -> Parameter {
    let schema =
        json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": HEADER_TEXT});
    Parameter::new(In::Header, name, schema, description)
}

impl<'a> Paths<'a> {
    /// The paths of a server with `config`, its projections named `projection_names` (examples
    /// for the `{name}` parameters).
    pub(super) fn new(
        schemas: &'a Schemas,
        config: &'a Config,
        projection_names: Vec<String>,
    ) -> Self {
        Paths {
            schemas,
            config,
            projection_names,
            paths: BTreeMap::new(),
        }
    }

    /// Adds `op` as `method` of `path`, the route `pattern` of `ROUTES` (whose access level
    /// says what the operation needs), its problems as `$ref`s to their response components:
    /// with tokens configured, an operation that needs one gets the bearer scheme with its
    /// scope, a 401 and a 403; an open one (or any, without tokens) has no requirement (`[]`).
    fn add(&mut self, method: &'static str, path: &str, pattern: &str, mut op: Operation) {
        // A pattern missing from the table is documented as needing the narrowest scope; the
        // drift test (`tests/tests/openapi.rs`) fails on it anyway.
        let access = super::super::ROUTES
            .iter()
            .find(|r| r.pattern == pattern)
            .map_or(Access::ADMIN, |r| r.access);
        op.security = Vec::new();
        if access != Access::Open && self.config.auth.enabled() {
            let scopes = access.scope().map(|s| s.name().to_owned());
            let scopes = scopes.into_iter().collect();
            op.security = vec![BTreeMap::from([("bearerAuth".to_owned(), scopes)])];
            op.problems.extend([401, 403]);
            if let Some(scope) = access.scope() {
                let space = if op.description.is_empty() { "" } else { " " };
                let needs = format!("{space}Needs a token with the `{scope}` scope.");
                op.description.push_str(&needs);
            }
        }
        for status in std::mem::take(&mut op.problems) {
            let Ok(code) = actix_web::http::StatusCode::from_u16(status) else {
                continue;
            };
            let name = problem_response_name(code);
            let problem = || Or::component("responses", &name);
            op.responses.entry(status).or_insert_with(problem);
        }
        let item = self.paths.entry(path.to_owned()).or_default();
        item.insert(method, op);
    }

    /// Adds `op` as `GET` (and `HEAD`) of `path`, which is its own route pattern.
    fn get(&mut self, path: &str, op: Operation) {
        self.add("get", path, path, op);
    }

    /// Adds `op` as `POST` of `path`, which is its own route pattern.
    fn post(&mut self, path: &str, op: Operation) {
        self.add("post", path, path, op);
    }

    /// Every path.
    pub(super) fn build(mut self, aggregates: &[&dyn ApiAggregate]) -> Map<String, Value> {
        self.operations();
        for api in aggregates {
            self.aggregate(*api);
        }
        self.log();
        self.projections();
        self.views();
        self.console(aggregates);
        let paths = self.paths.into_iter();
        paths.map(|(path, item)| (path, json!(item))).collect()
    }

    /// The adjustment of a `limit` parameter: bounded by the configured page size.
    fn page_limit(&self) -> (&'static str, Adjust) {
        let server = &self.config.server;
        let max = server.page_size_max.get().try_into().unwrap_or(U64_MAX);
        let adjust = Adjust::schema(json!({"minimum": 1, "maximum": max})).and_describe(format!(
            "At most this many entries (default {}, `server.page_size_default`; at most {}, \
             `server.page_size_max`).",
            server.page_size_default, server.page_size_max
        ));
        ("limit", adjust)
    }

    /// The adjustment of a `min_position` parameter: the configured wait.
    fn min_position(&self) -> (&'static str, Adjust) {
        let adjust = Adjust::describe(format!(
            "Read your writes: first wait (at most {} ms, `server.wait_max_ms`) until the view \
             has processed this position, the `position` of a command's reply. A position \
             beyond the log's head is a 400; a wait that runs out is a 503.",
            self.config.server.wait_max.as_millis()
        ));
        ("min_position", adjust)
    }

    fn aggregate_id(example: &str) -> Parameter {
        let schema = json!({"type": "string", "minLength": 1, "maxLength": AGGREGATE_ID_LEN_MAX,
            "examples": [example]});
        let description = format!(
            "The aggregate id: 1 to {AGGREGATE_ID_LEN_MAX} bytes of UTF-8 (percent-encoded in \
             the path) of visible characters: no control characters, whitespace, invisible \
             format characters or U+FFFD. Anything else, longer, or percent-encodings that are \
             not UTF-8, is a 400."
        );
        Parameter::new(In::Path, "id", schema, &description)
    }

    /// The command route's parameters: the id and the headers its handler reads.
    fn command_parameters(id: Parameter) -> [Parameter; 5] {
        let trace = |name: &str, what: &str| {
            let description = format!(
                "{what}: 1 to {TRACE_ID_LEN_MAX} bytes of visible ASCII, recorded in every event \
                 of the command."
            );
            header_text(name, TRACE_ID_LEN_MAX, &description)
        };
        let idempotency_key = format!(
            "The command id: 1 to {COMMAND_ID_LEN_MAX} bytes of visible ASCII. A retry with the \
             same key returns the first outcome without executing again, even after a restart; \
             the same key with another command is a 422."
        );
        let if_match = Parameter::new(
            In::Header,
            "If-Match",
            json!({"type": "string", "pattern": "^\"(0|[1-9][0-9]{0,18})\"$",
                "examples": ["\"0\""]}),
            "Execute only if the aggregate is at this version: one strong entity tag in \
             canonical decimal (`\"3\"`, as in `ETag`; `\"0\"`: it must not exist yet), else \
             409 with the current version. A weak tag (`W/\"3\"`) or an empty field never \
             matches for `If-Match` (RFC 9110, 13.1.1): 412. `*` is not supported (400: send \
             the version), nor are a bare `3`, leading zeros, a sign or several tags (400).",
        );
        [
            id,
            header_text("Idempotency-Key", COMMAND_ID_LEN_MAX, &idempotency_key),
            if_match,
            trace("X-Correlation-Id", "The correlation id"),
            trace("X-Causation-Id", "The causation id"),
        ]
    }

    fn aggregate(&mut self, api: &dyn ApiAggregate) {
        let (route, type_name) = (api.route(), api.type_name());
        let known = self.schemas.aggregate(type_name);
        let id = || Self::aggregate_id(&format!("{}-1", route.chars().next().unwrap_or('x')));
        let (command, reply, state, history, rejection) = match known {
            Some(s) => (
                reference(&s.command),
                reference(&format!("{type_name}CommandReply")),
                reference(&format!("{type_name}StateReply")),
                reference(&format!("{type_name}History")),
                reference(&s.rejection),
            ),
            None => {
                let object = json!({"type": "object"});
                let command = json!({"type": "object", "required": ["type"],
                    "properties": {"type": {"enum": api.command_types()}}});
                let o = || object.clone();
                (command, o(), o(), o(), object)
            }
        };
        let examples = known.map(|s| s.examples.as_slice()).unwrap_or_default();
        let examples = examples.iter().map(|(name, value)| {
            let example = Example {
                value: value.clone(),
            };
            (name.clone(), example)
        });
        let body = MediaType {
            schema: command,
            examples: examples.collect(),
        };
        let (state_op, history_op) = (format!("get_{route}_state"), format!("get_{route}_history"));
        let ok = Response::new(
            "Executed; durable before it is sent. With an `Idempotency-Key` used before for \
             this command, the stored outcome of the first execution (nothing is executed \
             again), marked by `Idempotent-Replayed: true`.",
            "application/json",
            reply,
        )
        .header("ETag", header("ETag"))
        .header("Idempotent-Replayed", replayed("reply"))
        .link_by_id("state", &state_op)
        .link_by_id("history", &history_op);
        let rejected = Response::new(
            "Rejected by the aggregate (`rejection` says why), or the `Idempotency-Key` was used \
             for another command. A retry of a rejected command with its `Idempotency-Key` gets \
             the stored rejection again, marked by `Idempotent-Replayed: true`.",
            PROBLEM_JSON,
            json!({"oneOf": [
                {"allOf": [
                    reference(&problem_schema(Kind::Rejected)),
                    {"properties": {"rejection": rejection}},
                ]},
                reference(&problem_schema(Kind::IdempotencyKeyReused)),
            ]}),
        )
        .header("Idempotent-Replayed", replayed("rejection"));
        let server = &self.config.server;
        let summary = format!("Execute a command on {}", a(type_name));
        let op = Operation::new(format!("execute_{route}_command"), route, summary)
            .describe(format!(
                "Executes one command on {type_name} `id` (created by its first event). The \
                 body is the command as JSON, tagged by `type` ({}), at most {} bytes \
                 (`server.body_bytes_max`), received within {} ms of the request's head \
                 (`server.body_read_timeout_ms`; else 408 and the connection is closed). The \
                 reply is sent once the events are durable; a command not answered within {} \
                 ms (`server.request_deadline_ms`) gets a 503 saying its outcome is unknown \
                 (retry with the same `Idempotency-Key`).{}",
                api.command_types().join(", "),
                server.body_bytes_max,
                server.body_read_timeout.as_millis(),
                server.request_deadline.as_millis(),
                process_only_text(api.process_only_commands()),
            ))
            .parameters(Self::command_parameters(id()))
            .json_body(body)
            .response(200, ok)
            .response(422, rejected)
            .problems(&[400, 403, 408, 409, 412, 413, 415, 429, 500, 503, 507]);
        let pattern = "/v1/{aggregate}/{id}/commands";
        self.add("post", &format!("/v1/{route}/{{id}}/commands"), pattern, op);
        // `version` and `as_of` as one exploded object, so that the schema can say "at most
        // one of them" (`maxProperties`), which two separate parameters cannot.
        let at = query::at_most_one(
            "at",
            "Which past state: `version` or `as_of`, each its own query parameter, at most one \
             of them (both: 400). Neither: the current state.",
            query::parameters::<StateQuery>(&[
                ("version", Adjust::schema(json!({"minimum": 1}))),
                ("as_of", since_1971()),
            ]),
        );
        let summary = format!("The state of {}, now or in the past", a(type_name));
        let state = Response::new("The state and its version.", "application/json", state);
        let op = Operation::new(state_op, route, summary)
            .describe(
                "The current state; with `version`, the state right after that event; with \
                 `as_of`, the state at that time (from the nearest snapshot, then replay). Give \
                 at most one of `version` and `as_of` (both: 400).",
            )
            .parameters([id(), at])
            .response(200, state.header("ETag", header("ETag")))
            .problems(&[400, 404, 500, 503]);
        self.add(
            "get",
            &format!("/v1/{route}/{{id}}"),
            "/v1/{aggregate}/{id}",
            op,
        );
        let summary = format!("The events of {} (its audit log), paged", a(type_name));
        let op = Operation::new(history_op, route, summary)
            .describe(
                "Oldest first, from version `from`. An aggregate without events has an empty \
                 history.",
            )
            .parameters([id()])
            .parameters(query::parameters::<HistoryQuery>(&[self.page_limit()]))
            .json(200, "A page of events.", history)
            .problems(&[400, 500, 503]);
        let pattern = "/v1/{aggregate}/{id}/events";
        self.add("get", &format!("/v1/{route}/{{id}}/events"), pattern, op);
    }

    /// The web console's page and assets, and its two endpoints.
    fn console(&mut self, aggregates: &[&dyn ApiAggregate]) {
        let text = || json!({"type": "string"});
        let op = |id: &str, summary: &str| Operation::new(id, "console", summary);
        let assets = [
            (
                "/console",
                "console_page",
                "The web console (HTML)",
                "text/html",
            ),
            (
                "/console/console.js",
                "console_script",
                "The console's script",
                "text/javascript",
            ),
            (
                "/console/console.css",
                "console_style",
                "The console's style sheet",
                "text/css",
            ),
        ];
        for (path, id, summary, media) in assets {
            let page = op(id, summary)
                .describe(
                    "Built into the binary: no network access at run time. Open to anyone, like \
                     `/docs`: the page holds no data, and asks for a token when the API does.",
                )
                .response(200, Response::new("The asset.", media, text()));
            self.get(path, page);
        }
        let overview = op("console_overview", "What the console's overview shows")
            .describe(
                "Counters since start (the page turns them into rates by polling), command \
                 latency over about the last 10 seconds, the journal's counters and health, \
                 free disk, live actors, and every subscriber with its lag.",
            )
            .json(200, "The overview.", reference("Overview"))
            .problems(&[500, 503]);
        self.get("/v1/console/overview", overview);
        let routes: Vec<&str> = aggregates.iter().map(|a| a.route()).collect();
        let aggregate = Parameter::new(
            In::Path,
            "aggregate",
            json!({"type": "string", "enum": routes}),
            "The aggregate type, by its route (`orders` for `/v1/orders/…`); another is 404.",
        );
        let max = self.config.server.page_size_max.get();
        let ids = op(
            "console_aggregate_ids",
            "Ids of an aggregate type, by prefix",
        )
        .describe(
            "The ids of the aggregates of this type that have an event and start with \
                 `prefix`, shortest first, then in byte order, for the console's search.",
        )
        .parameters(std::iter::once(aggregate).chain(query::parameters::<
            super::super::console::IdsQuery,
        >(&[
            (
                "prefix",
                Adjust::schema(json!({"maxLength": 256})).and_describe(
                    "Ids that start with this (default: any); at most 256 bytes, as an \
                             id (else 400).",
                ),
            ),
            (
                "limit",
                Adjust::schema(json!({"minimum": 1, "maximum": max})).and_describe(format!(
                    "At most this many ids (default {}; at most {max}, \
                             `server.page_size_max`; else 400).",
                    super::super::console::IDS_DEFAULT
                )),
            ),
        ])))
        .json(200, "The ids.", reference("AggregateIds"))
        .problems(&[400, 404, 500, 503]);
        self.get("/v1/console/aggregates/{aggregate}", ids);
        let event_id = Parameter::new(
            In::Path,
            "event_id",
            json!({"type": "string", "format": "uuid"}),
            "An event's id (`event_id` in an envelope); not a UUID is 400.",
        );
        let chain = op("console_chain", "An event's chain of causes and effects")
            .describe(
                "The events that caused this one (each command a process manager sends carries \
                 the triggering event's id as its causation id), everything the first of them \
                 caused, and the events of the same correlation id, in log order, a page at a \
                 time (`next_after`); at most 10,000 are walked (`truncated` says if there were \
                 more). From the causation index, which covers \
                 customers and orders and trails the log by a moment: an event it does not hold \
                 (yet) is 404. `deadlines`: the commands process managers will send when due \
                 because of these events (or for their correlation), among the first 10,000 \
                 pending deadlines.",
            )
            .parameters(std::iter::once(event_id).chain(query::parameters::<
                super::super::console::ChainQuery,
            >(&[self.page_limit()])))
            .json(200, "A page of the chain.", reference("Chain"))
            .problems(&[400, 404, 500, 503]);
        self.get("/v1/console/chain/{event_id}", chain);
    }

    fn log(&mut self) {
        let op = Operation::new("global_log", "log", "The global log, paged by position")
            .describe("Every committed event of every aggregate, in commit order.")
            .parameters(query::parameters::<LogQuery>(&[
                // After the last position there is nothing to read (400).
                ("after", Adjust::schema(json!({"maximum": U64_MAX - 1}))),
                self.page_limit(),
            ]))
            .json(200, "A page of the log.", reference("LogPage"))
            .problems(&[400, 500, 503]);
        self.get("/v1/events", op);
        let server = &self.config.server;
        let summary = "The live feed of committed events (Server-Sent Events)";
        let last_event_id = Parameter::new(
            In::Header,
            "Last-Event-ID",
            json!({"type": "string", "pattern": "^[0-9]{1,19}$"}),
            "Resume after this position (the last `id:` received); it takes precedence over \
             `after`.",
        );
        let stream = Response::new(
            "The event stream; the schema is that of each event in it.",
            "text/event-stream",
            reference("LiveEvent"),
        );
        let op = Operation::new("live_feed", "log", summary)
            .describe(format!(
                "A stream that does not end until the client disconnects or the server stops. \
                 It starts with `retry: 1000`, then sends every event after the starting \
                 position as `id: {{position}}` and `data: {{envelope as JSON, see \
                 AnyEnvelope}}`, and a `: keep-alive` comment every {} ms when idle. Reconnect \
                 with `Last-Event-ID` set to the last `id` received to resume with no gap and no \
                 duplicate. At most {} feeds are open at once (`server.sse_connections_max`; \
                 beyond that, 503) and at most {} per client address \
                 (`server.sse_connections_per_client_max`; beyond that, 429). A feed's slot is \
                 freed as soon as its client disconnects.",
                server.sse_keepalive.as_millis(),
                server.sse_connections_max,
                server.sse_connections_per_client_max,
            ))
            .parameters(query::parameters::<LiveQuery>(&[]))
            .parameters([last_event_id])
            .response(200, stream)
            .problems(&[400, 429, 500, 503]);
        self.get("/v1/events/live", op);
    }

    fn projection_name(&self) -> Parameter {
        // Visible ASCII but `#`, `/` and `@`: every name a subscriber is registered under. A
        // name with letters beyond ASCII is well formed too, and unknown (404).
        let pattern = format!(
            "^[!-\"$-.0-?A-~]{{1,{}}}$",
            annals::subscription::NAME_LEN_MAX
        );
        let mut schema = json!({"type": "string", "pattern": pattern});
        if !self.projection_names.is_empty() {
            schema["examples"] = json!(self.projection_names);
        }
        Parameter::new(
            In::Path,
            "name",
            schema,
            "The subscriber's name, as `GET /v1/projections` lists it: 1 to 64 bytes of \
             visible characters without `@`, `#` or `/` (else 400; a rebuild in progress, \
             `{name}#rebuild`, cannot be addressed).",
        )
    }

    fn projections(&mut self) {
        let op = |id: &str, summary: &str| Operation::new(id, "projections", summary);
        let list = op(
            "list_projections",
            "Every subscriber, its checkpoint, lag and status",
        )
        .json(200, "The subscribers.", reference("Subscribers"))
        .problems(&[503]);
        self.get("/v1/projections", list);
        let rebuild = op(
            "rebuild_projection",
            "Rebuild a projection without downtime",
        )
        .describe(
            "Starts rebuilding the projection from position 0 beside the live one; queries \
                 keep being answered from the live one until the rebuild reaches the head and \
                 is swapped in. `GET /v1/projections` shows its progress as `{name}#rebuild`.",
        )
        .parameters([self.projection_name()])
        .json(202, "The rebuild has started.", reference("RebuildStarted"))
        .problems(&[400, 404, 409, 500, 503]);
        self.post("/v1/projections/{name}/rebuild", rebuild);
        let parked = op("list_parked", "The events a subscriber parked")
            .parameters([self.projection_name()])
            .json(200, "The parked events.", reference("ParkedEvents"))
            .problems(&[400, 404, 500, 503]);
        self.get("/v1/projections/{name}/parked", parked);
        let position = json!({"type": "integer", "minimum": 0, "maximum": U64_MAX});
        let position = Parameter::new(
            In::Path,
            "position",
            position,
            "The parked event's position.",
        );
        let retry = op("retry_parked", "Handle a parked event again")
            .describe(
                "For a process manager, the event is handled again and leaves the parked list if \
                 that succeeds; for a projection, the projection is rebuilt instead (its records \
                 may have moved past the event).",
            )
            .parameters([self.projection_name(), position])
            .json(200, "Retried.", reference("ParkedRetried"))
            .problems(&[400, 404, 409, 500, 503]);
        self.post("/v1/projections/{name}/parked/{position}/retry", retry);
    }

    fn views(&mut self) {
        let op = |id: &str, summary: &str| Operation::new(id, "views", summary);
        let customer = Parameter::new(
            In::Path,
            "id",
            json!({"type": "string", "minLength": 1, "examples": ["c-1"]}),
            "The customer id, checked as aggregate ids are (else 400).",
        );
        let summary = op("customer_summary", "A customer's summary (read model)")
            .describe(
                "Name, credit limit, available credit, orders by status and total shipped, from \
                 the `customer-summaries` projection.",
            )
            .parameters([customer.clone()])
            .parameters(query::parameters::<ViewQuery>(&[
                self.min_position(),
                // The handler refuses it (400): a summary is not a list.
                ("limit", Adjust::omit()),
            ]))
            .json(200, "The summary.", reference("CustomerSummary"))
            .problems(&[400, 404, 500, 503]);
        self.get("/v1/views/customers/{id}", summary);
        let adjust = [self.min_position(), self.page_limit()];
        let orders = op("customer_orders", "A customer's orders (read model)")
            .parameters([customer])
            .parameters(query::parameters::<ViewQuery>(&adjust))
            .json(200, "The orders.", reference("CustomerOrders"))
            .problems(&[400, 500, 503]);
        self.get("/v1/views/customers/{id}/orders", orders);
        let scanned = super::super::read::VALUABLE_SCAN_PER_PAGE_ENTRY;
        let summary = "Customers created after a time with a shipped order of at least a total";
        let valuable = op("valuable_customers", summary)
            .describe(format!(
                "From the `valuable-customers` projection, oldest customer first, paged: one \
                 request reads at most {} records of the view ({scanned} × \
                 `server.page_size_max`), so a page may hold fewer than `limit` customers (even \
                 none) and still have a `next_after`; pass it as `after` to continue. \
                 `next_after` is null once the scan has reached the end.",
                scanned.saturating_mul(self.config.server.page_size_max.get()),
            ))
            .parameters(query::parameters::<ValuableQuery>(&[
                ("created_after", since_1971()),
                (
                    "after",
                    Adjust::schema(json!({"pattern": "^[0-9]{1,20}:.+$"})),
                ),
                self.min_position(),
                self.page_limit(),
            ]))
            .json(200, "The customers.", reference("ValuableCustomers"))
            .problems(&[400, 500, 503]);
        self.get("/v1/views/valuable-customers", valuable);
    }

    fn operations(&mut self) {
        let op = |id: &str, summary: &str| Operation::new(id, "operations", summary);
        let livez = op("livez", "Liveness: the process serves HTTP");
        self.get("/livez", livez.json(200, "Live.", reference("Live")));
        let readyz = op("readyz", "Readiness: commands can succeed")
            .describe(
                "200 only when the store is open (not recovering, not failed to open), the \
                 journal has not failed (with `store.backend = \"postgres\"`: the database \
                 answers), no projection or process manager has failed, and, with the sled \
                 backend, the data directory's file system has at least \
                 `store.disk_free_bytes_min` bytes free; otherwise 503 naming every failing \
                 check in `checks` (`recovering`, `store failed to open (see the server log)`, \
                 `journal failed (write or fsync error)`, `database unreachable (PostgreSQL \
                 does not answer; see the server log)`, `journal shut down`, `subscriber NAME \
                 failed`, `disk free below store.disk_free_bytes_min`, `disk free space cannot \
                 be read (see the server log)`). Open to anyone, so it names what failed, never \
                 how: the details are in the server log.",
            )
            .json(200, "Ready.", reference("Ready"))
            .problems(&[503]);
        self.get("/readyz", readyz);
        let text = || json!({"type": "string"});
        let metrics = op(
            "metrics",
            "Prometheus metrics (text exposition format 0.0.4)",
        )
        .describe(
            "Commands by aggregate type, command type and outcome, command latency, \
                 responses by status class, journal batches and fsyncs, live actors, \
                 activations, evictions, and each subscriber's lag.",
        )
        .response(200, Response::new("The metrics.", "text/plain", text()));
        self.get("/metrics", metrics);
        let op = |id: &str, summary: &str| Operation::new(id, "api description", summary);
        let document = json!({"type": "object", "required": ["openapi", "info", "paths"]});
        let openapi = op("openapi", "This document (OpenAPI 3.1)");
        self.get(
            "/openapi.json",
            openapi.json(200, "The document.", document),
        );
        let docs = op(
            "docs",
            "The API reference: this document as one self-contained HTML page",
        )
        .describe(
            "Needs no network access: no scripts, styles or fonts from elsewhere. The \
                 `type` of every problem links to its section here.",
        )
        .response(200, Response::new("The page.", "text/html", text()));
        self.get("/docs", docs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every adjustment in `paths.rs` names a member of the query struct it adjusts: an
    /// adjustment of a renamed member would otherwise be dropped without a word.
    #[test]
    fn adjusted_query_parameters_exist() {
        let has = |names: Vec<String>, wanted: &[&str]| {
            for name in wanted {
                assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
            }
        };
        has(query::names::<StateQuery>(), &["version", "as_of"]);
        has(query::names::<HistoryQuery>(), &["limit"]);
        has(query::names::<LogQuery>(), &["after", "limit"]);
        has(query::names::<LiveQuery>(), &[]);
        has(
            query::names::<super::super::super::console::ChainQuery>(),
            &["limit"],
        );
        has(
            query::names::<super::super::super::console::IdsQuery>(),
            &["prefix", "limit"],
        );
        has(query::names::<ViewQuery>(), &["min_position", "limit"]);
        has(
            query::names::<ValuableQuery>(),
            &["created_after", "after", "min_position", "limit"],
        );
    }
}
