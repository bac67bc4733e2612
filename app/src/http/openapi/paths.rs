//! The operations of the document, one function per area of `routes()` (`super::super::routes`),
//! each listing what its handler reads (path, query, headers, body) and every status it can
//! answer, with the body of each.
//!
//! The aggregate routes (`/v1/{aggregate}/...`) are one route each in the server, matched
//! for every registered aggregate type; the document spells them out per type
//! (`/v1/customers/{id}/commands`, ...), because each type takes its own commands and returns
//! its own state and events. A request for an aggregate type that is not served is a 404.

use annals::envelope::TRACE_ID_LEN_MAX;
use annals::types::{AGGREGATE_ID_LEN_MAX, COMMAND_ID_LEN_MAX};
use annals_config::{Config, Scope};
use serde_json::{json, Map, Value};

use super::super::access::Access;
use super::super::aggregates::ApiAggregate;
use super::super::problem::{Kind, PROBLEM_JSON};
use super::schemas::{a, reference, Schemas};

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
    paths: Map<String, Value>,
}

impl std::fmt::Debug for Paths<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.paths.keys()).finish()
    }
}

/// The name of the response component of problems with `status`: its reason phrase in camel
/// case (`BadRequest`, `ServiceUnavailable`).
pub(super) fn problem_response_name(status: actix_web::http::StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("Error")
        .split([' ', '-'])
        .collect()
}

/// A response: `description`, the `X-Request-Id` header every response carries, `headers`,
/// and a body of `media_type` and `schema` (none when `media_type` is empty).
pub(super) fn response(
    description: &str,
    headers: &[(&str, Value)],
    body: Option<(&str, Value)>,
) -> Value {
    let mut all = Map::new();
    all.insert(
        "X-Request-Id".into(),
        json!({"$ref": "#/components/headers/X-Request-Id"}),
    );
    for (name, header) in headers {
        all.insert((*name).into(), header.clone());
    }
    let mut response = json!({"description": description, "headers": all});
    if let Some((media_type, schema)) = body {
        response["content"] = json!({ media_type: {"schema": schema} });
    }
    response
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

/// A JSON response.
fn ok_json(description: &str, schema: Value) -> Value {
    response(description, &[], Some(("application/json", schema)))
}

/// A `$ref` to a header component.
fn header(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

/// An integer query parameter.
fn query_integer(name: &str, min: u64, max: u64, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "required": false,
        "description": description,
        "schema": {"type": "integer", "minimum": min, "maximum": max},
    })
}

/// A path parameter of text.
fn path_text(name: &str, schema: Value, description: &str) -> Value {
    let mut parameter =
        json!({"name": name, "in": "path", "required": true, "description": description});
    parameter["schema"] = schema;
    parameter
}

/// The `X-Request-Id`, `Retry-After`, `WWW-Authenticate` and `ETag` headers.
pub(super) fn header_components() -> Value {
    json!({
        "X-Request-Id": {
            "description": "The request id: the client's `X-Request-Id` if it is 1 to 64 of \
                `A-Z a-z 0-9 - _ . :`, otherwise a fresh UUID. Every log line of the request \
                carries it.",
            "schema": {"type": "string", "minLength": 1},
        },
        "Retry-After": {
            "description": "Seconds to wait before retrying, at least 1.",
            "required": true,
            "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        },
        "WWW-Authenticate": {
            "description": "`Bearer realm=\"annals\"`.",
            "required": true,
            "schema": {"type": "string"},
        },
        "ETag": {
            "description": "The aggregate's version as an entity tag (`\"3\"`): send it back in \
                `If-Match` to make the next command conditional on nothing having changed.",
            "required": true,
            "schema": {"type": "string", "pattern": "^\"[0-9]+\"$"},
        },
    })
}

/// `components.responses`: one per status of [`Kind::ALL`], its body any of that status's kinds.
pub(super) fn problem_responses() -> Map<String, Value> {
    let mut statuses: Vec<actix_web::http::StatusCode> =
        Kind::ALL.iter().map(|k| k.status()).collect();
    statuses.sort();
    statuses.dedup();
    let mut responses = Map::new();
    for status in statuses {
        let kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| k.status() == status)
            .collect();
        let schema = one_of_kinds(&kinds);
        let mut headers = Vec::new();
        match status.as_u16() {
            401 => headers.push(("WWW-Authenticate", header("WWW-Authenticate"))),
            405 => headers.push((
                "Allow",
                json!({"description": "The methods the route has (`GET, HEAD` or `POST`).",
                    "required": true, "schema": {"type": "string"}}),
            )),
            429 | 503 | 507 => headers.push(("Retry-After", header("Retry-After"))),
            // Only a command whose `Idempotency-Key` is in use right now has it.
            409 => headers.push((
                "Retry-After",
                json!({"description": "When a command with the same key is running.",
                    "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"}}),
            )),
            _ => {}
        }
        let titles: Vec<&str> = kinds.iter().map(|k| k.title()).collect();
        responses.insert(
            problem_response_name(status),
            response(&titles.join("; "), &headers, Some((PROBLEM_JSON, schema))),
        );
    }
    responses
}

