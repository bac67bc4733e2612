//! The HTTP side of the harness: an `awc` client of a running `annals serve`, sending only to
//! the address given with `--target`.
//!
//! What it relies on from the API (issue 5):
//! - `POST /v1/{aggregate}/{id}/commands` with the command's JSON: 200 with
//!   `{"id","version","position","events":[{"event_id","version","position",…}]}`; 422 a
//!   business rejection (problem+json naming the `rejection`); 429 or 503 with `Retry-After`
//!   when a limit is reached;
//! - `GET /v1/events?after=P&limit=N` (the global log) and
//!   `GET /v1/{aggregate}/{id}/events?from=V&limit=N` (a stream): a page of envelopes with
//!   `event_id`, `aggregate`, `id`, `version`, `position`, `type` and `data`. The page is read by
//!   [`parse_page`] alone, which takes either a bare array or an object with `events`, and pages
//!   on by the last position (or version) seen rather than by a `next` field;
//! - `GET /v1/views/customers/{id}?min_position=P`: the summary once the read model has
//!   reached `P`; 404 for an unknown customer;
//! - `GET /readyz`: 2xx when the server accepts writes.

use std::cell::Cell;
use std::time::Duration;

use awc::http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::target::{Ack, EventRef, FailKind, Failure, LogEvent, Outcome, ReadError};
use crate::workload::{Kind, Request};

/// Largest response body read, in bytes: a page of the log at the server's page-size limit
/// fits with room to spare.
const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two readiness checks of a server that is starting.
const READY_POLL: Duration = Duration::from_millis(100);
/// Most characters of a response body quoted in a failure.
const QUOTE_CHARS_MAX: usize = 200;

/// A client of one server.
pub(crate) struct HttpClient {
    /// `http://host:port`.
    base: String,
    /// The connection pool (of this thread).
    client: awc::Client,
    /// The server refused our page size (its `page_size_max` is lower): pages are read at
    /// its default size from then on.
    default_pages: Cell<bool>,
}

