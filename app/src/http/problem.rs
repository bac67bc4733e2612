//! Errors as RFC 9457 problem details (`application/problem+json`), and the one place where the
//! runtime's errors become HTTP statuses.
//!
//! Every error the API returns is a [`Problem`]: a `type` URI (a link into the `/docs` page),
//! a `title` per type, a `detail` for this occurrence, the `status`, and extension members
//! where a client can act on them (`current_version` of a conflict, `rejection` of a business
//! refusal, `retry_after_seconds` of an overload). Statuses follow one rule: the client's
//! mistakes are 4xx, never 5xx; limits are 429 (this client should slow down) or 503 (the
//! server as a whole cannot take more), both with `Retry-After`.
//!
//! What a 5xx says is only what the client can act on: an internal error's detail is fixed
//! ("internal error", the request id to quote), and the error itself goes to the server log
//! (inside the request's span, so the log line carries the same request id). Errors of the
//! store are described by what they mean for the client, never by the engine's text or the
//! data directory's path.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use annals::store::StoreError;
use annals::{ExecuteError, Overload, SubscribeError, WaitError};
use serde_json::{Map, Value};

use crate::wire;

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The detail of every internal error: the error itself is in the server log.
pub const INTERNAL_DETAIL: &str = "internal error: the server log has the details under this \
    response's request id (the X-Request-Id header and the request_id member)";

/// `after` in whole seconds, rounded up, at least 1: what `Retry-After` says.
pub fn whole_seconds(after: Duration) -> u64 {
    (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1)
}

/// The kinds of problem, each with its status, title and `type` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// The request is malformed: bad JSON, unknown command type, invalid field or parameter.
    BadRequest,
    /// No or a wrong bearer token.
    Unauthorized,
    /// The token lacks the scope the route needs, or the command is one only a process
    /// manager may send.
    Forbidden,
    /// No such route, aggregate type, aggregate, projection or parked event.
    NotFound,
    /// The method is not allowed on the route.
    MethodNotAllowed,
    /// The body was not received within `server.body_read_timeout_ms`; the connection is
    /// closed.
    RequestTimeout,
    /// The expected version (`If-Match`) does not match, or a rebuild is already running.
    Conflict,
    /// `If-Match` holds a weak entity tag or no tag, which never matches (RFC 9110, 13.1.1).
    PreconditionFailed,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// The body is not JSON.
    UnsupportedMediaType,
    /// The aggregate refused the command for a business reason.
    Rejected,
    /// The idempotency key was used before for a different command.
    IdempotencyKeyReused,
    /// This aggregate has too many commands queued: slow down.
    TooManyRequests,
    /// The service cannot take more right now (journal queue, in-flight limit, starting,
    /// shutting down, a read-your-writes wait that ran out): retry later.
    Unavailable,
    /// The outcome of a command is unknown; retry with the same idempotency key.
    OutcomeUnknown,
    /// The disk holding the store is below `store.disk_free_bytes_min`: nothing was written;
    /// retry once space is freed.
    InsufficientStorage,
    /// The store failed or an unexpected error happened: the server's fault.
    Internal,
}

