//! Helpers of the black-box HTTP tests (`tests/http.rs`): a real server on 127.0.0.1 port 0
//! (in-process, or an `annals serve` child process), an HTTP client that returns every reply
//! as status, headers and body, checks of RFC 9457 problem bodies, polling with deadlines, and
//! a Server-Sent Events reader.
//!
//! Every wait has a deadline, so a server that never answers fails the test with a message
//! instead of hanging the suite.

use std::num::NonZeroUsize;
use std::pin::Pin;
use std::time::{Duration, Instant};

use annals_app::server::Server;
use annals_config::Config;
use awc::http::header::HeaderMap;
use awc::http::Method;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use serde_json::{json, Value};

/// How long one HTTP exchange may take before the test fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the test client keeps an idle connection: below the server's keep-alive (5 s).
const CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(2);
/// How long a poll (an order's saga outcome, a projection's rebuild) may take.
pub(crate) const POLL_DEADLINE: Duration = Duration::from_secs(20);
/// Pause between two polls.
const POLL_PAUSE: Duration = Duration::from_millis(20);
/// The largest body a test reads at once.
const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The one token of a server started with [`TestServer::start_admin`]: it has every scope.
pub(crate) const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// `n` as a `NonZeroUsize`, for configuration knobs.
pub(crate) fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("a configuration knob in a test is not zero")
}

/// One HTTP reply, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The status code.
    pub(crate) status: u16,
    /// The response headers.
    pub(crate) headers: HeaderMap,
    /// The body.
    pub(crate) body: Bytes,
    /// `METHOD path`, for messages.
    pub(crate) what: String,
}

impl Reply {
    /// The body as JSON (a failure names the request and shows the body).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: the body is not JSON ({e}), status {}: {:?}",
                self.what,
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts status 200 with a JSON body and returns the body.
    pub(crate) fn ok(&self) -> Value {
        self.expect_status(200)
    }

    /// Asserts `status` and a JSON body, and returns the body.
    pub(crate) fn expect_status(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}: expected {status}, got {} with body {}",
            self.what,
            self.status,
            self.text()
        );
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{}: a {status} answer is application/json, not {content_type:?}",
            self.what
        );
        self.json()
    }

    /// Asserts an RFC 9457 problem of `status`: `application/problem+json` with `type`,
    /// `title`, `status` and `detail`. Returns the body.
    pub(crate) fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}: expected a {status} problem, got {} with body {}",
            self.what,
            self.status,
            self.text()
        );
        let content_type = self.header("content-type").unwrap_or_default();
        assert_eq!(
            content_type,
            "application/problem+json",
            "{}: a {status} answer is a problem document; body {}",
            self.what,
            self.text()
        );
        let body = self.json();
        assert_eq!(body["status"], json!(status), "{}: {body}", self.what);
        for member in ["type", "title", "detail"] {
            let text = body[member].as_str().unwrap_or_default();
            assert!(
                !text.is_empty(),
                "{}: the problem has no {member}: {body}",
                self.what
            );
        }
        assert!(
            body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("/docs#problem-")),
            "{}: the problem type links into /docs: {body}",
            self.what
        );
        body
    }

    /// Asserts a problem of `status` whose `type` is `/docs#problem-{kind}`.
    pub(crate) fn problem_of(&self, status: u16, kind: &str) -> Value {
        let body = self.problem(status);
        assert_eq!(
            body["type"],
            json!(format!("/docs#problem-{kind}")),
            "{}: {body}",
            self.what
        );
        body
    }

    /// Asserts a 429 or 503 problem with a `Retry-After` of whole seconds (at least 1) that
    /// matches `retry_after_seconds`. Returns the body.
    pub(crate) fn overloaded(&self) -> Value {
        assert!(
            self.status == 429 || self.status == 503,
            "{}: expected 429 or 503, got {}: {}",
            self.what,
            self.status,
            self.text()
        );
        let body = self.problem(self.status);
        let retry_after: u64 = self
            .header("retry-after")
            .unwrap_or_else(|| panic!("{}: {} without Retry-After", self.what, self.status))
            .parse()
            .unwrap_or_else(|e| panic!("{}: Retry-After is not whole seconds: {e}", self.what));
        assert!(retry_after >= 1, "{}: Retry-After {retry_after}", self.what);
        assert_eq!(
            body["retry_after_seconds"],
            json!(retry_after),
            "{}",
            self.what
        );
        // A detail that names a pause names the header's (whole seconds), never another.
        let detail = body["detail"].as_str().unwrap_or_default();
        if let Some(rest) = detail.split("retry after ").nth(1) {
            let said: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let unit = rest[said.len()..].trim_start();
            assert!(
                said == retry_after.to_string() && unit.starts_with("second"),
                "{}: the detail says \"retry after {rest}\", the header {retry_after} s",
                self.what
            );
        }
        body
    }
}

