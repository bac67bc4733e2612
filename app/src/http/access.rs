//! Who may call which route, decided on the route actix matched, never on the raw path; and
//! the deadline of each request.
//!
//! Every route is declared once, in [`super::ROUTES`], with its [`Access`]; a route cannot be
//! declared without one (the field is required), and `routes()` registers nothing but that
//! table. Each resource is wrapped in [`guarded`], which runs *after* actix has routed the
//! request to it — so percent-encoded (`/%761/events`), doubled-slash or dot-segment
//! spellings of a path are judged by what they reach, not by how they look — and covers the
//! resource's routes and its 405 answer alike. Deny by default: a path that matches no route
//! answers 404 only to a valid token (`not_found` asks for [`Access::Token`]), so
//! without a token the route table cannot be probed. Only `/livez`, `/readyz`,
//! `/openapi.json` and `/docs` are [`Access::Open`] (a unit test pins that list).
//!
//! With `auth.tokens` configured, a request needs `Authorization: Bearer TOKEN` (the scheme in
//! any case) with one of them — 401 with `WWW-Authenticate` otherwise — and the token needs the
//! route's [`Scope`] — 403 otherwise. Tokens are compared in constant time
//! ([`annals_config::AuthConfig::scopes_of`]). The scopes granted are put in the request's
//! extensions as a [`Grant`], for handlers that need more than the route's scope (a
//! process-only command needs `admin`). Without tokens every route is open and the grant is
//! anonymous: it has no scope.
//!
//! After admission, a path whose percent-encodings do not decode to UTF-8 is a 400 (actix's
//! extractors decode it lossily, which would make `a%FFb` and `a%FEb` one id); then the
//! handler runs within `server.request_deadline_ms` (503 with `Retry-After` beyond it). The
//! command route keeps its own deadlines (its body, then its execution: see `aggregates.rs`).

use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, Error, HttpMessage as _, HttpRequest, ResponseError as _};
use annals_config::{AuthConfig, Scope, Scopes};
use futures::future::{ready, Either};

use super::problem::{Kind, Problem};
use super::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a token: health and the API description only.
    Open,
    /// Any valid token: the answer to a path that matches no route.
    Token,
    /// A token with this scope.
    Scope(Scope),
}

impl Access {
    /// A token with the `read` scope.
    pub const READ: Access = Access::Scope(Scope::Read);
    /// A token with the `commands` scope.
    pub const COMMANDS: Access = Access::Scope(Scope::Commands);
    /// A token with the `admin` scope.
    pub const ADMIN: Access = Access::Scope(Scope::Admin);

    /// The scope needed, if any.
    pub fn scope(self) -> Option<Scope> {
        match self {
            Access::Scope(scope) => Some(scope),
            Access::Open | Access::Token => None,
        }
    }
}

/// What the request's token grants: put in the request's extensions by [`guarded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// `None`: the request carried no token (the route is open, or the server has none).
    scopes: Option<Scopes>,
}

impl Grant {
    /// No token: no scope.
    pub const ANONYMOUS: Grant = Grant { scopes: None };

    /// Whether the token has `scope`. An anonymous request has none.
    pub fn has(self, scope: Scope) -> bool {
        self.scopes.is_some_and(|scopes| scopes.contains(scope))
    }

    /// The grant of an admitted request; anonymous if it was not admitted by [`guarded`].
    pub fn of(req: &HttpRequest) -> Grant {
        req.extensions()
            .get::<Grant>()
            .copied()
            .unwrap_or(Grant::ANONYMOUS)
    }
}

/// The bearer token of `Authorization`, the scheme compared without regard to case
/// (RFC 9110, 11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// 401: no token, or not one of `auth.tokens`.
pub fn unauthorized() -> Problem {
    Problem::new(
        Kind::Unauthorized,
        "this route needs an Authorization: Bearer token from auth.tokens",
    )
}

/// 403: the token lacks `scope`.
pub fn forbidden(scope: Scope) -> Problem {
    Problem::new(
        Kind::Forbidden,
        format!("this token lacks the `{scope}` scope, which this route needs"),
    )
    .with("scope", scope.name())
}

/// Whether a request with `headers` may use a route of `access`, and what it is granted.
///
/// # Errors
/// 401 without a valid token, 403 with a token that lacks the scope; never when `auth` has
/// no tokens or the route is open.
pub fn admit(auth: &AuthConfig, headers: &HeaderMap, access: Access) -> Result<Grant, Problem> {
    if access == Access::Open || !auth.enabled() {
        return Ok(Grant::ANONYMOUS);
    }
    let scopes = bearer(headers)
        .and_then(|token| auth.scopes_of(token))
        .ok_or_else(unauthorized)?;
    if let Some(needed) = access.scope() {
        if !scopes.contains(needed) {
            return Err(forbidden(needed));
        }
    }
    Ok(Grant {
        scopes: Some(scopes),
    })
}