impl Kind {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Kind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Rejected | Kind::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Kind::Unavailable | Kind::OutcomeUnknown => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The short, fixed summary of the kind.
    pub fn title(self) -> &'static str {
        match self {
            Kind::BadRequest => "Bad request",
            Kind::Unauthorized => "Unauthorized",
            Kind::Forbidden => "Forbidden",
            Kind::NotFound => "Not found",
            Kind::MethodNotAllowed => "Method not allowed",
            Kind::RequestTimeout => "Request timeout",
            Kind::Conflict => "Conflict",
            Kind::PreconditionFailed => "Precondition failed",
            Kind::InsufficientStorage => "Insufficient storage",
            Kind::PayloadTooLarge => "Payload too large",
            Kind::UnsupportedMediaType => "Unsupported media type",
            Kind::Rejected => "Command rejected",
            Kind::IdempotencyKeyReused => "Idempotency key reused",
            Kind::TooManyRequests => "Too many requests",
            Kind::Unavailable => "Service unavailable",
            Kind::OutcomeUnknown => "Outcome unknown",
            Kind::Internal => "Internal server error",
        }
    }

    /// The `type` URI: an anchor of the API reference the binary serves at `/docs`.
    pub fn type_uri(self) -> &'static str {
        match self {
            Kind::BadRequest => "/docs#problem-bad-request",
            Kind::Unauthorized => "/docs#problem-unauthorized",
            Kind::Forbidden => "/docs#problem-forbidden",
            Kind::NotFound => "/docs#problem-not-found",
            Kind::MethodNotAllowed => "/docs#problem-method-not-allowed",
            Kind::RequestTimeout => "/docs#problem-request-timeout",
            Kind::Conflict => "/docs#problem-conflict",
            Kind::PreconditionFailed => "/docs#problem-precondition-failed",
            Kind::InsufficientStorage => "/docs#problem-insufficient-storage",
            Kind::PayloadTooLarge => "/docs#problem-payload-too-large",
            Kind::UnsupportedMediaType => "/docs#problem-unsupported-media-type",
            Kind::Rejected => "/docs#problem-rejected",
            Kind::IdempotencyKeyReused => "/docs#problem-idempotency-key-reused",
            Kind::TooManyRequests => "/docs#problem-too-many-requests",
            Kind::Unavailable => "/docs#problem-unavailable",
            Kind::OutcomeUnknown => "/docs#problem-outcome-unknown",
            Kind::Internal => "/docs#problem-internal",
        }
    }

    /// Every kind, for the documentation.
    pub const ALL: [Kind; 17] = [
        Kind::BadRequest,
        Kind::Unauthorized,
        Kind::Forbidden,
        Kind::NotFound,
        Kind::MethodNotAllowed,
        Kind::RequestTimeout,
        Kind::Conflict,
        Kind::PreconditionFailed,
        Kind::InsufficientStorage,
        Kind::PayloadTooLarge,
        Kind::UnsupportedMediaType,
        Kind::Rejected,
        Kind::IdempotencyKeyReused,
        Kind::TooManyRequests,
        Kind::Unavailable,
        Kind::OutcomeUnknown,
        Kind::Internal,
    ];
}

/// A problem detail, ready to be sent.
#[derive(Debug, Clone)]
pub struct Problem {
    kind: Kind,
    detail: String,
    retry_after: Option<Duration>,
    extensions: Map<String, Value>,
    /// A stored outcome answered again for a retried `Idempotency-Key` (a rejection): sent
    /// with `Idempotent-Replayed: true`, as a replayed success is.
    replayed: bool,
}

impl Problem {
    /// A problem of `kind` with a detail for this occurrence.
    pub fn new(kind: Kind, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            detail: detail.into(),
            retry_after: None,
            extensions: Map::new(),
            replayed: false,
        }
    }

    /// Marks the problem as the stored outcome of an earlier request with the same
    /// `Idempotency-Key` (sent with `Idempotent-Replayed: true`).
    #[must_use]
    pub fn replayed(mut self) -> Problem {
        self.replayed = true;
        self
    }

    /// 400 with `detail`.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(Kind::BadRequest, detail)
    }

    /// 404 with `detail`.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(Kind::NotFound, detail)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>, retry_after: Duration) -> Problem {
        Problem::new(Kind::Unavailable, detail).retry_after(retry_after)
    }

    /// 500: `error` goes to the log (in the request's span, with its request id), never to
    /// the client, whose detail only says where to look.
    pub fn internal(error: impl std::fmt::Display) -> Problem {
        // Debug formatting: an error may quote client input; the log line stays one line.
        tracing::error!(error = ?error.to_string(), "internal error");
        Problem::new(Kind::Internal, INTERNAL_DETAIL)
    }

    /// 503 at a limit: `what` is refused, retry after `retry_after`, the detail saying the same
    /// whole seconds as the `Retry-After` header.
    pub fn overloaded(kind: Kind, what: impl std::fmt::Display, retry_after: Duration) -> Problem {
        let seconds = whole_seconds(retry_after);
        let unit = if seconds == 1 { "second" } else { "seconds" };
        Problem::new(kind, format!("{what}; retry after {seconds} {unit}")).retry_after(retry_after)
    }

    /// Adds a `Retry-After` header (whole seconds, at least 1) and `retry_after_seconds`.
    #[must_use]
    pub fn retry_after(mut self, after: Duration) -> Problem {
        self.retry_after = Some(after);
        self
    }

    /// Adds an extension member.
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Problem {
        self.extensions.insert(name.to_owned(), value.into());
        self
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after.map(whole_seconds)
    }

    /// The extension member `name`, if set.
    pub fn member(&self, name: &str) -> Option<&Value> {
        self.extensions.get(name)
    }

    /// The body as it is sent.
    fn wire(&self) -> wire::api::Problem<'_> {
        wire::api::Problem {
            type_uri: self.kind.type_uri(),
            title: self.kind.title(),
            status: self.kind.status().as_u16(),
            detail: &self.detail,
            retry_after_seconds: self.retry_after_seconds(),
            extensions: &self.extensions,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        serde_json::to_value(self.wire()).unwrap_or(Value::Null)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.title(), self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.kind.status());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let Some(seconds) = self.retry_after_seconds() {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.kind == Kind::Unauthorized {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"annals\""),
            ));
        }
        if self.replayed {
            response.insert_header(("idempotent-replayed", "true"));
        }
        if self.kind == Kind::RequestTimeout {
            // The rest of the body may still arrive: nothing else can be read on this
            // connection.
            response.force_close();
        }
        // A body of text and numbers cannot fail to serialize.
        response.body(serde_json::to_vec(&self.wire()).unwrap_or_default())
    }
}