/// A body to send: its content type and bytes.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    /// `Content-Type`, if any.
    pub(crate) content_type: Option<&'static str>,
    /// The bytes.
    pub(crate) bytes: Bytes,
}

impl Body {
    /// A JSON body.
    pub(crate) fn json(value: &Value) -> Body {
        Body {
            content_type: Some("application/json"),
            bytes: Bytes::from(value.to_string()),
        }
    }

    /// Raw bytes with a content type (or none).
    pub(crate) fn raw(content_type: Option<&'static str>, bytes: impl Into<Bytes>) -> Body {
        Body {
            content_type,
            bytes: bytes.into(),
        }
    }
}

/// A client of one server.
#[derive(Clone)]
pub(crate) struct Api {
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    client: awc::Client,
    /// The bearer token sent with every request, if any.
    token: Option<String>,
}

impl Api {
    /// A client of the server at `url`.
    pub(crate) fn new(url: &str) -> Api {
        let client = awc::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // Enough connections for the concurrency tests. Idle connections are dropped
            // before the server's keep-alive (actix-web's 5 s) closes them: a request sent on
            // one the server has just closed gets no answer ("connector has been
            // disconnected"), which failed a cluster test that polls after a pause.
            .connector(
                awc::Connector::new()
                    .limit(256)
                    .conn_keep_alive(CLIENT_KEEP_ALIVE),
            )
            .finish();
        Api {
            url: url.to_owned(),
            client,
            token: None,
        }
    }

    /// The same client, sending `Authorization: Bearer {token}`.
    pub(crate) fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    fn request(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> awc::ClientRequest {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            request = request.insert_header(("authorization", format!("Bearer {token}")));
        }
        for (name, value) in headers {
            request = request.insert_header((*name, *value));
        }
        request
    }

