//! Black-box tests of what `annals serve` promises a hostile client: a real server on
//! 127.0.0.1 port 0, spoken to over HTTP — raw TCP where a client library would normalize or
//! refuse what is sent.
//!
//! | area | what is checked |
//! |---|---|
//! | access | every route of `ROUTES` under every spelling (percent-encoded segments, `//`, dot segments, encoded dots, case, trailing slash, `%2F`) is a 401 without a token; a read token gets 403 from admin and command routes; an admin token works; unknown paths are 401 too (deny by default) |
//! | process-only commands | `ReserveCredit`, `ReleaseCredit`, `ApproveOrder`, `RejectOrder` are 403 without the `admin` scope (always, without tokens); the saga still decides; with `admin` they run |
//! | hostile input | ids and names that are not UTF-8, hold control characters, spaces, invisible characters or U+FFFD, and malformed positions are 400 on every route; malformed HTTP is a 4xx with the connection closed, never a 5xx; an encoded CR/LF never breaks a log line |
//! | what errors say | an unopenable store, a failed subscriber: `/readyz` and problems name what failed, never a path or an engine's error |
//! | limits | a trickled body is a 408 without holding an in-flight slot; a command past `server.request_deadline_ms` is an outcome-unknown 503 learned by retrying its key; a slow handler is a 503 at the deadline; disconnected live feeds free their slots at once; the per-client live-feed limit is a 429; rebuilds and store reads are bounded; a valuable-customers page reads a bounded number of records and continues by cursor |
//!
//! Every wait has a bound; no test asserts how fast something is.

#[allow(dead_code)] // Shared with tests/http.rs, which uses what this file does not.
mod http_support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use annals::{
    FailurePolicy, HandleFuture, HandlerError, Projection, RecordedEvent, Subscriber,
    SubscriberOptions,
};
use annals_app::http::access::{self, Access};
use annals_app::http::{AppState, Method as RouteMethod, ROUTES};
use annals_app::server::Server;
use annals_config::{Config, Scope, Scopes, Token};
use annals_tests::ServeProcess;
use serde_json::{json, Value};

use http_support::{nz, Api, Deadline, TestServer};

/// A token with every scope.
const ADMIN: &str = "admin-token-0123456789abcdef";
/// A token with the `read` scope only.
const READER: &str = "reader-token-0123456789abcdef";
/// A token with the `commands` scope only.
const COMMANDER: &str = "commander-token-0123456789ab";

/// How long a raw exchange may take before the test fails.
const RAW_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// The answer to a raw request, read until the server closed the connection.
#[derive(Debug)]
struct Raw {
    /// `METHOD path`, for messages.
    what: String,
    status: u16,
    /// The status line and headers, as text.
    head: String,
    body: Vec<u8>,
    /// Whether the server closed the connection after its answer.
    closed: bool,
}

impl Raw {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: the body is not JSON ({e}): {:?}",
                self.what,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a problem document of `status` and returns its body.
    fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}: expected {status}, got {}: {}",
            self.what,
            self.head,
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json"),
            "{}: {}",
            self.what,
            self.head
        );
        let body = self.json();
        assert_eq!(body["status"], json!(status), "{}: {body}", self.what);
        body
    }
}

/// Sends `request` on a fresh connection and reads the answer until the server closes it.
fn raw_exchange(addr: SocketAddr, what: &str, request: &[u8]) -> Raw {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("{what}: cannot connect: {e}"));
    stream
        .set_read_timeout(Some(RAW_TIMEOUT))
        .expect("a read timeout can be set");
    // The server may answer (and close) before it has read everything: a failed write is
    // fine, the answer is what counts.
    let _ = stream.write_all(request);
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let closed = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            // A reset after the answer is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            // Still open when the read timed out.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(e) => panic!(
                "{what}: cannot read the answer ({e}); got {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    };
    parse_raw(what, &received, closed)
}

