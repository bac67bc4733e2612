//! The API description: `GET /openapi.json` (OpenAPI 3.1) and `GET /docs` (the same document
//! as one HTML page, served by the binary itself, nothing loaded from elsewhere).
//!
//! The document is generated from the code of the server that serves it, per request:
//! - the aggregate routes from the registry the handlers use ([`AppState::aggregates`]), one
//!   set of paths per registered type;
//! - request bodies, events, states, rejections and read models from the domain's own serde
//!   types, through `schemars` (`openapi/schemas.rs`);
//! - problem details from [`Kind::ALL`](super::problem::Kind::ALL): one schema and one `/docs`
//!   section per kind, so every problem's `type` URI resolves to an anchor of the page;
//! - bounds from the configuration (page size, body size, waits), and authentication from
//!   `auth.tokens` and the access level of each route in [`ROUTES`](super::ROUTES): with
//!   tokens, every route but health and the description declares the bearer scheme with the
//!   scope it needs, a 401 and a 403; without, nothing needs a token and the document says so.
//!
//! - the query parameters of each route from the handler's own query struct (`StateQuery`,
//!   `LogQuery`, ...), through `schemars` (`openapi/query.rs`), with the bounds and wording the
//!   type cannot give adjusted per route.
//!
//! What else the handlers read and answer (path and header parameters, statuses, the shapes
//! they build with `json!`) is listed by hand in `openapi/paths.rs`, as typed operations
//! (`openapi/operation.rs`), and `openapi/schemas.rs`. Three things keep the two from drifting: a test (`tests/tests/openapi.rs`)
//! compares the documented paths with the routes registered in `routes()`, requests every
//! documented operation and checks the answers against the document; the schemathesis run in
//! CI (`.ci/schemathesis`) does the same with generated requests; and the exhaustive matches on
//! [`Kind`](super::problem::Kind) do not compile when a kind is added.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::aggregates::ApiAggregate;
use super::AppState;

mod components;
mod html;
mod kinds;
mod operation;
mod paths;
mod query;
mod schemas;

/// The OpenAPI version written.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// The document for the server whose state is `state`.
pub fn document_for(state: &AppState) -> Value {
    let schemas = schemas::Schemas::domain();
    // Rebuilds in progress (`name#rebuild`) are listed but cannot be addressed.
    let projection_names: Vec<String> = state
        .try_runtime()
        .map(|runtime| {
            runtime
                .subscribers()
                .into_iter()
                .map(|s| s.name)
                .filter(|name| !name.contains('#'))
                .collect()
        })
        .unwrap_or_default();
    let apis: Vec<&dyn ApiAggregate> = state.aggregates.iter().map(AsRef::as_ref).collect();
    let config = &state.config;
    let paths = paths::Paths::new(&schemas, config, projection_names).build(&apis);
    let auth = if config.auth.enabled() {
        "This server has tokens configured (`auth.tokens`): every route but `/livez`, `/readyz`, \
         `/openapi.json` and `/docs` needs one, paths that match no route included (401 without \
         a valid token, so the route table cannot be probed), and the token needs the route's \
         scope (403 otherwise): `read` for queries and the live feed, `commands` for commands, \
         `admin` for rebuilds, parked retries, `/metrics` and the process-only commands."
    } else {
        "This server has no tokens configured (`auth.tokens` is empty): no route needs one, and \
         the process-only commands (sent by the `order-credit` saga) are always refused with \
         403."
    };
    let mut tags: Vec<Value> = apis
        .iter()
        .map(|api| {
            json!({
                "name": api.route(),
                "description": format!(
                    "The {} aggregate: commands ({}), state, history.",
                    api.type_name(),
                    api.command_types().join(", ")
                ),
            })
        })
        .collect();
    tags.extend([
        json!({"name": "log", "description": "The global log of committed events, paged and live."}),
        json!({"name": "projections", "description": "Subscribers (projections and process \
            managers): status and lag, rebuilds, parked events."}),
        json!({"name": "views", "description": "Read models: queries the event log cannot \
            answer, with read-your-writes through `min_position`."}),
        json!({"name": "operations", "description": "Health and metrics."}),
        json!({"name": "api description", "description": "This document, as JSON and as HTML."}),
        json!({"name": "console", "description": "The web console at `/console`, and what \
            only it needs: the overview and the search of aggregate ids."}),
    ]);
    json!({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Annals",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "An event-sourced service: commands to aggregates, their state and \
                history, the global log, live events, projections and read models.",
            "description": format!(
                "Commands go to aggregates (`POST /v1/{{aggregate}}/{{id}}/commands`); each \
                 accepted command records events durably before its reply, which carries the \
                 aggregate's new version (`ETag`) and the position of its last event in the \
                 global log. Commands can be made idempotent (`Idempotency-Key`) and \
                 conditional (`If-Match`). Projections turn the log into read models; a query \
                 given a command's position (`min_position`) waits until it is reflected.\n\n\
                 Errors are RFC 9457 problem details (`application/problem+json`); the `type` \
                 of each links to its section of `/docs`. Limits answer 429 or 503 with \
                 `Retry-After`. Every response has an `X-Request-Id` header (the client's, if \
                 it sent a plain one of 1 to 64 characters). A method a route does not list is \
                 a 405 with an `Allow` header, a path no route matches a 404, both as \
                 problems. `HEAD` is answered wherever `GET` is. Paths are matched as actix \
                 decodes them (`%76` is `v`); percent-encodings that do not decode to UTF-8 are \
                 a 400. Every request is handled within `server.request_deadline_ms` \
                 ({deadline} ms; 503 beyond).\n\n\
                 Malformed HTTP is answered by the HTTP layer before any route is chosen, \
                 with an empty body (not a problem document), and the connection is closed: a \
                 request line or header that cannot be parsed (a bad `Content-Length`, both \
                 `Content-Length` and `Transfer-Encoding`, control bytes in a header, a space \
                 in the path) is a 400; a request head larger than 128 KiB (a huge path) or \
                 with more than 96 headers is a 431; a head not received within \
                 `server.request_timeout_ms` is a 408. None of these is ever a 5xx. A client \
                 that closes its side of the connection (a half-close) is taken to be gone: the \
                 connection is shut down without an answer.\n\n{auth}",
                deadline = config.server.request_deadline.as_millis(),
            ),
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "responses": components::problem_responses(),
            "headers": components::header_components(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": format!(
                        "A token from the server's `auth.tokens`, sent as `Authorization: \
                         Bearer TOKEN` (the health endpoints and the API description stay \
                         open). Each token has scopes (`read`, `commands`, `admin`; a token \
                         configured without scopes has all three); the scopes an operation's \
                         security requirement lists are the ones it needs. A missing or \
                         unknown token is a 401 with `WWW-Authenticate`, a token without the \
                         scope a 403. {auth}"
                    ),
                },
            },
        },
    })
}

/// `GET /openapi.json`.
pub async fn document(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(document_for(&state))
}

/// `GET /docs`.
pub async fn docs(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html::render(&document_for(&state)))
}
