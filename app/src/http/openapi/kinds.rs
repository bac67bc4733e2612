//! What the document says about each [`Kind`] of problem: when it happens and which extension
//! members its body carries (`problem.rs`, and the handlers that add members with
//! `Problem::with`).
//!
//! The matches are exhaustive on purpose: a new kind does not compile until it is documented.

use serde_json::{json, Value};

use super::super::problem::Kind;

/// An extension member of a problem body.
#[derive(Debug)]
pub(super) struct Member {
    /// Its name.
    pub(super) name: &'static str,
    /// Its schema.
    pub(super) schema: Value,
    /// Whether every problem of the kind has it.
    pub(super) required: bool,
}

fn member(name: &'static str, required: bool, schema: Value) -> Member {
    Member {
        name,
        schema,
        required,
    }
}

fn integer(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": u64::MAX, "description": description})
}

fn retry_after() -> Member {
    member(
        "retry_after_seconds",
        true,
        json!({"type": "integer", "minimum": 1, "maximum": u64::MAX,
            "description": "Seconds to wait before retrying (also the `Retry-After` header)."}),
    )
}

/// The extension members of `kind`'s problems.
pub(super) fn extensions(kind: Kind) -> Vec<Member> {
    match kind {
        Kind::BadRequest => vec![
            member(
                "parameter",
                false,
                json!({"type": "string", "description": "The query parameter at fault."}),
            ),
            member(
                "command_types",
                false,
                json!({"type": "array", "items": {"type": "string"},
                    "description": "The command types the aggregate accepts (the body could \
                        not be read as one of them)."}),
            ),
            member(
                "limit",
                false,
                integer("The limit a command exceeded (events per command, bytes per event)."),
            ),
        ],
        Kind::Conflict => vec![
            member(
                "expected_version",
                false,
                integer("The version the request expected (`If-Match`)."),
            ),
            member(
                "current_version",
                false,
                integer("The aggregate's current version: re-read it, then decide again."),
            ),
            member(
                "retry_after_seconds",
                false,
                json!({"type": "integer", "minimum": 1, "maximum": u64::MAX,
                    "description": "When a command with the same `Idempotency-Key` is still \
                        running: retry after this many seconds to receive its outcome."}),
            ),
        ],
        Kind::PayloadTooLarge => vec![member(
            "limit",
            true,
            integer(
                "The most bytes a body (`server.body_bytes_max`) or an encoded command \
                 (`runtime.command_bytes_max`) may have.",
            ),
        )],
        Kind::Rejected => vec![member(
            "rejection",
            true,
            json!({"type": "object", "required": ["type"],
                "description": "The aggregate's rejection, tagged by `type`."}),
        )],
        Kind::Forbidden => vec![
            member(
                "scope",
                false,
                json!({"enum": ["read", "commands", "admin"],
                    "description": "The scope the route or command needs."}),
            ),
            member(
                "command_type",
                false,
                json!({"type": "string",
                    "description": "The process-only command that was refused."}),
            ),
        ],
        Kind::TooManyRequests | Kind::OutcomeUnknown | Kind::InsufficientStorage => {
            vec![retry_after()]
        }
        Kind::Unavailable => vec![
            retry_after(),
            member(
                "checks",
                false,
                json!({"type": "array", "items": {"type": "string"},
                    "description": "`/readyz`: every failing readiness check."}),
            ),
            member(
                "reached_position",
                false,
                integer("A read-your-writes wait: the position the view had reached."),
            ),
        ],
        Kind::Internal => vec![member(
            "request_id",
            true,
            json!({"type": "string",
                "description": "The request id (also `X-Request-Id`) under which the server \
                    log has the error."}),
        )],
        Kind::Unauthorized
        | Kind::NotFound
        | Kind::MethodNotAllowed
        | Kind::RequestTimeout
        | Kind::PreconditionFailed
        | Kind::UnsupportedMediaType
        | Kind::IdempotencyKeyReused => Vec::new(),
    }
}