fn parse_raw(what: &str, received: &[u8], closed: bool) -> Raw {
    let end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{what}: no complete answer: {:?}",
                String::from_utf8_lossy(received)
            )
        });
    let head = String::from_utf8_lossy(&received[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no status in {head:?}"));
    Raw {
        what: what.to_owned(),
        status,
        head,
        body: received[end + 4..].to_vec(),
        closed,
    }
}

/// A request of `method` on `path` with `headers` and `body`, asking the server to close the
/// connection after its answer.
fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One raw exchange, on the blocking pool.
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Raw {
    let what = format!("{method} {path}");
    let bytes = request_bytes(method, path, headers, body);
    actix_rt::task::spawn_blocking(move || raw_exchange(addr, &what, &bytes))
        .await
        .expect("the raw client runs")
}

fn addr_of(api: &Api) -> SocketAddr {
    api.url
        .trim_start_matches("http://")
        .parse()
        .expect("the server's url is http://IP:PORT")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---------------------------------------------------------------------------------------------
// Access
// ---------------------------------------------------------------------------------------------

/// A concrete path of `pattern`, its parameters filled with values that exist.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{aggregate}", "customers")
        .replace("{id}", "c-1")
        .replace("{name}", "customer-summaries")
        .replace("{position}", "1")
}

/// `segment` with its byte at `at` percent-encoded.
fn encode_byte(segment: &str, at: usize) -> String {
    segment
        .bytes()
        .enumerate()
        .map(|(i, b)| {
            if i == at {
                format!("%{b:02X}")
            } else {
                char::from(b).to_string()
            }
        })
        .collect()
}

/// Other spellings of `path`: percent-encoded bytes of each segment (`/%761/events`,
/// `/v%31/events`), empty, dot and dot-dot segments (plain and percent-encoded), `%2F` for a
/// slash, upper case, trailing slash and dot.
fn spellings(path: &str) -> Vec<String> {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let join = |segments: &[String]| format!("/{}", segments.join("/"));
    let mut out = Vec::new();
    for k in 0..segments.len() {
        let len = segments[k].len();
        for at in [0, len.saturating_sub(1)] {
            let mut s = segments.clone();
            s[k] = encode_byte(&s[k], at);
            out.push(join(&s));
        }
        let mut s = segments.clone();
        s[k] = s[k].bytes().map(|b| format!("%{b:02x}")).collect();
        out.push(join(&s));
        for extra in [
            "", ".", "%2e", "%2E", "x/..", "x/%2e%2e", "x/%2E%2E", "x/.%2e",
        ] {
            let mut s = segments.clone();
            s.insert(k, extra.to_owned());
            out.push(join(&s));
        }
        if k + 1 < segments.len() {
            let mut s = segments.clone();
            let next = s.remove(k + 1);
            s[k] = format!("{}%2F{next}", s[k]);
            out.push(join(&s));
            let mut s = segments.clone();
            let next = s.remove(k + 1);
            s[k] = format!("{}%2f{next}", s[k]);
            out.push(join(&s));
        }
    }
    out.push(path.to_uppercase());
    out.push(format!("{path}/"));
    out.push(format!("{path}/."));
    out.push(format!("{path}%2F"));
    out.push(format!("/{path}"));
    out.sort();
    out.dedup();
    out.retain(|p| p != path);
    out
}

fn method_of(route: RouteMethod) -> &'static str {
    match route {
        RouteMethod::Get => "GET",
        RouteMethod::Post => "POST",
    }
}

async fn access_server() -> TestServer {
    TestServer::start(|c| {
        c.auth.tokens = vec![
            Token::new(ADMIN),
            Token::scoped(READER, Scopes::of(&[Scope::Read])),
            Token::scoped(COMMANDER, Scopes::of(&[Scope::Commands])),
        ];
    })
    .await
}