// `awc::Client` has no `Debug`.
impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client of the server at `base` with at most `connections` connections, each request
    /// bounded by `timeout`.
    pub(crate) fn new(base: &str, connections: usize, timeout: Duration) -> HttpClient {
        // Idle connections are dropped before the server's keep-alive (actix-web's 5 s) closes
        // them, so that no request goes out on a connection the server has just closed.
        let connector = awc::Connector::new()
            .limit(connections.max(1))
            .timeout(CONNECT_TIMEOUT.min(timeout))
            .conn_keep_alive(Duration::from_secs(2));
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(timeout)
            .disable_redirects()
            .finish();
        HttpClient {
            base: base.to_string(),
            client,
            default_pages: Cell::new(false),
        }
    }

    /// Sends a command.
    pub(crate) async fn command(&self, request: &Request) -> Outcome {
        let body = match request.command.to_json() {
            Ok(body) => body,
            Err(e) => return Outcome::Failed(Failure::new(FailKind::Other, e.to_string())),
        };
        let url = format!(
            "{}/v1/{}/{}/commands",
            self.base,
            request.command.kind().route(),
            request.id
        );
        let mut response = match self.client.post(&url).send_json(&body).await {
            Ok(response) => response,
            Err(e) => return Outcome::Failed(send_failure(&e)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = match response.body().limit(BODY_BYTES_MAX).await {
            Ok(bytes) => bytes,
            Err(e) => {
                return Outcome::Failed(Failure::new(
                    FailKind::Protocol,
                    format!("POST {url}: {status}, body unreadable: {e}"),
                ))
            }
        };
        match status.as_u16() {
            200 | 201 => match parse_ack(&bytes) {
                Ok(ack) => Outcome::Acked(ack),
                Err(e) => Outcome::Failed(Failure::new(
                    FailKind::Protocol,
                    format!(
                        "POST {url}: 200 with an unexpected body ({e}): {}",
                        quote(&bytes)
                    ),
                )),
            },
            422 => Outcome::Rejected(rejection(&bytes)),
            429 | 503 => Outcome::Failed(Failure {
                kind: FailKind::Overloaded,
                retry_after,
                detail: format!("POST {url}: {status}"),
            }),
            409 => Outcome::Failed(Failure::new(
                FailKind::Conflict,
                format!("POST {url}: {status}: {}", quote(&bytes)),
            )),
            code => Outcome::Failed(Failure::new(
                if code >= 500 {
                    FailKind::ServerError
                } else {
                    FailKind::ClientError
                },
                format!("POST {url}: {status}: {}", quote(&bytes)),
            )),
        }
    }

    /// `GET /readyz`, again while the server answers but is not ready (it is opening its
    /// store, say), for at most `wait`. A server that cannot be reached fails at once.
    pub(crate) async fn ready(&self, wait: Duration) -> Result<(), ReadError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let (status, bytes) = self.get("/readyz").await?;
            if status.is_success() {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(ReadError::new(
                    format!("{}/readyz", self.base),
                    format!("{status} for {wait:?}: {}", quote(&bytes)),
                ));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// A page of the global log after `after`.
    pub(crate) async fn log_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, ReadError> {
        let path = format!("/v1/events?after={after}");
        let page = self.get_page(&path, limit).await?.unwrap_or(Value::Null);
        parse_page(&page).map_err(|e| ReadError::new(format!("{}{path}", self.base), e))
    }

    /// A page of a stream from version `from` (empty if the aggregate does not exist).
    pub(crate) async fn stream(
        &self,
        kind: Kind,
        id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<LogEvent>, ReadError> {
        let path = format!("/v1/{}/{id}/events?from={from}", kind.route());
        match self.get_page(&path, limit).await? {
            None => Ok(Vec::new()),
            Some(page) => {
                parse_page(&page).map_err(|e| ReadError::new(format!("{}{path}", self.base), e))
            }
        }
    }

    /// A customer's summary once the read model has reached `position`.
    pub(crate) async fn customer_summary(
        &self,
        id: &str,
        position: u64,
    ) -> Result<Option<Value>, ReadError> {
        self.get_json(&format!("/v1/views/customers/{id}?min_position={position}"))
            .await
    }

    /// Whether pages come at the size asked for (the server has not refused it).
    pub(crate) fn honours_page_size(&self) -> bool {
        !self.default_pages.get()
    }

    /// The position of the last acknowledged event (the `head` of a log page).
    pub(crate) async fn head(&self) -> Result<u64, ReadError> {
        let path = "/v1/events?limit=1";
        let page = self.get_json(path).await?.unwrap_or(Value::Null);
        page.get("head")
            .and_then(Value::as_u64)
            .ok_or_else(|| ReadError::new(format!("{}{path}", self.base), "no `head` in the page"))
    }

    /// `GET path` (which has a query) with `limit`, or without if the server refused it once.
    async fn get_page(&self, path: &str, limit: usize) -> Result<Option<Value>, ReadError> {
        if !self.default_pages.get() {
            let (status, bytes) = self.get(&format!("{path}&limit={limit}")).await?;
            let limit_refused = status == StatusCode::BAD_REQUEST
                && serde_json::from_slice::<Value>(&bytes)
                    .is_ok_and(|p| p.get("parameter").and_then(Value::as_str) == Some("limit"));
            if !limit_refused {
                return self.json_of(path, status, &bytes);
            }
            self.default_pages.set(true);
        }
        self.get_json(path).await
    }

    /// `GET path`: the JSON body of a 2xx answer, `None` for 404, an error otherwise.
    async fn get_json(&self, path: &str) -> Result<Option<Value>, ReadError> {
        let (status, bytes) = self.get(path).await?;
        self.json_of(path, status, &bytes)
    }

    /// The JSON body of a 2xx answer, `None` for 404, an error otherwise.
    fn json_of(
        &self,
        path: &str,
        status: StatusCode,
        bytes: &[u8],
    ) -> Result<Option<Value>, ReadError> {
        let what = || format!("{}{path}", self.base);
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(ReadError::new(
                what(),
                format!("{status}: {}", quote(bytes)),
            ));
        }
        serde_json::from_slice(bytes)
            .map(Some)
            .map_err(|e| ReadError::new(what(), format!("not JSON ({e}): {}", quote(bytes))))
    }

    /// `GET path`: the status and the body.
    async fn get(&self, path: &str) -> Result<(StatusCode, bytes::Bytes), ReadError> {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| ReadError::new(&url, e))?;
        let bytes = response
            .body()
            .limit(BODY_BYTES_MAX)
            .await
            .map_err(|e| ReadError::new(&url, e))?;
        Ok((response.status(), bytes))
    }
}

/// The failure of a request that got no response.
fn send_failure(error: &awc::error::SendRequestError) -> Failure {
    use awc::error::SendRequestError as E;
    let kind = match error {
        E::Timeout => FailKind::Timeout,
        E::Connect(_) | E::Send(_) => FailKind::Connect,
        E::Response(_) => FailKind::Protocol,
        _ => FailKind::Other,
    };
    Failure::new(kind, error.to_string())
}

/// A 200 reply to a command.
fn parse_ack(bytes: &[u8]) -> Result<Ack, String> {
    let reply: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let version = u64_field(&reply, "version")?;
    let events = match reply.get("events") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(events)) => events
            .iter()
            .map(|event| {
                Ok(EventRef {
                    event_id: uuid_field(event, "event_id")?,
                    version: u64_field(event, "version")?,
                    position: u64_field(event, "position")?,
                })
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("`events` is not an array".into()),
    };
    Ok(Ack { version, events })
}

/// How a 422 body names the rejection: its `rejection` (a string, or an object with a `type`),
/// else its `title` or `detail`.
fn rejection(bytes: &[u8]) -> String {
    let Ok(problem) = serde_json::from_slice::<Value>(bytes) else {
        return quote(bytes);
    };
    let named = match problem.get("rejection") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o.get("type").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    named
        .or_else(|| {
            ["detail", "title"]
                .iter()
                .find_map(|k| problem.get(*k).and_then(Value::as_str).map(str::to_string))
        })
        .unwrap_or_else(|| quote(bytes))
}

/// A page of envelopes: a bare array, or an object whose `events` is one. The only place that
/// knows the shape of a page.
pub(crate) fn parse_page(page: &Value) -> Result<Vec<LogEvent>, String> {
    let events = match page {
        Value::Array(events) => events,
        Value::Object(o) => match o.get("events") {
            Some(Value::Array(events)) => events,
            _ => return Err("the page has no `events` array".into()),
        },
        _ => return Err("the page is neither an array nor an object".into()),
    };
    events.iter().map(parse_envelope).collect()
}

/// One envelope of a page.
fn parse_envelope(event: &Value) -> Result<LogEvent, String> {
    let text = |names: &[&str]| -> Result<String, String> {
        names
            .iter()
            .find_map(|n| event.get(*n).and_then(Value::as_str))
            .map(str::to_string)
            .ok_or_else(|| format!("an event has no `{}`", names.join("` or `")))
    };
    let aggregate = text(&["aggregate", "aggregate_type"])?;
    Ok(LogEvent {
        event_id: uuid_field(event, "event_id")?,
        kind: Kind::parse(&aggregate),
        id: text(&["id", "aggregate_id"])?,
        version: u64_field(event, "version")?,
        position: u64_field(event, "position")?,
        event_type: text(&["type", "event_type"])?,
        data: event
            .get("data")
            .or_else(|| event.get("payload"))
            .cloned()
            .unwrap_or(Value::Null),
    })
}

fn u64_field(value: &Value, name: &str) -> Result<u64, String> {
    value
        .get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("no whole number `{name}`"))
}

