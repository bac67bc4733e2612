//! What every request goes through: a request id and a tracing span, bearer-token
//! authentication, and counting the response's status.
//!
//! The request id is the client's `X-Request-Id` when it is short and plain (so ids can be
//! followed across services), otherwise a fresh UUID; it is echoed in the response and is a
//! field of the span, so every log line of the request carries it.
//!
//! Authentication applies when `auth.tokens` is not empty, to `/v1/…` and `/metrics`; the
//! health endpoints and the API description stay open. Tokens are compared in constant time
//! (for tokens of the presented length; the length itself is not secret).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};
use subtle::ConstantTimeEq;
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

fn needs_auth(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/v1" || path == "/metrics"
}

fn authorized(state: &AppState, req: &ServiceRequest) -> bool {
    let tokens = &state.config.auth.tokens;
    if tokens.is_empty() || !needs_auth(req.path()) {
        return true;
    }
    let Some(presented) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
    else {
        return false;
    };
    let mut matched = subtle::Choice::from(0);
    for token in tokens {
        let token = token.expose().as_bytes();
        if token.len() == presented.len() {
            matched |= token.ct_eq(presented.as_bytes());
        }
    }
    matched.into()
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
        path = %req.path()
    );
    let state = req.app_data::<web::Data<AppState>>().cloned();
    async move {
        let response = match &state {
            Some(state) if !authorized(state, &req) => {
                let problem = Problem::new(
                    Kind::Unauthorized,
                    "this route needs an Authorization: Bearer token from auth.tokens",
                );
                req.into_response(problem.error_response())
            }
            _ => next.call(req).await?.map_into_boxed_body(),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_docs_stay_open() {
        assert!(needs_auth("/v1/orders/o-1"));
        assert!(needs_auth("/metrics"));
        assert!(!needs_auth("/livez"));
        assert!(!needs_auth("/readyz"));
        assert!(!needs_auth("/openapi.json"));
        assert!(!needs_auth("/docs"));
        assert!(!needs_auth("/v1x"));
    }
}