/// When `kind` happens and what the client should do.
pub(super) fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::BadRequest => {
            "The request is malformed: a body that is not JSON or not a command of the \
             aggregate (unknown `type`, missing or mistyped field), a bad path, query parameter \
             or header (`If-Match`, `Idempotency-Key`, `Last-Event-ID`), a `limit` outside \
             1 to `server.page_size_max`, a `min_position` beyond the log's head, or a command \
             that exceeds the events-per-command or bytes-per-event limit. Fix the request; \
             retrying it as is fails the same way."
        }
        Kind::Unauthorized => {
            "The server has `auth.tokens` configured and the request has no `Authorization: \
             Bearer` header with one of them. Every route but `/livez`, `/readyz`, \
             `/openapi.json` and `/docs` needs a token, paths that match no route included (so \
             the route table cannot be probed without one). The response has a \
             `WWW-Authenticate` header."
        }
        Kind::Forbidden => {
            "The token is valid but lacks the scope the route needs (`scope` names it): `read` \
             for queries, `commands` for commands, `admin` for rebuilds, parked retries and \
             `/metrics`. Or the command is one only the `order-credit` process manager may send \
             (`ReserveCredit`, `ReleaseCredit`, `ApproveOrder`, `RejectOrder`; `command_type` \
             names it): these need a token with the `admin` scope, and are always refused on a \
             server without tokens. Nothing was executed."
        }
        Kind::RequestTimeout => {
            "The command's body did not arrive within `server.body_read_timeout_ms` of its \
             head. Nothing was executed; the server closes the connection. (A request head that \
             does not arrive within `server.request_timeout_ms` is answered 408 by the HTTP \
             layer itself, without a body.)"
        }
        Kind::InsufficientStorage => {
            "The disk holding the store has less free space than `store.disk_free_bytes_min`: \
             the command was refused before anything was written, and the service stays up and \
             ready for reads. Commands are taken again as soon as space is freed; retry after \
             `Retry-After`."
        }
        Kind::PreconditionFailed => {
            "`If-Match` holds a weak entity tag (`W/\"3\"`), or is empty (a list of no tags). \
             Neither ever matches for `If-Match` (RFC 9110, 13.1.1); send the strong `ETag` \
             (`\"3\"`) instead. Nothing was executed."
        }
        Kind::NotFound => {
            "No such route, aggregate type, aggregate (no events, or none at the version or \
             time asked), customer, projection or parked event."
        }
        Kind::MethodNotAllowed => {
            "The route exists but not with this method; the `Allow` header lists the methods \
             it has."
        }
        Kind::Conflict => {
            "The `If-Match` version is not the aggregate's current version (the body has \
             `expected_version` and `current_version`: re-read, decide again, resend); or a \
             command with the same `Idempotency-Key` is running right now (retry after \
             `Retry-After` to receive its outcome); or the projection is already being rebuilt; \
             or a parked event could not be retried."
        }
        Kind::PayloadTooLarge => {
            "The body is larger than `server.body_bytes_max`, or the encoded command larger than \
             `runtime.command_bytes_max`; `limit` says how large it may be."
        }
        Kind::UnsupportedMediaType => {
            "A command must be sent with `Content-Type: application/json` (or another \
             `application/*+json` type)."
        }
        Kind::Rejected => {
            "The aggregate refused the command for a business reason; `rejection` says which \
             (its `type` is one of the aggregate's rejections). Nothing was recorded. With an \
             `Idempotency-Key`, a retry returns the same rejection."
        }
        Kind::IdempotencyKeyReused => {
            "The `Idempotency-Key` was used before for a different command (another body or \
             aggregate). Use a fresh key for a new command."
        }
        Kind::TooManyRequests => {
            "This aggregate has `runtime.mailbox_capacity` commands queued, or this client \
             address holds `server.sse_connections_per_client_max` live feeds: slow down and \
             retry after `Retry-After` seconds. Nothing was executed."
        }
        Kind::Unavailable => {
            "The service cannot take this request now: the store is still being opened and \
             recovered (or could not be), the journal has failed or is full, \
             `server.in_flight_max` commands, `server.sse_connections_max` live feeds, \
             `server.reads_in_flight_max` store reads or `server.rebuilds_max` rebuilds are \
             running, the server is shutting down, a `min_position` wait did not reach its \
             position within `server.wait_max_ms`, or a query was not answered within \
             `server.request_deadline_ms`. Retry after `Retry-After` seconds. A command refused \
             this way was not executed."
        }
        Kind::OutcomeUnknown => {
            "The aggregate stopped while executing the command, or the command was not answered \
             within `server.request_deadline_ms`: it may or may not have been recorded. Retry \
             with the same `Idempotency-Key` to learn its outcome safely."
        }
        Kind::Internal => {
            "The store failed or an unexpected error happened: the server's fault. The detail \
             says nothing more; the server log has the error under the request id \
             (`request_id`, also the `X-Request-Id` header): quote it."
        }
    }
}
