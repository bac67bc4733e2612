//! What every request goes through: a request id and a tracing span, and counting the
//! response's status. (Who may call a route is decided per route, after routing: `access.rs`.)
//!
//! The request id is the client's `X-Request-Id` when it is short and plain (so ids can be
//! followed across services), otherwise a fresh UUID; it is echoed in the response and is a
//! field of the span, so every log line of the request carries it. An internal error's problem
//! carries it as `request_id` too, since its detail says nothing else.
//!
//! Nothing a client sent reaches a log line unescaped: the span's path is the raw path (still
//! percent-encoded, so an encoded CR or LF stays `%0D%0A`) formatted with `Debug`, the method
//! is a validated token, and the request id is plain by construction. Handlers log client
//! text with `Debug` (`?`) fields only.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError as _};
use tracing::Instrument;

use super::problem::{Kind, Problem};
use super::AppState;

/// Longest client-supplied request id kept.
const REQUEST_ID_LEN_MAX: usize = 64;

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= REQUEST_ID_LEN_MAX
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// The response again, with `request_id` in its body, if it is an internal error's problem.
fn with_request_id(response: ServiceResponse<BoxBody>, id: &str) -> ServiceResponse<BoxBody> {
    let problem = response
        .response()
        .error()
        .and_then(|error| error.as_error::<Problem>())
        .filter(|problem| problem.kind() == Kind::Internal)
        .cloned();
    match problem {
        Some(problem) => {
            let (req, _) = response.into_parts();
            let rendered = problem.with("request_id", id).error_response();
            ServiceResponse::new(req, rendered)
        }
        None => response,
    }
}

/// The middleware (`actix_web::middleware::from_fn(observe)`).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = request_id(&req);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = ?req.path()
    );
    let state = req.app_data::<web::Data<AppState>>().cloned();
    async move {
        let response = with_request_id(next.call(req).await?.map_into_boxed_body(), &id);
        let status = response.status();
        if let Some(state) = &state {
            state.metrics.response(status.as_u16());
        }
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), "request done");
        }
        let mut response = response;
        if let Ok(value) = HeaderValue::from_str(&id) {
            response
                .headers_mut()
                .insert(header::HeaderName::from_static("x-request-id"), value);
        }
        Ok(response)
    }
    .instrument(span)
    .await
}