impl From<ExecuteError> for Problem {
    fn from(error: ExecuteError) -> Problem {
        let detail = error.to_string();
        match error {
            ExecuteError::Unregistered(_) => Problem::not_found(detail),
            ExecuteError::InvalidId(_) => Problem::bad_request(detail),
            ExecuteError::Overloaded {
                what, retry_after, ..
            } => {
                // A full mailbox is one hot aggregate: that client slows down. A full journal
                // queue is the whole service. The runtime's own text states the pause in its
                // own unit; the detail here says the header's whole seconds.
                match what {
                    Overload::Mailbox => Problem::overloaded(
                        Kind::TooManyRequests,
                        "this aggregate has runtime.mailbox_capacity commands queued",
                        retry_after,
                    ),
                    Overload::QueueTime => Problem::overloaded(
                        Kind::Unavailable,
                        "the service is overloaded: the command waited longer than \
                         runtime.queue_time_max_ms for its aggregate and was not executed",
                        retry_after,
                    ),
                    _ => Problem::overloaded(
                        Kind::Unavailable,
                        "the journal's queue is full (store.queue_capacity)",
                        retry_after,
                    ),
                }
            }
            ExecuteError::Conflict {
                expected, current, ..
            } => Problem::new(Kind::Conflict, detail)
                .with("expected_version", expected.0)
                .with("current_version", current.0),
            ExecuteError::CommandIdReused(_) => Problem::new(Kind::IdempotencyKeyReused, detail),
            ExecuteError::CommandInProgress(_) => {
                Problem::new(Kind::Conflict, detail).retry_after(Duration::from_millis(100))
            }
            ExecuteError::LimitExceeded { what, limit, .. } => {
                let kind = match what {
                    annals::Limit::CommandBytes => Kind::PayloadTooLarge,
                    // Too many or too large events: this command cannot be executed as sent.
                    _ => Kind::BadRequest,
                };
                Problem::new(kind, detail).with("limit", limit)
            }
            ExecuteError::OutcomeUnknown(_) => {
                Problem::new(Kind::OutcomeUnknown, detail).retry_after(Duration::from_millis(100))
            }
            ExecuteError::ShuttingDown => Problem::unavailable(detail, Duration::from_secs(1)),
            ExecuteError::Store(store) => Problem::from(store),
            other => Problem::internal(other),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Problem {
        match error {
            StoreError::Closed => {
                Problem::unavailable("the store is shut down", Duration::from_secs(1))
            }
            StoreError::Overloaded { .. } => Problem::overloaded(
                Kind::Unavailable,
                "the journal's queue is full (store.queue_capacity)",
                Duration::from_secs(1),
            ),
            // The journal stays healthy: it takes commands again once space is freed.
            StoreError::DiskFull { .. } => Problem::overloaded(
                Kind::InsufficientStorage,
                "the disk holding the store has less free space than \
                 store.disk_free_bytes_min: nothing was written; commands are taken again \
                 once space is freed",
                Duration::from_secs(5),
            ),
            // A failed journal stays failed until an operator restarts it: readiness says so.
            // Its reason (the engine's error, the path) is for the log.
            StoreError::Failed { .. } => {
                tracing::error!(error = ?error.to_string(), "the journal has failed");
                Problem::overloaded(
                    Kind::Unavailable,
                    "the journal has failed (a write or fsync error) and accepts no writes; the \
                     service reopens the store by itself once the disk has room again; a \
                     command in flight has an unknown outcome: retry it with the same \
                     Idempotency-Key",
                    Duration::from_secs(5),
                )
            }
            // An I/O error of the store (a full disk under sled, a device error): the service's
            // trouble, not the request's, and one that may pass (the supervisor reopens a
            // failed store). Its reason is for the log.
            StoreError::Io { .. } => {
                tracing::error!(error = ?error.to_string(), "a store operation failed");
                Problem::overloaded(
                    Kind::Unavailable,
                    "the store could not read or write (an I/O error, such as a full disk); try                      again later; a command in flight has an unknown outcome: retry it with the                      same Idempotency-Key",
                    Duration::from_secs(5),
                )
            }
            other => Problem::internal(other),
        }
    }
}

impl From<SubscribeError> for Problem {
    fn from(error: SubscribeError) -> Problem {
        let detail = error.to_string();
        match error {
            SubscribeError::Unknown(_) => Problem::not_found(detail),
            SubscribeError::AlreadyRebuilding(_) => Problem::new(Kind::Conflict, detail),
            SubscribeError::InvalidName(_) => Problem::bad_request(detail),
            SubscribeError::Store(store) => Problem::from(store),
            other => Problem::internal(other),
        }
    }
}

impl Problem {
    /// A read-your-writes wait that did not reach its position. `retry_after` is suggested for
    /// the timeout case.
    pub fn from_wait(error: &WaitError, retry_after: Duration) -> Problem {
        let detail = error.to_string();
        match error {
            WaitError::Unknown(_) => Problem::not_found(detail),
            WaitError::Timeout { reached, .. } => {
                Problem::unavailable(detail, retry_after).with("reached_position", reached.0)
            }
            // Its status may carry a failure's reason (an engine's error, a path): only the
            // log says it.
            WaitError::NotRunning { name, reached, .. } => Problem::overloaded(
                Kind::Unavailable,
                format!(
                    "{name} is stopped or failed at position {reached} and will not get further \
                     until an operator acts (GET /v1/projections, /readyz)"
                ),
                Duration::from_secs(5),
            )
            .with("reached_position", reached.0),
            _ => Problem::unavailable(detail, retry_after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let p = Problem::unavailable("x", Duration::from_millis(100));
        assert_eq!(p.retry_after_seconds(), Some(1));
        let p = Problem::unavailable("x", Duration::from_millis(2_100));
        assert_eq!(p.retry_after_seconds(), Some(3));
        assert_eq!(p.body()["retry_after_seconds"], 3);
    }

    #[test]
    fn body_has_the_rfc_9457_members() {
        let p = Problem::bad_request("no").with("field", "amount");
        let body = p.body();
        assert_eq!(body["status"], 400);
        assert_eq!(body["title"], "Bad request");
        assert_eq!(body["type"], "/docs#problem-bad-request");
        assert_eq!(body["detail"], "no");
        assert_eq!(body["field"], "amount");
    }

    #[test]
    fn the_detail_of_an_overload_says_the_seconds_of_the_header() {
        let p = Problem::overloaded(Kind::TooManyRequests, "busy", Duration::from_millis(100));
        assert_eq!(p.detail(), "busy; retry after 1 second");
        assert_eq!(p.body()["retry_after_seconds"], 1);
        let p = Problem::overloaded(Kind::Unavailable, "busy", Duration::from_millis(2_500));
        assert_eq!(p.detail(), "busy; retry after 3 seconds");
        assert_eq!(p.body()["retry_after_seconds"], 3);
    }

    #[test]
    fn internal_errors_keep_the_error_out_of_the_body() {
        let p = Problem::internal("cannot open /secret/data/db: permission denied");
        let body = p.body().to_string();
        assert!(!body.contains("/secret"), "{body}");
        assert_eq!(p.detail(), INTERNAL_DETAIL);
        assert_eq!(p.kind().status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn every_kind_has_a_distinct_type() {
        let mut types: Vec<_> = Kind::ALL.iter().map(|k| k.type_uri()).collect();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), Kind::ALL.len());
    }
}