    /// Sends a request; `Err` only when no HTTP answer came (connection refused or reset).
    pub(crate) async fn try_send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Body>,
    ) -> Result<Reply, String> {
        let what = format!("{method} {path}");
        let mut request = self.request(method, path, headers);
        let sent = match body {
            Some(body) => {
                if let Some(content_type) = body.content_type {
                    request = request.insert_header(("content-type", content_type));
                }
                request.send_body(body.bytes).await
            }
            None => request.send().await,
        };
        let mut response = sent.map_err(|e| format!("{what}: no answer: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .body()
            .limit(BODY_BYTES_MAX)
            .await
            .map_err(|e| format!("{what}: cannot read the body: {e}"))?;
        Ok(Reply {
            status,
            headers,
            body,
            what,
        })
    }

    /// Sends a request and reads the whole reply.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Body>,
    ) -> Reply {
        self.try_send(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], None).await
    }

    /// `GET path` with headers.
    pub(crate) async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers, None).await
    }

    /// `POST path` without a body.
    pub(crate) async fn post_empty(&self, path: &str) -> Reply {
        self.send(Method::POST, path, &[], None).await
    }

    /// `POST /v1/{route}/{id}/commands` with a JSON command.
    pub(crate) async fn command(&self, route: &str, id: &str, command: &Value) -> Reply {
        self.command_with(route, id, command, &[]).await
    }

    /// `POST /v1/{route}/{id}/commands` with a JSON command and headers.
    pub(crate) async fn command_with(
        &self,
        route: &str,
        id: &str,
        command: &Value,
        headers: &[(&str, &str)],
    ) -> Reply {
        let path = format!("/v1/{route}/{id}/commands");
        self.send(Method::POST, &path, headers, Some(Body::json(command)))
            .await
    }

    /// Creates customer `id` and returns the reply's body (asserting 200).
    pub(crate) async fn create_customer(&self, id: &str, name: &str, credit_limit: u64) -> Value {
        let command = json!({"type": "CreateCustomer", "name": name, "credit_limit": credit_limit});
        self.command("customers", id, &command).await.ok()
    }

    /// Creates order `id` and returns the reply's body (asserting 200).
    pub(crate) async fn create_order(&self, id: &str, customer_id: &str, total: u64) -> Value {
        let command = json!({"type": "CreateOrder", "customer_id": customer_id, "total": total});
        self.command("orders", id, &command).await.ok()
    }

    /// Polls `GET /v1/orders/{id}` until its status is `status`; returns the body.
    pub(crate) async fn order_in(&self, id: &str, status: &str) -> Value {
        let path = format!("/v1/orders/{id}");
        let deadline = Deadline::new(format!("order {id} to be {status}"));
        loop {
            let reply = self.get(&path).await;
            let body = if reply.status == 200 {
                reply.json()
            } else {
                Value::Null
            };
            if body["state"]["status"] == json!(status) {
                return body;
            }
            deadline
                .pause(&format!("last seen: {} {}", reply.status, reply.text()))
                .await;
        }
    }

    /// The whole history of an aggregate, read in pages of `page` events.
    pub(crate) async fn history(&self, route: &str, id: &str, page: usize) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from = 1;
        for _ in 0..10_000 {
            let body = self
                .get(&format!("/v1/{route}/{id}/events?from={from}&limit={page}"))
                .await
                .ok();
            events.extend(body["events"].as_array().cloned().unwrap_or_default());
            match body["next_from"].as_u64() {
                Some(next) => from = next,
                None => return events,
            }
        }
        panic!("the history of {route}/{id} has no end");
    }

    /// The whole global log, read in pages of `page` events; also returns the last `head`.
    pub(crate) async fn global_log(&self, page: usize) -> (Vec<Value>, u64) {
        let mut events = Vec::new();
        let mut after = 0;
        for _ in 0..10_000 {
            let body = self
                .get(&format!("/v1/events?after={after}&limit={page}"))
                .await
                .ok();
            let batch = body["events"].as_array().cloned().unwrap_or_default();
            let next = body["next_after"].as_u64().expect("next_after is a number");
            if batch.is_empty() {
                assert_eq!(next, after, "an empty page does not move next_after");
                let head = body["head"].as_u64().expect("head is a number");
                return (events, head);
            }
            events.extend(batch);
            after = next;
        }
        panic!("the global log has no end");
    }

    /// Polls `/readyz` until it answers 200.
    pub(crate) async fn ready(&self) {
        let deadline = Deadline::new(format!("{} to be ready", self.url));
        loop {
            let last = match self.try_send(Method::GET, "/readyz", &[], None).await {
                Ok(reply) if reply.status == 200 => return,
                Ok(reply) => format!("{} {}", reply.status, reply.text()),
                Err(e) => e,
            };
            deadline.pause(&last).await;
        }
    }

    /// Opens the live feed at `path` (`/v1/events/live…`) with headers.
    pub(crate) async fn live(&self, path: &str, headers: &[(&str, &str)]) -> Sse {
        let response = self
            .request(Method::GET, path, headers)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: no answer: {e}"));
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(content_type, "text/event-stream", "GET {path}");
        let cache = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(cache, "no-cache", "GET {path}");
        Sse {
            stream: Box::pin(response),
            buffer: Vec::new(),
            retry: None,
        }
    }
}

/// A bound on a polling loop: [`Deadline::pause`] sleeps [`POLL_PAUSE`], or fails the test
/// once [`POLL_DEADLINE`] has passed.
pub(crate) struct Deadline {
    until: Instant,
    what: String,
}

impl Deadline {
    /// A deadline for waiting for `what`.
    pub(crate) fn new(what: impl Into<String>) -> Deadline {
        Deadline {
            until: Instant::now() + POLL_DEADLINE,
            what: what.into(),
        }
    }

    /// Sleeps before the next attempt; fails the test, with `last` (what the last attempt
    /// saw), once the deadline has passed.
    pub(crate) async fn pause(&self, last: &str) {
        assert!(
            Instant::now() < self.until,
            "gave up waiting for {} after {POLL_DEADLINE:?}; {last}",
            self.what
        );
        tokio::time::sleep(POLL_PAUSE).await;
    }
}

/// A server started in-process on 127.0.0.1 port 0 with its own data directory.
pub(crate) struct TestServer {
    server: Option<Server>,
    /// A client of it.
    pub(crate) api: Api,
    /// The data directory, removed when the test ends.
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with the defaults, changed by `tune`, and waits until it is ready.
    pub(crate) async fn start(tune: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary data directory");
        TestServer::start_in(dir, tune).await
    }