fn uuid_field(value: &Value, name: &str) -> Result<Uuid, String> {
    value
        .get(name)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| format!("no UUID `{name}`"))
}

/// The start of a body, for messages.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut quoted: String = text.chars().take(QUOTE_CHARS_MAX).collect();
    if text.chars().count() > QUOTE_CHARS_MAX {
        quoted.push('…');
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn acks_parse() -> Result<(), String> {
        let id = Uuid::new_v4();
        let body = json!({"id": "a", "version": 3, "position": 9,
            "events": [{"event_id": id.to_string(), "version": 3, "position": 9, "type": "Deposited"}]});
        let ack = parse_ack(body.to_string().as_bytes())?;
        assert_eq!(ack.version, 3);
        assert_eq!(
            ack.events,
            [EventRef {
                event_id: id,
                version: 3,
                position: 9
            }]
        );
        Ok(())
    }

    #[test]
    fn pages_parse_as_arrays_or_objects() -> Result<(), String> {
        let event = json!({"event_id": Uuid::new_v4().to_string(), "aggregate": "Order",
            "id": "o-1", "version": 1, "position": 4, "type": "OrderCreated",
            "data": {"customer_id": "c-1", "total": 5}});
        let object = parse_page(&json!({"events": [event.clone()], "next": 4}))?;
        let array = parse_page(&json!([event]))?;
        assert_eq!(object, array);
        assert_eq!(object[0].kind, Some(Kind::Order));
        assert_eq!(object[0].data["total"], 5);
        assert!(parse_page(&json!({"events": [{"id": "x"}]})).is_err());
        Ok(())
    }

    #[test]
    fn rejections_are_named() {
        let body = json!({"type": "about:blank", "title": "Unprocessable",
            "rejection": {"type": "InsufficientFunds", "balance": 1}});
        assert_eq!(rejection(body.to_string().as_bytes()), "InsufficientFunds");
        assert_eq!(rejection(b"plain"), "plain");
    }
}