/// `raw` with every `%XX` decoded (a `%` not followed by two hex digits is kept as is).
pub fn percent_decoded(raw: &str) -> Vec<u8> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|h| char::from(*h).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits are at most 255.
                out.push(u8::try_from(high * 16 + low).unwrap_or(u8::MAX));
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// 400 if the raw path's percent-encodings do not decode to UTF-8.
pub fn check_raw_path(raw: &str) -> Result<(), Problem> {
    match std::str::from_utf8(&percent_decoded(raw)) {
        Ok(_) => Ok(()),
        Err(error) => Err(Problem::bad_request(format!(
            "the path's percent-encodings do not decode to UTF-8 (invalid byte sequence at \
             byte {} of the decoded path): ids and names are UTF-8 text",
            error.valid_up_to()
        ))),
    }
}

/// 503: the request was not handled within `deadline`.
fn past_deadline(deadline: Duration) -> Problem {
    Problem::overloaded(
        Kind::Unavailable,
        format!(
            "the request was not handled within {} ms (server.request_deadline_ms)",
            deadline.as_millis()
        ),
        Duration::from_secs(1),
    )
}

/// What [`guarded`] decides before the handler runs: the grant and the deadline, or the answer.
fn decide(req: &ServiceRequest, access: Access) -> Result<(Grant, Option<Duration>), Problem> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| Problem::internal("the application state is not registered"))?;
    let grant = admit(&state.config.auth, req.headers(), access)?;
    check_raw_path(req.uri().path())?;
    // The command route has its own deadlines (body, then execution).
    let deadline = (access != Access::COMMANDS).then_some(state.config.server.request_deadline);
    Ok((grant, deadline))
}

/// `resource` behind its [`Access`], its handler bounded by `server.request_deadline_ms`.
pub fn guarded(
    resource: actix_web::Resource,
    access: Access,
) -> actix_web::Resource<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = Error,
        InitError = (),
    >,
> {
    resource.wrap_fn(move |req: ServiceRequest, service| {
        match decide(&req, access) {
            Err(problem) => Either::Right(ready(Ok(req.into_response(problem.error_response())))),
            Ok((grant, deadline)) => {
                req.extensions_mut().insert(grant);
                // Kept to build the deadline's answer once the request has moved on.
                let request = req.request().clone();
                let call = service.call(req);
                Either::Left(async move {
                    let Some(deadline) = deadline else {
                        return call.await;
                    };
                    match tokio::time::timeout(deadline, call).await {
                        Ok(result) => result,
                        Err(_) => Ok(ServiceResponse::new(
                            request,
                            past_deadline(deadline).error_response(),
                        )),
                    }
                })
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;
    use annals_config::Token;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(header::AUTHORIZATION, value);
            }
        }
        headers
    }

    fn status(result: Result<Grant, Problem>) -> u16 {
        result.map_or_else(|p| p.kind().status().as_u16(), |_| 200)
    }

    #[test]
    fn scopes_decide_and_anonymous_has_none() {
        let auth = AuthConfig {
            tokens: vec![
                Token::scoped("read-token-0123456789", Scopes::of(&[Scope::Read])),
                Token::new("all-token-0123456789"),
            ],
        };
        let read = headers(Some("Bearer read-token-0123456789"));
        let all = headers(Some("bearer  all-token-0123456789 "));
        assert_eq!(status(admit(&auth, &read, Access::READ)), 200);
        assert_eq!(status(admit(&auth, &read, Access::ADMIN)), 403);
        assert_eq!(status(admit(&auth, &read, Access::Token)), 200);
        assert_eq!(status(admit(&auth, &all, Access::ADMIN)), 200);
        assert_eq!(status(admit(&auth, &headers(None), Access::Token)), 401);
        let basic = headers(Some("Basic read-token-0123456789"));
        assert_eq!(status(admit(&auth, &basic, Access::READ)), 401);
        assert_eq!(status(admit(&auth, &headers(None), Access::Open)), 200);
        let grant = admit(&auth, &all, Access::COMMANDS).unwrap_or(Grant::ANONYMOUS);
        assert!(grant.has(Scope::Admin));
        let none = AuthConfig::default();
        let grant = admit(&none, &headers(None), Access::ADMIN).unwrap_or(Grant {
            scopes: Some(Scopes::ALL),
        });
        assert!(!grant.has(Scope::Admin), "without tokens nobody is admin");
    }

    #[test]
    fn raw_paths_must_decode_to_utf8() {
        assert_eq!(percent_decoded("/a%2Fb%41%zz%4"), b"/a/bA%zz%4");
        assert!(check_raw_path("/v1/customers/M%C3%BCller").is_ok());
        assert!(check_raw_path("/v1/customers/a%FFb").is_err());
        assert!(check_raw_path("/v1/customers/a%FEb").is_err());
        assert!(check_raw_path("/v1/customers/%C3").is_err());
    }
}