fn one_of_kinds(kinds: &[Kind]) -> Value {
    let refs: Vec<Value> = kinds
        .iter()
        .map(|k| reference(&super::schemas::problem_schema(*k)))
        .collect();
    match refs.as_slice() {
        [one] => one.clone(),
        _ => json!({"oneOf": refs}),
    }
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
            paths: Map::new(),
        }
    }

    /// Whether requests need a bearer token (the server has tokens).
    fn auth(&self) -> bool {
        self.config.auth.enabled()
    }

    /// Adds operation `op` of `method` on `path`, the route `pattern` of `ROUTES` (whose access
    /// level says what the operation needs): with tokens configured, an operation that needs
    /// one gets the bearer scheme with its scope, a 401 and a 403; an open one says so.
    fn add(&mut self, method: &str, path: &str, mut op: Value, problems: &[u16], pattern: &str) {
        // A pattern missing from the table is documented as needing the narrowest scope; the
        // drift test (`tests/tests/openapi.rs`) fails on it anyway.
        let access = super::super::ROUTES
            .iter()
            .find(|r| r.pattern == pattern)
            .map_or(Access::ADMIN, |r| r.access);
        let mut statuses = problems.to_vec();
        match access {
            Access::Open => op["security"] = json!([]),
            _ if !self.auth() => {
                // Explicitly none: this server has no tokens.
                op["security"] = json!([]);
            }
            _ => {
                let scopes: Vec<&str> = access.scope().map(Scope::name).into_iter().collect();
                op["security"] = json!([{"bearerAuth": scopes}]);
                statuses.extend([401, 403]);
                if let Some(scope) = access.scope() {
                    let description = op["description"].as_str().unwrap_or_default().to_owned();
                    op["description"] = json!(format!(
                        "{description}{}Needs a token with the `{scope}` scope.",
                        if description.is_empty() { "" } else { " " }
                    ));
                }
            }
        }
        statuses.sort_unstable();
        statuses.dedup();
        for status in statuses {
            let Ok(code) = actix_web::http::StatusCode::from_u16(status) else {
                continue;
            };
            let key = status.to_string();
            if op["responses"].get(&key).is_none() {
                op["responses"][key] = json!({
                    "$ref": format!("#/components/responses/{}", problem_response_name(code))
                });
            }
        }
        let item = self
            .paths
            .entry(path.to_owned())
            .or_insert_with(|| json!({}));
        item[method] = op;
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
        self.paths
    }

    fn page_limit(&self) -> Value {
        let server = &self.config.server;
        query_integer(
            "limit",
            1,
            server.page_size_max.get().try_into().unwrap_or(U64_MAX),
            &format!(
                "At most this many entries (default {}, `server.page_size_default`; at most {}, \
                 `server.page_size_max`).",
                server.page_size_default, server.page_size_max
            ),
        )
    }

    fn min_position(&self) -> Value {
        query_integer(
            "min_position",
            0,
            U64_MAX,
            &format!(
                "Read your writes: first wait (at most {} ms, `server.wait_max_ms`) until the \
                 view has processed this position, the `position` of a command's reply. A \
                 position beyond the log's head is a 400; a wait that runs out is a 503.",
                self.config.server.wait_max.as_millis()
            ),
        )
    }

    fn aggregate_id(example: &str) -> Value {
        path_text(
            "id",
            json!({"type": "string", "minLength": 1, "maxLength": AGGREGATE_ID_LEN_MAX,
                "examples": [example]}),
            &format!(
                "The aggregate id: 1 to {AGGREGATE_ID_LEN_MAX} bytes of UTF-8 (percent-encoded \
                 in the path) of visible characters: no control characters, whitespace, \
                 invisible format characters or U+FFFD. Anything else, longer, or \
                 percent-encodings that are not UTF-8, is a 400."
            ),
        )
    }

    fn aggregate(&mut self, api: &dyn ApiAggregate) {
        let route = api.route();
        let type_name = api.type_name();
        let known = self.schemas.aggregate(type_name);
        let example_id = format!("{}-1", route.chars().next().unwrap_or('x'));
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
                (
                    json!({"type": "object", "required": ["type"],
                        "properties": {"type": {"enum": api.command_types()}}}),
                    object.clone(),
                    object.clone(),
                    object.clone(),
                    object,
                )
            }
        };
        let mut examples = Map::new();
        for (name, value) in known.map(|s| s.examples.as_slice()).unwrap_or_default() {
            examples.insert(name.clone(), json!({"value": value}));
        }
        let mut body = json!({"schema": command});
        if !examples.is_empty() {
            body["examples"] = Value::Object(examples);
        }
        let state_op = format!("get_{route}_state");
        let history_op = format!("get_{route}_history");
        let by_id = |op: &str| json!({"operationId": op, "parameters": {"id": "$request.path.id"}});
        let mut ok = response(
            "Executed; durable before it is sent. With an `Idempotency-Key` used before for \
             this command, the stored outcome of the first execution (nothing is executed \
             again), marked by `Idempotent-Replayed: true`.",
            &[
                ("ETag", header("ETag")),
                (
                    "Idempotent-Replayed",
                    json!({"description": "`true` when the reply is the stored outcome of an \
                        earlier request with the same `Idempotency-Key`; absent otherwise.",
                        "schema": {"const": "true"}}),
                ),
            ],
            Some(("application/json", reply)),
        );
        ok["links"] = json!({"state": by_id(&state_op), "history": by_id(&history_op)});
        let rejected = response(
            "Rejected by the aggregate (`rejection` says why), or the `Idempotency-Key` was used \
             for another command. A retry of a rejected command with its `Idempotency-Key` gets \
             the stored rejection again, marked by `Idempotent-Replayed: true`.",
            &[(
                "Idempotent-Replayed",
                json!({"description": "`true` when the rejection is the stored outcome of an \
                    earlier request with the same `Idempotency-Key`; absent otherwise.",
                    "schema": {"const": "true"}}),
            )],
            Some((
                PROBLEM_JSON,
                json!({"oneOf": [
                    {"allOf": [
                        reference(&super::schemas::problem_schema(Kind::Rejected)),
                        {"properties": {"rejection": rejection}},
                    ]},
                    reference(&super::schemas::problem_schema(Kind::IdempotencyKeyReused)),
                ]}),
            )),
        );
        let trace = |name: &str, what: &str| {
            json!({
                "name": name, "in": "header", "required": false,
                "description": format!("{what}: 1 to {TRACE_ID_LEN_MAX} bytes of visible ASCII, \
                    recorded in every event of the command."),
                "schema": {"type": "string", "minLength": 1, "maxLength": TRACE_ID_LEN_MAX,
                    "pattern": HEADER_TEXT},
            })
        };
        let server = &self.config.server;
        self.add(
            "post",
            &format!("/v1/{route}/{{id}}/commands"),
            json!({
                "operationId": format!("execute_{route}_command"),
                "tags": [route],
                "summary": format!("Execute a command on {}", a(type_name)),
                "description": format!(
                    "Executes one command on {type_name} `id` (created by its first event). The \
                     body is the command as JSON, tagged by `type` ({}), at most {} bytes \
                     (`server.body_bytes_max`), received within {} ms of the request's head \
                     (`server.body_read_timeout_ms`; else 408 and the connection is closed). \
                     The reply is sent once the events are durable; a command not answered \
                     within {} ms (`server.request_deadline_ms`) gets a 503 saying its outcome \
                     is unknown (retry with the same `Idempotency-Key`).{}",
                    api.command_types().join(", "),
                    server.body_bytes_max,
                    server.body_read_timeout.as_millis(),
                    server.request_deadline.as_millis(),
                    process_only_text(api.process_only_commands()),
                ),
                "parameters": [
                    Self::aggregate_id(&example_id),
                    {
                        "name": "Idempotency-Key", "in": "header", "required": false,
                        "description": format!("The command id: 1 to {COMMAND_ID_LEN_MAX} bytes \
                            of visible ASCII. A retry with the same key returns the first \
                            outcome without executing again, even after a restart; the same key \
                            with another command is a 422."),
                        "schema": {"type": "string", "minLength": 1, "maxLength": COMMAND_ID_LEN_MAX,
                            "pattern": HEADER_TEXT},
                    },
                    {
                        "name": "If-Match", "in": "header", "required": false,
                        "description": "Execute only if the aggregate is at this version: one \
                            strong entity tag in canonical decimal (`\"3\"`, as in `ETag`; \
                            `\"0\"`: it must not exist yet), else 409 with the current version. \
                            A weak tag (`W/\"3\"`) or an empty field never matches for \
                            `If-Match` (RFC 9110, 13.1.1): 412. `*` is not supported (400: send the version), nor are \
                            a bare `3`, leading zeros, a sign or several tags (400).",
                        "schema": {"type": "string",
                            "pattern": "^\"(0|[1-9][0-9]{0,18})\"$",
                            "examples": ["\"0\""]},
                    },
                    trace("X-Correlation-Id", "The correlation id"),
                    trace("X-Causation-Id", "The causation id"),
                ],
                "requestBody": {"required": true, "content": {"application/json": body}},
                "responses": {"200": ok, "422": rejected},
            }),
            &[400, 403, 408, 409, 412, 413, 415, 429, 500, 503, 507],
            "/v1/{aggregate}/{id}/commands",
        );
        self.add(
            "get",
            &format!("/v1/{route}/{{id}}"),
            json!({
                "operationId": state_op,
                "tags": [route],
                "summary": format!("The state of {}, now or in the past", a(type_name)),
                "description": "The current state; with `version`, the state right after that \
                    event; with `as_of`, the state at that time (from the nearest snapshot, \
                    then replay). Give at most one of `version` and `as_of` (both: 400).",
                "parameters": [
                    Self::aggregate_id(&example_id),
                    // One exploded object (`?version=3` or `?as_of=...`), so that the schema
                    // can say "at most one of them" (`maxProperties`), which two separate
                    // parameters cannot.
                    {
                        "name": "at", "in": "query", "required": false,
                        "style": "form", "explode": true,
                        "description": "Which past state: `version` or `as_of`, each its own \
                            query parameter, at most one of them (both: 400). Neither: the \
                            current state.",
                        "schema": {
                            "type": "object",
                            "properties": {
                                "version": {"type": "integer", "minimum": 1, "maximum": U64_MAX,
                                    "description": "The state as of this version."},
                                "as_of": {"type": "string", "format": "date-time",
                                    "pattern": TIME_SINCE_1971,
                                    "description": "The state as of this time (RFC 3339, any \
                                        offset; before 1970 is a 400)."},
                            },
                            "additionalProperties": false,
                            "maxProperties": 1,
                        },
                    },
                ],
                "responses": {"200": response(
                    "The state and its version.",
                    &[("ETag", header("ETag"))],
                    Some(("application/json", state)),
                )},
            }),
            &[400, 404, 500, 503],
            "/v1/{aggregate}/{id}",
        );
        self.add(
            "get",
            &format!("/v1/{route}/{{id}}/events"),
            json!({
                "operationId": history_op,
                "tags": [route],
                "summary": format!("The events of {} (its audit log), paged", a(type_name)),
                "description": "Oldest first, from version `from`. An aggregate without events \
                    has an empty history.",
                "parameters": [
                    Self::aggregate_id(&example_id),
                    query_integer("from", 0, U64_MAX, "The first version (default 1; 0 reads as 1)."),
                    self.page_limit(),
                ],
                "responses": {"200": ok_json("A page of events.", history)},
            }),
            &[400, 500, 503],
            "/v1/{aggregate}/{id}/events",
        );
    }

    fn log(&mut self) {
        let after = |max: u64, default: &str| {
            query_integer(
                "after",
                0,
                max,
                &format!("Events after this position (default {default})."),
            )
        };
        self.add(
            "get",
            "/v1/events",
            json!({
                "operationId": "global_log",
                "tags": ["log"],
                "summary": "The global log, paged by position",
                "description": "Every committed event of every aggregate, in commit order.",
                "parameters": [after(U64_MAX - 1, "0: from the start"), self.page_limit()],
                "responses": {"200": ok_json("A page of the log.", reference("LogPage"))},
            }),
            &[400, 500, 503],
            "/v1/events",
        );
        self.add(
            "get",
            "/v1/events/live",
            json!({
                "operationId": "live_feed",
                "tags": ["log"],
                "summary": "The live feed of committed events (Server-Sent Events)",
                "description": format!(
                    "A stream that does not end until the client disconnects or the server \
                     stops. It starts with `retry: 1000`, then sends every event after the \
                     starting position as `id: {{position}}` and `data: {{envelope as JSON, \
                     see AnyEnvelope}}`, and a `: keep-alive` comment every {} ms when idle. \
                     Reconnect with `Last-Event-ID` set to the last `id` received to resume \
                     with no gap and no duplicate. At most {} feeds are open at once \
                     (`server.sse_connections_max`; beyond that, 503) and at most {} per client \
                     address (`server.sse_connections_per_client_max`; beyond that, 429). A \
                     feed's slot is freed as soon as its client disconnects.",
                    self.config.server.sse_keepalive.as_millis(),
                    self.config.server.sse_connections_max,
                    self.config.server.sse_connections_per_client_max,
                ),
                "parameters": [
                    after(U64_MAX, "the head: only new events"),
                    {
                        "name": "Last-Event-ID", "in": "header", "required": false,
                        "description": "Resume after this position (the last `id:` received); \
                            it takes precedence over `after`.",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                    },
                ],
                "responses": {"200": response(
                    "The event stream; the schema is that of each event in it.",
                    &[],
                    Some(("text/event-stream", reference("LiveEvent"))),
                )},
            }),
            &[400, 429, 500, 503],
            "/v1/events/live",
        );
    }

    fn projection_name(&self) -> Value {
        // Visible ASCII but `#`, `/` and `@`: every name a subscriber is registered under. A
        // name with letters beyond ASCII is well formed too, and unknown (404).
        let mut schema = json!({"type": "string",
            "pattern": format!("^[!-\"$-.0-?A-~]{{1,{}}}$", annals::subscription::NAME_LEN_MAX)});
        if !self.projection_names.is_empty() {
            schema["examples"] = json!(self.projection_names);
        }
        path_text(
            "name",
            schema,
            "The subscriber's name, as `GET /v1/projections` lists it: 1 to 64 bytes of \
             visible characters without `@`, `#` or `/` (else 400; a rebuild in progress, \
             `{name}#rebuild`, cannot be addressed).",
        )
    }

    fn projections(&mut self) {
        self.add(
            "get",
            "/v1/projections",
            json!({
                "operationId": "list_projections",
                "tags": ["projections"],
                "summary": "Every subscriber, its checkpoint, lag and status",
                "responses": {"200": ok_json("The subscribers.", reference("Subscribers"))},
            }),
            &[503],
            "/v1/projections",
        );
        self.add(
            "post",
            "/v1/projections/{name}/rebuild",
            json!({
                "operationId": "rebuild_projection",
                "tags": ["projections"],
                "summary": "Rebuild a projection without downtime",
                "description": "Starts rebuilding the projection from position 0 beside the \
                    live one; queries keep being answered from the live one until the rebuild \
                    reaches the head and is swapped in. `GET /v1/projections` shows its \
                    progress as `{name}#rebuild`.",
                "parameters": [self.projection_name()],
                "responses": {"202": ok_json("The rebuild has started.", reference("RebuildStarted"))},
            }),
            &[400, 404, 409, 500, 503],
            "/v1/projections/{name}/rebuild",
        );
        self.add(
            "get",
            "/v1/projections/{name}/parked",
            json!({
                "operationId": "list_parked",
                "tags": ["projections"],
                "summary": "The events a subscriber parked",
                "parameters": [self.projection_name()],
                "responses": {"200": ok_json("The parked events.", reference("ParkedEvents"))},
            }),
            &[400, 404, 500, 503],
            "/v1/projections/{name}/parked",
        );
        self.add(
            "post",
            "/v1/projections/{name}/parked/{position}/retry",
            json!({
                "operationId": "retry_parked",
                "tags": ["projections"],
                "summary": "Handle a parked event again",
                "description": "For a process manager, the event is handled again and leaves \
                    the parked list if that succeeds; for a projection, the projection is \
                    rebuilt instead (its records may have moved past the event).",
                "parameters": [
                    self.projection_name(),
                    path_text("position", json!({"type": "integer", "minimum": 0, "maximum": U64_MAX}),
                        "The parked event's position."),
                ],
                "responses": {"200": ok_json("Retried.", reference("ParkedRetried"))},
            }),
            &[400, 404, 409, 500, 503],
            "/v1/projections/{name}/parked/{position}/retry",
        );
    }

    fn views(&mut self) {
        let customer = || {
            path_text(
                "id",
                json!({"type": "string", "minLength": 1, "examples": ["c-1"]}),
                "The customer id, checked as aggregate ids are (else 400).",
            )
        };
        self.add(
            "get",
            "/v1/views/customers/{id}",
            json!({
                "operationId": "customer_summary",
                "tags": ["views"],
                "summary": "A customer's summary (read model)",
                "description": "Name, credit limit, available credit, orders by status and \
                    total shipped, from the `customer-summaries` projection.",
                "parameters": [customer(), self.min_position()],
                "responses": {"200": ok_json("The summary.", reference("CustomerSummary"))},
            }),
            &[400, 404, 500, 503],
            "/v1/views/customers/{id}",
        );
        self.add(
            "get",
            "/v1/views/customers/{id}/orders",
            json!({
                "operationId": "customer_orders",
                "tags": ["views"],
                "summary": "A customer's orders (read model)",
                "parameters": [customer(), self.min_position(), self.page_limit()],
                "responses": {"200": ok_json("The orders.", reference("CustomerOrders"))},
            }),
            &[400, 500, 503],
            "/v1/views/customers/{id}/orders",
        );
        self.add(
            "get",
            "/v1/views/valuable-customers",
            json!({
                "operationId": "valuable_customers",
                "tags": ["views"],
                "summary": "Customers created after a time with a shipped order of at least a total",
                "description": format!(
                    "From the `valuable-customers` projection, oldest customer first, paged: \
                     one request reads at most {} records of the view ({} × \
                     `server.page_size_max`), so a page may hold fewer than `limit` customers \
                     (even none) and still have a `next_after`; pass it as `after` to continue. \
                     `next_after` is null once the scan has reached the end.",
                    super::super::read::VALUABLE_SCAN_PER_PAGE_ENTRY
                        .saturating_mul(self.config.server.page_size_max.get()),
                    super::super::read::VALUABLE_SCAN_PER_PAGE_ENTRY,
                ),
                "parameters": [
                    {
                        "name": "created_after", "in": "query", "required": false,
                        "description": "Customers created strictly after this time (RFC 3339; \
                            default: any; before 1970 is a 400).",
                        "schema": {"type": "string", "format": "date-time", "pattern": TIME_SINCE_1971},
                    },
                    query_integer("min_order_total", 0, U64_MAX,
                        "... with a shipped order whose total is at least this, in minor units (default 1)."),
                    {
                        "name": "after", "in": "query", "required": false,
                        "description": "Continue after this cursor: the `next_after` of the \
                            previous page (`{created_at µs}:{customer id}`); anything else is a \
                            400.",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,20}:.+$"},
                    },
                    self.min_position(),
                    self.page_limit(),
                ],
                "responses": {"200": ok_json("The customers.", reference("ValuableCustomers"))},
            }),
            &[400, 500, 503],
            "/v1/views/valuable-customers",
        );
    }

    fn operations(&mut self) {
        self.add(
            "get",
            "/livez",
            json!({
                "operationId": "livez",
                "tags": ["operations"],
                "summary": "Liveness: the process serves HTTP",
                "responses": {"200": ok_json("Live.", reference("Live"))},
            }),
            &[],
            "/livez",
        );
        self.add(
            "get",
            "/readyz",
            json!({
                "operationId": "readyz",
                "tags": ["operations"],
                "summary": "Readiness: commands can succeed",
                "description": "200 only when the store is open (not recovering, not failed to \
                    open), the journal has not failed (with `store.backend = \"postgres\"`: \
                    the database answers), no projection or process manager has failed, and, \
                    with the sled backend, the data directory's file system has at least \
                    `store.disk_free_bytes_min` bytes free; otherwise 503 naming every failing \
                    check in `checks` (`recovering`, `store failed to open (see the server \
                    log)`, `journal failed (write or fsync error)`, `database unreachable \
                    (PostgreSQL does not answer; see the server log)`, `journal shut down`, \
                    `subscriber NAME failed`, `disk free below store.disk_free_bytes_min`, \
                    `disk free space cannot be read (see the server log)`). Open to anyone, so \
                    it names what failed, never how: the details are in the server log.",
                "responses": {"200": ok_json("Ready.", reference("Ready"))},
            }),
            &[503],
            "/readyz",
        );
        self.add(
            "get",
            "/metrics",
            json!({
                "operationId": "metrics",
                "tags": ["operations"],
                "summary": "Prometheus metrics (text exposition format 0.0.4)",
                "description": "Commands by aggregate type, command type and outcome, command \
                    latency, responses by status class, journal batches and fsyncs, live \
                    actors, activations, evictions, and each subscriber's lag.",
                "responses": {"200": response(
                    "The metrics.",
                    &[],
                    Some(("text/plain", json!({"type": "string"}))),
                )},
            }),
            &[],
            "/metrics",
        );
        self.add(
            "get",
            "/openapi.json",
            json!({
                "operationId": "openapi",
                "tags": ["api description"],
                "summary": "This document (OpenAPI 3.1)",
                "responses": {"200": ok_json("The document.", json!({"type": "object",
                    "required": ["openapi", "info", "paths"]}))},
            }),
            &[],
            "/openapi.json",
        );
        self.add(
            "get",
            "/docs",
            json!({
                "operationId": "docs",
                "tags": ["api description"],
                "summary": "The API reference: this document as one self-contained HTML page",
                "description": "Needs no network access: no scripts, styles or fonts from \
                    elsewhere. The `type` of every problem links to its section here.",
                "responses": {"200": response(
                    "The page.",
                    &[],
                    Some(("text/html", json!({"type": "string"}))),
                )},
            }),
            &[],
            "/docs",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_responses_cover_every_kind() {
        let responses = problem_responses();
        for kind in Kind::ALL {
            let name = problem_response_name(kind.status());
            let text = responses[&name].to_string();
            assert!(
                text.contains(&super::super::schemas::problem_schema(kind)),
                "{kind:?}"
            );
        }
        assert!(responses.contains_key("UnprocessableEntity"));
        assert!(responses.contains_key("ServiceUnavailable"));
    }
}