    /// [`TestServer::start`] on the data directory `dir` (which may hold a store already).
    pub(crate) async fn start_in(
        dir: tempfile::TempDir,
        tune: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = Config::default();
        config.server.addr = "127.0.0.1:0".parse().expect("a socket address");
        config.store.data_dir = dir.path().into();
        // Two HTTP workers and two arbiters whatever the machine, so tests running in
        // parallel do not multiply threads.
        config.server.workers = nz(2);
        config.runtime.arbiters = nz(2);
        tune(&mut config);
        let server = Server::start_ready(config)
            .await
            .unwrap_or_else(|e| panic!("the server starts: {e:#}"));
        let api = Api::new(&server.url());
        TestServer {
            server: Some(server),
            api,
            _dir: dir,
        }
    }

    /// [`TestServer::start`] with one token of every scope ([`ADMIN_TOKEN`]), which the
    /// client sends: for tests that send the process-only commands (`ReserveCredit`, ...),
    /// which need the `admin` scope.
    pub(crate) async fn start_admin(tune: impl FnOnce(&mut Config)) -> TestServer {
        let mut server = TestServer::start(|config| {
            config.auth.tokens = vec![annals_config::Token::new(ADMIN_TOKEN)];
            tune(config);
        })
        .await;
        server.api = server.api.with_token(ADMIN_TOKEN);
        server
    }

    /// The server (its runtime, its handlers' state).
    #[allow(dead_code)] // Used by tests/http_hostile.rs, not by tests/http.rs.
    pub(crate) fn server(&self) -> &Server {
        self.server
            .as_ref()
            .expect("the server runs until the test stops it")
    }

    /// Stops the server gracefully, failing the test if that takes more than 20 s.
    pub(crate) async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            let stopped = tokio::time::timeout(Duration::from_secs(20), server.stop()).await;
            match stopped {
                Ok(result) => result.unwrap_or_else(|e| panic!("the server stops cleanly: {e:#}")),
                Err(_) => panic!("the server did not stop within 20 s"),
            }
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub(crate) struct SseEvent {
    /// The `id:` field.
    pub(crate) id: Option<String>,
    /// The `data:` lines, joined by newlines.
    pub(crate) data: String,
}

impl SseEvent {
    /// The id as a position.
    pub(crate) fn position(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("the event's id is a position: {self:?}"))
    }

    /// The data as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("the event's data is JSON ({e}): {self:?}"))
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, awc::error::PayloadError>>>>;

/// A live feed being read: frames are split on blank lines, comments skipped.
pub(crate) struct Sse {
    stream: ByteStream,
    buffer: Vec<u8>,
    /// The last `retry:` field seen.
    pub(crate) retry: Option<u64>,
}

/// What reading a live feed gave.
#[derive(Debug)]
pub(crate) enum Next {
    /// An event.
    Event(SseEvent),
    /// The server ended the stream.
    End,
    /// Nothing within the wait.
    Quiet,
}

impl Sse {
    /// The next event, the end of the stream, or `Quiet` if nothing came within `wait`.
    pub(crate) async fn next(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.take_frame() {
                return Next::Event(event);
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Next::Quiet,
                Ok(None) => return Next::End,
                Ok(Some(Err(e))) => panic!("the live feed broke: {e}"),
                Ok(Some(Ok(chunk))) => self.buffer.extend_from_slice(&chunk),
            }
        }
    }

    /// The next event, failing the test if none comes within 10 s.
    pub(crate) async fn event(&mut self) -> SseEvent {
        match self.next(Duration::from_secs(10)).await {
            Next::Event(event) => event,
            other => panic!("expected a live event, got {other:?}"),
        }
    }

    /// The next `n` events.
    pub(crate) async fn events(&mut self, n: usize) -> Vec<SseEvent> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.event().await);
        }
        events
    }

    /// Takes the first complete event out of the buffer, dropping comment-only and
    /// retry-only frames.
    fn take_frame(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buffer.windows(2).position(|w| w == b"\n\n")?;
            let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8(frame).expect("a live feed frame is UTF-8");
            let mut id = None;
            let mut data: Vec<&str> = Vec::new();
            for line in text.lines() {
                if line.starts_with(':') || line.is_empty() {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = Some(value.to_owned()),
                    "data" => data.push(value),
                    "retry" => self.retry = value.parse().ok(),
                    other => panic!("unexpected field {other:?} in a live feed frame: {text:?}"),
                }
            }
            if !data.is_empty() {
                return Some(SseEvent {
                    id,
                    data: data.join("\n"),
                });
            }
        }
    }
}
