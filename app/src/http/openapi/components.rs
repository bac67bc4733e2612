//! The components the operations refer to: the headers every response may carry
//! (`components.headers`) and one problem response per status of [`Kind::ALL`]
//! (`components.responses`), so an operation lists a problem status by its code alone.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use serde_json::{json, Value};

use super::super::problem::{Kind, PROBLEM_JSON};
use super::operation::{Header, Or, Response};
use super::schemas::{problem_schema, reference};

/// The name of the response component of problems with `status`: its reason phrase in camel
/// case (`BadRequest`, `ServiceUnavailable`).
pub(super) fn problem_response_name(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("Error")
        .split([' ', '-'])
        .collect()
}

/// A `$ref` to a header component.
pub(super) fn header(name: &str) -> Or<Header> {
    Or::component("headers", name)
}

/// A `Retry-After` header's value.
fn retry_after() -> Value {
    json!({"type": "string", "pattern": "^[1-9][0-9]*$"})
}

/// The `X-Request-Id`, `Retry-After`, `WWW-Authenticate` and `ETag` headers.
pub(super) fn header_components() -> BTreeMap<&'static str, Or<Header>> {
    BTreeMap::from([
        (
            "X-Request-Id",
            Header::new(
                false,
                json!({"type": "string", "minLength": 1}),
                "The request id: the client's `X-Request-Id` if it is 1 to 64 of \
                 `A-Z a-z 0-9 - _ . :`, otherwise a fresh UUID. Every log line of the request \
                 carries it.",
            ),
        ),
        (
            "Retry-After",
            Header::new(
                true,
                retry_after(),
                "Seconds to wait before retrying, at least 1.",
            ),
        ),
        (
            "WWW-Authenticate",
            Header::new(
                true,
                json!({"type": "string"}),
                "`Bearer realm=\"annals\"`.",
            ),
        ),
        (
            "ETag",
            Header::new(
                true,
                json!({"type": "string", "pattern": "^\"[0-9]+\"$"}),
                "The aggregate's version as an entity tag (`\"3\"`): send it back in \
                 `If-Match` to make the next command conditional on nothing having changed.",
            ),
        ),
    ])
}

/// `components.responses`: one per status of [`Kind::ALL`], its body any of that status's kinds.
pub(super) fn problem_responses() -> BTreeMap<String, Response> {
    let mut statuses: Vec<StatusCode> = Kind::ALL.iter().map(|k| k.status()).collect();
    statuses.sort();
    statuses.dedup();
    let mut responses = BTreeMap::new();
    for status in statuses {
        let kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| k.status() == status)
            .collect();
        let titles: Vec<&str> = kinds.iter().map(|k| k.title()).collect();
        let response = Response::new(&titles.join("; "), PROBLEM_JSON, one_of_kinds(&kinds));
        let response = match status.as_u16() {
            401 => response.header("WWW-Authenticate", header("WWW-Authenticate")),
            405 => response.header(
                "Allow",
                Header::new(
                    true,
                    json!({"type": "string"}),
                    "The methods the route has (`GET, HEAD` or `POST`).",
                ),
            ),
            429 | 503 | 507 => response.header("Retry-After", header("Retry-After")),
            // Only a command whose `Idempotency-Key` is in use right now has it.
            409 => response.header(
                "Retry-After",
                Header::new(
                    false,
                    retry_after(),
                    "When a command with the same key is running.",
                ),
            ),
            _ => response,
        };
        responses.insert(problem_response_name(status), response);
    }
    responses
}

fn one_of_kinds(kinds: &[Kind]) -> Value {
    let refs: Vec<Value> = kinds
        .iter()
        .map(|k| reference(&problem_schema(*k)))
        .collect();
    match refs.as_slice() {
        [one] => one.clone(),
        _ => json!({"oneOf": refs}),
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
            let text = json!(responses[&name]).to_string();
            assert!(text.contains(&super::problem_schema(kind)), "{kind:?}");
        }
        assert!(responses.contains_key("UnprocessableEntity"));
        assert!(responses.contains_key("ServiceUnavailable"));
    }
}