/// The regression of `GET /%761/events` answering the whole log without a token: access is
/// decided on the route actix matched, so no spelling of a protected route, and no path that
/// matches no route, gets past a missing token; a read token gets past no admin or command
/// route. The route table is walked, so a new route is covered by this test as it is added.
#[actix_rt::test]
async fn no_spelling_of_a_route_gets_past_its_access_level() {
    let server = access_server().await;
    let addr = addr_of(&server.api);
    let admin = server.api.with_token(ADMIN);
    admin.create_customer("c-1", "Ada", 1000).await;
    let body = br#"{"type":"CreateCustomer","name":"Eve","credit_limit":1}"#;
    let json = [("Content-Type", "application/json")];
    let reader_auth = bearer(READER);
    let reader = [
        ("Content-Type", "application/json"),
        ("Authorization", reader_auth.as_str()),
    ];
    let mut checked = 0;
    let mut failures = Vec::new();
    for route in ROUTES {
        let path = concrete(route.pattern);
        let method = method_of(route.method);
        let payload: &[u8] = if method == "POST" { body } else { b"" };
        let mut all = vec![path.clone()];
        all.extend(spellings(&path));
        for spelled in &all {
            let answer = raw(addr, method, spelled, &json, payload).await;
            checked += 1;
            if route.access == Access::Open {
                if answer.status >= 500 {
                    failures.push(format!("{}: {}", answer.what, answer.status));
                }
                continue;
            }
            if answer.status != 401 || answer.header("www-authenticate").is_none() {
                failures.push(format!(
                    "without a token {}: {} {}",
                    answer.what,
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ));
            }
            if matches!(route.access, Access::Scope(Scope::Admin | Scope::Commands)) {
                let answer = raw(addr, method, spelled, &reader, payload).await;
                checked += 1;
                let expected_403 = spelled == &path;
                if (200..300).contains(&answer.status)
                    || (expected_403 && answer.status != 403)
                    || answer.status >= 500
                {
                    failures.push(format!(
                        "with a read token {}: {} {}",
                        answer.what,
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    ));
                }
            }
        }
        if route.access != Access::Open {
            // Another method on the route: 401 too (the route's 405 is behind its access).
            let other = if method == "GET" { "DELETE" } else { "PUT" };
            let answer = raw(addr, other, &path, &[], b"").await;
            if answer.status != 401 {
                failures.push(format!(
                    "without a token {}: {}",
                    answer.what, answer.status
                ));
            }
            let answer = raw(addr, "HEAD", &path, &[], b"").await;
            if answer.status != 401 {
                failures.push(format!(
                    "without a token {}: {}",
                    answer.what, answer.status
                ));
            }
        }
    }
    // Deny by default: paths that match no route, and 404s, need a token.
    for path in [
        "/nope",
        "/v2/events",
        "/V1/events",
        "/v1",
        "/v1/",
        "/",
        "/v1/customers",
    ] {
        let answer = raw(addr, "GET", path, &[], b"").await;
        if answer.status != 401 {
            failures.push(format!(
                "without a token {}: {}",
                answer.what, answer.status
            ));
        }
        let answer = raw(addr, "GET", path, &[("Authorization", &reader_auth)], b"").await;
        if answer.status != 404 {
            failures.push(format!("with a token {}: {}", answer.what, answer.status));
        }
    }
    assert!(
        checked > 300,
        "the route table was walked: {checked} requests"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} answers broke the access rules:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // What each token may do, on the real paths.
    let reader_api = server.api.with_token(READER);
    let commander = server.api.with_token(COMMANDER);
    reader_api.get("/v1/events").await.ok();
    reader_api.get("/v1/customers/c-1").await.ok();
    let forbidden = reader_api
        .get("/metrics")
        .await
        .problem_of(403, "forbidden");
    assert_eq!(forbidden["scope"], "admin", "{forbidden}");
    assert!(
        forbidden["detail"]
            .as_str()
            .is_some_and(|d| d.contains("lacks the `admin` scope")),
        "{forbidden}"
    );
    reader_api
        .post_empty("/v1/projections/customer-summaries/rebuild")
        .await
        .problem_of(403, "forbidden");
    reader_api
        .post_empty("/v1/projections/order-credit/parked/1/retry")
        .await
        .problem_of(403, "forbidden");
    let create = json!({"type": "CreateCustomer", "name": "Bo", "credit_limit": 1});
    let problem = reader_api
        .command("customers", "c-2", &create)
        .await
        .problem_of(403, "forbidden");
    assert_eq!(problem["scope"], "commands", "{problem}");
    commander.command("customers", "c-2", &create).await.ok();
    commander
        .get("/v1/events")
        .await
        .problem_of(403, "forbidden");
    assert_eq!(admin.get("/metrics").await.status, 200);
    admin
        .post_empty("/v1/projections/customer-summaries/rebuild")
        .await
        .expect_status(202);
    admin
        .post_empty("/v1/projections/order-credit/parked/1/retry")
        .await
        .problem_of(404, "not-found");
    for open in ["/livez", "/readyz", "/openapi.json", "/docs"] {
        assert_eq!(server.api.get(open).await.status, 200, "{open} stays open");
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Process-only commands
// ---------------------------------------------------------------------------------------------

/// The regression of a customer with a credit limit of 0 getting an order of 250,000 shipped:
/// the saga's own commands are refused on the public API (403 naming the command and the
/// saga), so the saga alone decides; with tokens, only the `admin` scope may send them.
#[actix_rt::test]
async fn process_only_commands_are_refused_without_the_admin_scope() {
    let server = TestServer::start(|_| {}).await;
    let api = &server.api;
    api.create_customer("c-broke", "Broke", 0).await;
    api.create_order("o-big", "c-broke", 250_000).await;
    let refused = [
        ("orders", "o-big", json!({"type": "ApproveOrder"})),
        (
            "orders",
            "o-big",
            json!({"type": "RejectOrder", "reason": "x"}),
        ),
        (
            "customers",
            "c-broke",
            json!({"type": "ReserveCredit", "order_id": "o-big", "amount": 1}),
        ),
        (
            "customers",
            "c-broke",
            json!({"type": "ReleaseCredit", "order_id": "o-big"}),
        ),
    ];
    for (route, id, command) in &refused {
        let problem = api
            .command(route, id, command)
            .await
            .problem_of(403, "forbidden");
        let name = command["type"].as_str().unwrap_or_default();
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(name) && detail.contains("order-credit saga"),
            "{problem}"
        );
        assert_eq!(problem["command_type"], name, "{problem}");
    }
    // The saga decides: no credit, no approval, no shipping.
    api.order_in("o-big", "Rejected").await;
    api.command("orders", "o-big", &json!({"type": "ShipOrder"}))
        .await
        .problem_of(422, "rejected");
    let customer = api.get("/v1/customers/c-broke").await.ok();
    assert_eq!(
        customer["version"], 2,
        "only the saga's refusal: {customer}"
    );
    // The document says which commands are process-only.
    let doc = api.get("/openapi.json").await.ok();
    let text = doc["paths"]["/v1/customers/{id}/commands"]["post"]["description"].to_string();
    assert!(
        text.contains("Process-only commands") && text.contains("ReserveCredit"),
        "{text}"
    );
    assert!(api
        .get("/docs")
        .await
        .text()
        .contains("Process-only commands"));
    server.stop().await;

    let server = access_server().await;
    let admin = server.api.with_token(ADMIN);
    let commander = server.api.with_token(COMMANDER);
    admin.create_customer("c-1", "Ada", 1000).await;
    let reserve = json!({"type": "ReserveCredit", "order_id": "o-1", "amount": 10});
    let problem = commander
        .command("customers", "c-1", &reserve)
        .await
        .problem_of(403, "forbidden");
    assert_eq!(problem["scope"], "admin", "{problem}");
    assert_eq!(
        admin.command("customers", "c-1", &reserve).await.ok()["version"],
        2
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------------

/// Ids and names no aggregate or subscriber can have: not UTF-8 (`a%FFb` and `a%FEb` must not
/// both decode to `a\u{FFFD}b`), control characters, whitespace, invisible characters, U+FFFD.
const BAD_IDS: [&str; 12] = [
    "a%FFb",
    "a%FEb",
    "%C3",
    "a%00b",
    "a%0Ab",
    "a%0D%0Ab",
    "a%20b",
    "a%09b",
    "a%E2%80%8Bb",
    "a%E2%80%AEb",
    "a%EF%BF%BDb",
    "a%7Fb",
];

/// Every route that takes an id, a name or a position answers 400 problem+json for one no
/// aggregate or subscriber can have — never 404 or 5xx — and two spellings never reach one
/// aggregate.
#[actix_rt::test]
async fn hostile_ids_names_and_positions_are_400() {
    let server = TestServer::start(|_| {}).await;
    let api = &server.api;
    let addr = addr_of(api);
    api.create_customer("c-1", "Ada", 1000).await;
    let json = [("Content-Type", "application/json")];
    let create = br#"{"type":"CreateCustomer","name":"Eve","credit_limit":1}"#;
    let mut failures = Vec::new();
    let mut check = |answer: Raw| {
        if answer.status != 400
            || answer.header("content-type").as_deref() != Some("application/problem+json")
        {
            failures.push(format!(
                "{}: {} {}",
                answer.what,
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
    };
    for id in BAD_IDS {
        for path in [
            format!("/v1/customers/{id}"),
            format!("/v1/customers/{id}/events"),
            format!("/v1/orders/{id}"),
            format!("/v1/views/customers/{id}"),
            format!("/v1/views/customers/{id}/orders"),
            format!("/v1/projections/{id}/parked"),
        ] {
            check(raw(addr, "GET", &path, &[], b"").await);
        }
        for path in [
            format!("/v1/customers/{id}/commands"),
            format!("/v1/accounts/{id}/commands"),
        ] {
            check(raw(addr, "POST", &path, &json, create).await);
        }
        for path in [
            format!("/v1/projections/{id}/rebuild"),
            format!("/v1/projections/{id}/parked/1/retry"),
        ] {
            check(raw(addr, "POST", &path, &[], b"").await);
        }
    }
    for name in [
        "a%23rebuild",
        "a%40b",
        "a%2Fb",
        "customer-summaries%23rebuild",
    ] {
        check(
            raw(
                addr,
                "GET",
                &format!("/v1/projections/{name}/parked"),
                &[],
                b"",
            )
            .await,
        );
        check(
            raw(
                addr,
                "POST",
                &format!("/v1/projections/{name}/rebuild"),
                &[],
                b"",
            )
            .await,
        );
    }
    for position in [
        "+1",
        "01",
        "-1",
        "1e3",
        "1%00",
        "%201",
        "18446744073709551616",
        "x",
    ] {
        let path = format!("/v1/projections/customer-summaries/parked/{position}/retry");
        check(raw(addr, "POST", &path, &[], b"").await);
    }
    for query in [
        "/v1/views/valuable-customers?after=x",
        "/v1/views/valuable-customers?after=1:a%0Ab",
        "/v1/views/valuable-customers?after=%2B1:c-1",
        "/v1/events/live?after=x",
    ] {
        check(raw(addr, "GET", query, &[], b"").await);
    }
    for last_event_id in ["+1", "1 2", "0x1"] {
        let headers = [("Last-Event-ID", last_event_id)];
        check(raw(addr, "GET", "/v1/events/live", &headers, b"").await);
    }
    assert!(failures.is_empty(), "not 400:\n{}", failures.join("\n"));

    // Nothing was created under any of those spellings; a real non-ASCII id works.
    let (log, _) = api.global_log(100).await;
    assert_eq!(log.len(), 1, "{log:?}");
    let created = raw(
        addr,
        "POST",
        "/v1/customers/M%C3%BCller/commands",
        &json,
        create,
    )
    .await;
    assert_eq!(
        created.status,
        200,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.json()["id"], "Müller");
    assert_eq!(
        api.get("/v1/customers/M%C3%BCller").await.ok()["id"],
        "Müller"
    );
    server.stop().await;
}

/// Malformed HTTP is refused by actix-http's HTTP/1 dispatcher before any route is chosen
/// (`actix_http::h1::dispatcher`: `Response::bad_request().drop_body()` for a parse error,
/// 431 for a head over its 128 KiB buffer); there is no hook to give these a problem body. So
/// what is promised, and checked here: a 4xx, never a 5xx, and the connection closed.
#[actix_rt::test]
async fn malformed_http_is_a_4xx_and_the_connection_is_closed() {
    let server = TestServer::start(|_| {}).await;
    let addr = addr_of(&server.api);
    let many_headers: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a Content-Length that is not a number",
            b"POST /v1/customers/c-1/commands HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
                .to_vec(),
        ),
        (
            "two different Content-Lengths",
            b"POST /v1/customers/c-1/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
        ),
        (
            "Content-Length and Transfer-Encoding",
            b"POST /v1/customers/c-1/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "a control byte in a header",
            b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n".to_vec(),
        ),
        (
            "a space in the path",
            b"GET /v1/customers/a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "a huge path",
            format!("GET /v1/customers/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(200_000))
                .into_bytes(),
        ),
        (
            "too many headers",
            format!("GET /livez HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
        ),
        ("not HTTP", b"HELLO\r\n\r\n".to_vec()),
    ];
    let mut seen = Vec::new();
    for (what, bytes) in cases {
        let answer = actix_rt::task::spawn_blocking(move || raw_exchange(addr, what, &bytes))
            .await
            .expect("the raw client runs");
        assert!(
            (400..500).contains(&answer.status),
            "{what}: a 4xx, not {}",
            answer.head
        );
        assert!(answer.closed, "{what}: the connection is closed");
        seen.push(format!("{what}: {}", answer.status));
    }
    eprintln!("malformed HTTP answers: {seen:#?}");
    // The server is unharmed.
    assert_eq!(server.api.get("/livez").await.status, 200);
    server.stop().await;
}

/// The regression of problem details and `/readyz` quoting the data path and the engine's
/// error text: a store that cannot be opened is reported as such, with the path in the log
/// only.
#[actix_rt::test]
async fn an_unopenable_store_is_reported_without_its_path() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // A file where the data directory should be.
    let data_dir = dir.path().join("secret-data-dir");
    std::fs::write(&data_dir, b"not a directory").expect("a file is written");
    let mut config = Config::default();
    config.server.addr = "127.0.0.1:0".parse().expect("an address");
    config.store.data_dir = data_dir;
    config.server.workers = nz(1);
    config.runtime.arbiters = nz(1);
    let server = Server::start(config).await.expect("the server listens");
    assert!(server.ready().await.is_err(), "the store cannot be opened");
    let api = Api::new(&server.url());
    for path in ["/readyz", "/v1/events", "/v1/customers/c-1"] {
        let reply = api.get(path).await;
        let problem = reply.overloaded();
        let text = reply.text();
        assert!(
            !text.contains("secret-data-dir") && !text.contains(&*dir.path().to_string_lossy()),
            "{path} names the data directory: {text}"
        );
        if path == "/readyz" {
            assert_eq!(
                problem["checks"],
                json!(["store failed to open (see the server log)"]),
                "{problem}"
            );
        }
    }
    server.stop().await.expect("the server stops");
}

/// A subscriber whose handler always fails, with an error text that must stay in the log.
struct Poison;

impl Subscriber for Poison {
    fn handle<'a>(&'a mut self, _event: &'a RecordedEvent) -> HandleFuture<'a> {
        Box::pin(async { Err(HandlerError::from("cannot write /secret/poison/path: EIO")) })
    }
}

/// `/readyz` goes 503 when a subscriber has failed, naming it and not its error.
#[actix_rt::test]
async fn readyz_names_a_failed_subscriber_and_not_its_error() {
    let server = TestServer::start(|_| {}).await;
    let api = &server.api;
    api.ready().await;
    let runtime = server.server().runtime().expect("the store is open");
    let options = SubscriberOptions::default().with_failure_policy(FailurePolicy::Stop);
    runtime
        .subscribe("poison", Poison, options)
        .expect("the subscriber starts");
    api.create_customer("c-1", "Ada", 1).await;
    let deadline = Deadline::new("/readyz to report the failed subscriber");
    loop {
        let reply = api.get("/readyz").await;
        if reply.status == 503 {
            let problem = reply.overloaded();
            assert_eq!(
                problem["checks"],
                json!(["subscriber poison failed"]),
                "{problem}"
            );
            assert!(!reply.text().contains("/secret"), "{}", reply.text());
            break;
        }
        deadline.pause(&reply.text()).await;
    }
    server.stop().await;
}

/// No client-supplied text breaks a log line: requests whose path, query and headers carry an
/// encoded CR/LF leave every log line of the (text-format, debug-level) log starting where the
/// server started it.
#[actix_rt::test]
async fn encoded_line_breaks_never_forge_a_log_line() {
    let dir = tempfile::tempdir().expect("a data directory");
    let env = [("ANNALS_LOG_LEVEL", "debug"), ("ANNALS_LOG_FORMAT", "text")];
    let process = ServeProcess::start(dir.path(), &[], &env);
    let api = Api::new(&process.url);
    api.ready().await;
    let addr = addr_of(&api);
    let forged = "%0D%0AFORGED";
    let json = [("Content-Type", "application/json")];
    for (method, path) in [
        ("GET", format!("/v1/customers/x{forged}-1")),
        ("GET", format!("/v1/customers/x{forged}-2/events")),
        ("GET", format!("/v1/events?after={forged}-3")),
        ("GET", format!("/v1/nope{forged}-4")),
        ("GET", format!("/v1/projections/x{forged}-5/parked")),
        (
            "GET",
            format!("/v1/views/valuable-customers?after=1:x{forged}-6"),
        ),
        ("GET", format!("/v1/views/customers/x{forged}-7")),
        ("POST", format!("/v1/customers/x{forged}-8/commands")),
        ("POST", format!("/v1/projections/x{forged}-9/rebuild")),
    ] {
        let body: &[u8] = if method == "POST" { b"{}" } else { b"" };
        let headers = [
            ("Content-Type", "application/json"),
            ("X-Request-Id", "%0D%0AFORGED-10"),
            ("Idempotency-Key", "k%0D%0AFORGED-11"),
            ("If-Match", "\"%0D%0AFORGED-12\""),
        ];
        let answer = raw(addr, method, &path, &headers, body).await;
        assert!(answer.status < 500, "{}: {}", answer.what, answer.status);
    }
    let answer = raw(
        addr,
        "POST",
        "/v1/customers/c-1/commands",
        &json,
        b"{\"type\":\"\\r\\nFORGED-13\"}",
    )
    .await;
    assert_eq!(answer.status, 400);
    let deadline = Deadline::new("the requests to be logged");
    while !process.log().iter().any(|l| l.contains("FORGED-9")) {
        deadline.pause(&format!("{:?}", process.log())).await;
    }
    let log = process.log();
    let forged_lines: Vec<&String> = log
        .iter()
        .filter(|line| line.trim_start().starts_with("FORGED"))
        .collect();
    assert!(
        forged_lines.is_empty(),
        "forged log lines: {forged_lines:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("%0D%0AFORGED")),
        "the requests are in the log, escaped"
    );
    drop(process);
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

/// Sends a command's head and then its body one byte every 100 ms; returns the answer.
fn trickle(addr: SocketAddr, id: &str) -> Raw {
    let what = format!("POST (trickled) /v1/customers/{id}/commands");
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{what}: {e}"));
    stream
        .set_read_timeout(Some(RAW_TIMEOUT))
        .expect("a read timeout can be set");
    let head = format!(
        "POST /v1/customers/{id}/commands HTTP/1.1\r\nHost: x\r\nContent-Type: \
         application/json\r\nContent-Length: 200\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("the head is sent");
    let mut writer = stream.try_clone().expect("the socket can be cloned");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let trickler = std::thread::spawn(move || {
        for _ in 0..199 {
            if stopped.load(Ordering::Relaxed) || writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(e) => panic!(
                "{what}: no end of the answer ({e}); got {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    };
    stop.store(true, Ordering::Relaxed);
    let _ = trickler.join();
    parse_raw(&what, &received, closed)
}

/// The regression of a few slow-body clients holding every in-flight slot: a body is read
/// before its command takes a slot, within `server.body_read_timeout_ms` (408 and the
/// connection closed beyond it), so other clients' commands go through meanwhile.
#[actix_rt::test]
async fn trickled_bodies_get_408_and_hold_no_in_flight_slot() {
    let server = TestServer::start(|c| {
        c.server.in_flight_max = nz(2);
        c.server.body_read_timeout = Duration::from_millis(2000);
    })
    .await;
    let api = &server.api;
    let addr = addr_of(api);
    let tricklers: Vec<_> = (0..8)
        .map(|i| actix_rt::task::spawn_blocking(move || trickle(addr, &format!("t-{i}"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..6 {
        api.create_customer(&format!("c-{i}"), "Ada", 1).await;
    }
    for trickler in tricklers {
        let answer = trickler.await.expect("the trickler runs");
        let problem = answer.problem(408);
        assert_eq!(
            problem["type"], "/docs#problem-request-timeout",
            "{problem}"
        );
        assert!(answer.closed, "the connection is closed after a 408");
    }
    for i in 0..8 {
        assert_eq!(api.get(&format!("/v1/customers/t-{i}")).await.status, 404);
    }
    server.stop().await;
}

/// A command not answered within `server.request_deadline_ms` is a 503 saying its outcome is
/// unknown; retrying it with the same `Idempotency-Key` (here after a restart with a roomier
/// deadline) learns it, and every command is recorded at most once.
#[actix_rt::test]
async fn a_command_past_its_deadline_has_an_unknown_outcome_learned_by_retrying() {
    let dir = tempfile::tempdir().expect("a data directory");
    let config = |deadline_ms: u64| {
        let mut config = Config::default();
        config.server.addr = "127.0.0.1:0".parse().expect("an address");
        config.store.data_dir = dir.path().into();
        config.server.workers = nz(2);
        config.runtime.arbiters = nz(2);
        config.runtime.mailbox_capacity = nz(1000);
        config.server.request_deadline = Duration::from_millis(deadline_ms);
        config
    };
    // One aggregate handles its commands one at a time: 256 at once cannot all end in 1 ms.
    let server = Server::start_ready(config(1))
        .await
        .expect("the server starts");
    let api = Api::new(&server.url());
    async fn deposit(api: &Api, key: String) -> (String, http_support::Reply) {
        let reply = api
            .command_with(
                "accounts",
                "a-1",
                &json!({"type": "Deposit", "amount": 1}),
                &[("Idempotency-Key", &key)],
            )
            .await;
        (key, reply)
    }
    let replies =
        futures::future::join_all((0..256).map(|i| deposit(&api, format!("k-{i}")))).await;
    let mut unknown = Vec::new();
    let mut acknowledged = 0;
    for (key, reply) in replies {
        if reply.status == 200 {
            acknowledged += 1;
            continue;
        }
        let problem = reply.overloaded();
        if problem["type"] == "/docs#problem-outcome-unknown" {
            assert!(
                problem["detail"].as_str().is_some_and(
                    |d| d.contains("request_deadline_ms") && d.contains("Idempotency-Key")
                ),
                "{problem}"
            );
            unknown.push(key);
        }
    }
    assert!(!unknown.is_empty(), "no command ran past a 1 ms deadline");
    server.stop().await.expect("the server stops");

    let server = Server::start_ready(config(30_000))
        .await
        .expect("the server restarts");
    let api = Api::new(&server.url());
    for key in &unknown {
        let (_, reply) = deposit(&api, key.clone()).await;
        reply.ok();
    }
    let history = api.history("accounts", "a-1", 1000).await;
    let mut keys: Vec<&str> = history
        .iter()
        .filter_map(|e| e["command_id"].as_str())
        .collect();
    let recorded = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), recorded, "no command was recorded twice");
    assert!(
        recorded >= acknowledged + unknown.len(),
        "{recorded} recorded"
    );
    eprintln!(
        "{acknowledged} acknowledged, {} unknown at the deadline, {recorded} recorded",
        unknown.len()
    );
    server.stop().await.expect("the server stops");
}

/// Any request not handled within `server.request_deadline_ms` is a 503 with `Retry-After`:
/// the route policy (`access::guarded`) around a handler that never ends, on a real server.
#[actix_rt::test]
async fn a_request_past_its_deadline_is_503() {
    let mut config = Config::default();
    config.server.request_deadline = Duration::from_millis(300);
    let state = web::Data::new(AppState::new(Arc::new(config)));
    let http = HttpServer::new(move || {
        App::new().app_data(state.clone()).service(access::guarded(
            web::resource("/slow").route(web::get().to(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                HttpResponse::Ok().finish()
            })),
            Access::Open,
        ))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("a port");
    let addr = http.addrs()[0];
    let running = http.run();
    let handle = running.handle();
    actix_rt::spawn(running);
    let reply = Api::new(&format!("http://{addr}")).get("/slow").await;
    let problem = reply.overloaded();
    assert_eq!(reply.status, 503);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("server.request_deadline_ms")),
        "{problem}"
    );
    handle.stop(false).await;
}

/// Opens a live feed over a raw connection; returns its status, and the connection (open) if
/// the feed was accepted.
fn open_feed(addr: SocketAddr) -> (Raw, Option<TcpStream>) {
    let mut stream = TcpStream::connect(addr).expect("a connection");
    stream
        .set_read_timeout(Some(RAW_TIMEOUT))
        .expect("a read timeout can be set");
    stream
        .write_all(b"GET /v1/events/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("the request is sent");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).expect("the answer's head");
        assert!(n > 0, "the server closed without answering");
        received.extend_from_slice(&buffer[..n]);
    }
    let mut answer = parse_raw("GET /v1/events/live", &received, false);
    if answer.status == 200 {
        return (answer, Some(stream));
    }
    // A refusal: read its problem body (Content-Length).
    let length: usize = answer
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while answer.body.len() < length {
        let n = stream.read(&mut buffer).expect("the body");
        if n == 0 {
            break;
        }
        answer.body.extend_from_slice(&buffer[..n]);
    }
    (answer, None)
}

/// The regression of live-feed slots freed only at the next keep-alive write: a client that
/// disconnects frees its slot at once, so with every slot taken and then dropped, a new feed is
/// accepted well before the keep-alive interval (the wait is bounded below it). And one client
/// address gets at most `server.sse_connections_per_client_max` feeds: 429 beyond.
#[actix_rt::test]
async fn disconnected_feeds_free_their_slots_and_each_client_is_bounded() {
    let keepalive = Duration::from_secs(20);
    let server = TestServer::start(|c| {
        c.server.sse_connections_max = nz(4);
        c.server.sse_connections_per_client_max = nz(8);
        c.server.sse_keepalive = keepalive;
    })
    .await;
    let addr = addr_of(&server.api);
    let feeds: Vec<TcpStream> = (0..4)
        .map(|_| {
            let (answer, stream) = open_feed(addr);
            assert_eq!(answer.status, 200, "{}", answer.head);
            stream.expect("an open feed")
        })
        .collect();
    let (full, _) = open_feed(addr);
    assert_eq!(full.status, 503, "every slot is taken: {}", full.head);
    for feed in feeds {
        let _ = feed.shutdown(std::net::Shutdown::Both);
    }
    // Bounded well below the keep-alive interval: the old behaviour freed slots only there.
    let until = Instant::now() + keepalive / 4;
    loop {
        let (answer, stream) = actix_rt::task::spawn_blocking(move || open_feed(addr))
            .await
            .expect("the raw client runs");
        if answer.status == 200 {
            drop(stream);
            break;
        }
        assert_eq!(answer.status, 503, "{}", answer.head);
        assert!(
            Instant::now() < until,
            "no slot was freed within {:?} of the clients closing their feeds",
            keepalive / 4
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;

    let server = TestServer::start(|c| {
        c.server.sse_connections_max = nz(10);
        c.server.sse_connections_per_client_max = nz(2);
    })
    .await;
    let first = server.api.live("/v1/events/live", &[]).await;
    let second = server.api.live("/v1/events/live", &[]).await;
    let third = server.api.get("/v1/events/live").await;
    let problem = third.overloaded();
    assert_eq!(third.status, 429, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("sse_connections_per_client_max")),
        "{problem}"
    );
    drop((first, second));
    server.stop().await;
}

/// A projection that takes 20 ms per event, so that its rebuild is still running while the
/// test asks for another.
struct SlowProjection;

impl Projection for SlowProjection {
    fn handle(&mut self, _event: &RecordedEvent) -> Result<(), HandlerError> {
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    }
}

/// At most `server.rebuilds_max` rebuilds run at once: another rebuild, or a parked retry
/// (which rebuilds a projection), is a 503 with `Retry-After` meanwhile; `AlreadyRebuilding`
/// stays a 409.
#[actix_rt::test]
async fn rebuilds_are_bounded() {
    let server = TestServer::start(|c| c.server.rebuilds_max = nz(1)).await;
    let api = &server.api;
    let runtime = server.server().runtime().expect("the store is open");
    runtime
        .project("slow-view", SubscriberOptions::default(), |_| {
            Ok(SlowProjection)
        })
        .expect("the projection starts");
    for i in 0..60 {
        api.create_customer(&format!("c-{i}"), "Ada", 1).await;
    }
    api.post_empty("/v1/projections/slow-view/rebuild")
        .await
        .expect_status(202);
    let again = api.post_empty("/v1/projections/slow-view/rebuild").await;
    assert!(
        again.status == 409 || again.status == 503,
        "{}",
        again.text()
    );
    let refused = api
        .post_empty("/v1/projections/customer-summaries/rebuild")
        .await;
    let problem = refused.overloaded();
    assert_eq!(refused.status, 503);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("server.rebuilds_max")),
        "{problem}"
    );
    api.post_empty("/v1/projections/customer-summaries/parked/1/retry")
        .await
        .overloaded();
    let deadline = Deadline::new("the rebuild of slow-view to end");
    loop {
        let listed = api.get("/v1/projections").await.ok();
        if !listed.to_string().contains("slow-view#rebuild") {
            break;
        }
        deadline.pause(&listed.to_string()).await;
    }
    api.post_empty("/v1/projections/customer-summaries/rebuild")
        .await
        .expect_status(202);
    server.stop().await;
}

/// Store reads run on a bounded pool: with one read at a time, concurrent reads get 503 with
/// `Retry-After`, and every other read answers in full.
#[actix_rt::test]
async fn store_reads_are_bounded() {
    let server = TestServer::start(|c| c.server.reads_in_flight_max = nz(1)).await;
    let api = &server.api;
    for i in 0..200 {
        api.create_customer(&format!("c-{i}"), "Ada", 1).await;
    }
    let mut refused = 0;
    for _ in 0..10 {
        let replies = futures::future::join_all(
            (0..32).map(|_| async { api.get("/v1/events?limit=1000").await }),
        )
        .await;
        for reply in replies {
            if reply.status == 200 {
                assert_eq!(reply.ok()["events"].as_array().map(Vec::len), Some(200));
            } else {
                let problem = reply.overloaded();
                assert_eq!(reply.status, 503);
                assert!(
                    problem["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("reads_in_flight_max")),
                    "{problem}"
                );
                refused += 1;
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(refused > 0, "no read was refused with one read at a time");
    server.stop().await;
}

/// One valuable-customers request reads a bounded number of the view's records (10 ×
/// `server.page_size_max`): a `min_order_total` no customer reaches answers a page with a
/// cursor instead of scanning everything, and following the cursors walks every customer once,
/// in order.
#[actix_rt::test]
async fn valuable_customers_are_paged_with_a_bounded_scan() {
    let server = TestServer::start(|c| {
        c.server.page_size_max = nz(2);
        c.server.page_size_default = nz(2);
    })
    .await;
    let api = &server.api;
    const CUSTOMERS: usize = 25;
    let mut last_position = 0;
    for i in 0..CUSTOMERS {
        api.create_customer(&format!("c-{i:02}"), "Ada", 1_000_000)
            .await;
        api.create_order(&format!("o-{i:02}"), &format!("c-{i:02}"), 100 + i as u64)
            .await;
    }
    for i in 0..CUSTOMERS {
        api.order_in(&format!("o-{i:02}"), "Approved").await;
        let shipped = api
            .command(
                "orders",
                &format!("o-{i:02}"),
                &json!({"type": "ShipOrder"}),
            )
            .await
            .ok();
        last_position = shipped["position"].as_u64().expect("a position");
    }
    let wait = format!("min_position={last_position}");

    // Nobody reaches the total: the first page stops at the budget (20 records) with a cursor,
    // the second reads the rest and ends.
    let page = api
        .get(&format!(
            "/v1/views/valuable-customers?min_order_total=1000000&{wait}"
        ))
        .await
        .ok();
    assert_eq!(page["customers"], json!([]), "{page}");
    let next = page["next_after"].as_str().expect("a cursor").to_owned();
    let page = api
        .get(&format!(
            "/v1/views/valuable-customers?min_order_total=1000000&after={next}"
        ))
        .await
        .ok();
    assert_eq!(page["customers"], json!([]), "{page}");
    assert_eq!(page["next_after"], Value::Null, "{page}");

    // Everyone, two at a time, by following the cursors.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let path = match &after {
            Some(cursor) => format!("/v1/views/valuable-customers?after={cursor}"),
            None => format!("/v1/views/valuable-customers?{wait}"),
        };
        let page = api.get(&path).await.ok();
        for customer in page["customers"].as_array().cloned().unwrap_or_default() {
            seen.push(
                customer["customer_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        match page["next_after"].as_str() {
            Some(cursor) => after = Some(cursor.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..CUSTOMERS).map(|i| format!("c-{i:02}")).collect();
    assert_eq!(seen, expected, "every customer once, oldest first");
    server.stop().await;
}

/// A hot aggregate's 429 says the same whole seconds in its detail as in `Retry-After`
/// (`Reply::overloaded` checks every 429 and 503 of the suites that way).
#[actix_rt::test]
async fn a_hot_aggregate_429_states_the_header_s_seconds() {
    let server = TestServer::start(|c| c.runtime.mailbox_capacity = nz(1)).await;
    let api = &server.api;
    let mut seen = false;
    for _ in 0..10 {
        let replies = futures::future::join_all((0..32).map(|_| async {
            api.command(
                "accounts",
                "a-hot",
                &json!({"type": "Deposit", "amount": 1}),
            )
            .await
        }))
        .await;
        for reply in replies.into_iter().filter(|r| r.status == 429) {
            let problem = reply.overloaded();
            let detail = problem["detail"].as_str().unwrap_or_default();
            assert!(!detail.contains("ms"), "{problem}");
            assert!(detail.contains("retry after 1 second"), "{problem}");
            seen = true;
        }
        if seen {
            break;
        }
    }
    assert!(seen, "no 429 with a mailbox of one");
    server.stop().await;
}
