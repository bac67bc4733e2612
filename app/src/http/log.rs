//! The global log: paged reads (`GET /v1/events`) and the live feed (`GET /v1/events/live`,
//! Server-Sent Events).
//!
//! The live feed reads the log itself, page by page from the position after `Last-Event-ID`
//! (or `?after=P`), and waits on the journal's head watch once it is caught up. Catching up
//! and following are one loop, so a client that reconnects with the last id it saw gets every
//! later event once, in order, whatever happened in between. Memory per feed is one page; a
//! slow client holds the stream back (actix only polls it when the socket can take more), not
//! the journal. Feeds are bounded by `server.sse_connections_max`, send a comment every
//! `server.sse_keepalive_ms` so proxies keep them open, and end when the server stops.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use annals::{Position, RecordedEvent, Runtime};
use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::aggregates::{Aggregates, ApiAggregate};
use super::json::raw_envelope;
use super::problem::{Kind, Problem};
use super::{AppState, FeedRefusal, FeedSlot};
use crate::wire::api::LogPage;

/// Events per page of the live feed.
const LIVE_PAGE_EVENTS: usize = 256;

/// Query of `GET /v1/events`; its schema documents the route's parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Events after this position (default 0: from the start).
    after: Option<u64>,
    /// At most this many events (default `server.page_size_default`; at most
    /// `server.page_size_max`).
    limit: Option<usize>,
}

/// Renders stored events: decoded and upcast for the aggregate types served, converted
/// generically from CBOR for others ([`render_event`]).
pub fn render(aggregates: &Aggregates, stored: &[RecordedEvent]) -> Result<Vec<Value>, Problem> {
    let mut out = Vec::with_capacity(stored.len());
    for event in stored {
        let api = aggregates.by_type(event.stream.aggregate_type());
        out.extend(render_event(api.map(AsRef::as_ref), event)?);
    }
    Ok(out)
}

/// Renders one stored event: decoded and upcast by `api` (its aggregate type, if served), converted
/// generically from its stored CBOR otherwise — and also when a served type's event does not
/// decode (damaged, or of a schema this server has no upcaster for): that is logged, and the
/// event is shown as stored, so that one bad event does not hide the log, a history or the
/// live feed around it (the subscribers that cannot read it park it).
pub fn render_event(
    api: Option<&dyn ApiAggregate>,
    event: &RecordedEvent,
) -> Result<Vec<Value>, Problem> {
    if let Some(api) = api {
        match api.render(event) {
            Ok(events) => return Ok(events),
            Err(problem) => {
                tracing::warn!(position = %event.position, stream = %event.stream, error = %problem.detail(), "an event does not decode for its aggregate type; shown as stored");
            }
        }
    }
    Ok(vec![raw_envelope(event)?])
}

/// `GET /v1/events`.
pub async fn global_log(
    state: web::Data<AppState>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, Problem> {
    let runtime = state.runtime()?;
    let limit = state.page_size(query.limit)?;
    let after = query.after.unwrap_or(0);
    let from = Position(after.checked_add(1).ok_or_else(|| {
        Problem::bad_request("after is beyond any position").with("parameter", "after")
    })?);
    let shared = state.clone();
    let page = state
        .read(move || {
            let stored = runtime.read_all(from, limit)?;
            let events = render(&shared.aggregates, &stored)?;
            let next_after = stored.last().map_or(after, |e| e.position.0);
            let page = LogPage {
                events,
                next_after,
                head: runtime.head_position().0,
            };
            serde_json::to_value(&page).map_err(Problem::internal)
        })
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Query of `GET /v1/events/live`; its schema documents the route's parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveQuery {
    /// Events after this position (default the head: only new events); `Last-Event-ID` takes
    /// precedence.
    after: Option<u64>,
}

/// `GET /v1/events/live`.
pub async fn live(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<LiveQuery>,
) -> Result<HttpResponse, Problem> {
    let runtime = state.runtime()?;
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| {
                    Problem::bad_request("Last-Event-ID must be a position (decimal digits)")
                })
        })
        .transpose()?;
    let after = last_event_id
        .or(query.after)
        .unwrap_or_else(|| runtime.head_position().0);
    let server = &state.config.server;
    let client = req.peer_addr().map(|addr| addr.ip());
    let guard = state
        .live_feeds
        .enter(client)
        .map_err(|refusal| match refusal {
            FeedRefusal::PerClient(max) => Problem::overloaded(
                Kind::TooManyRequests,
                format!(
                    "this client address has {max} live feeds open, the configured limit \
                     (server.sse_connections_per_client_max)"
                ),
                Duration::from_secs(5),
            ),
            FeedRefusal::Total(max) => Problem::overloaded(
                Kind::Unavailable,
                format!(
                    "{max} live feeds are open, the configured limit (server.sse_connections_max)"
                ),
                Duration::from_secs(5),
            ),
        })?;
    let feed = Feed {
        runtime: runtime.clone(),
        state: state.clone(),
        next: Position(after.saturating_add(1)),
        head: runtime.store().watch_head(),
        stopping: state.stopping(),
        epoch: state.epoch(),
        keepalive: server.sse_keepalive,
        started: false,
        _guard: guard,
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next_chunk().await?;
        Some((Ok::<_, actix_web::Error>(chunk), feed))
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}

struct Feed {
    runtime: Runtime,
    state: web::Data<AppState>,
    next: Position,
    head: annals::store::HeadWatch,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Changes when the runtime is taken out to be reopened: the feed ends, and its client
    /// resumes on the new runtime with `Last-Event-ID`.
    epoch: tokio::sync::watch::Receiver<u64>,
    keepalive: Duration,
    started: bool,
    _guard: FeedSlot,
}

impl Feed {
    /// The next bytes to send, or `None` to end the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if !self.started {
            self.started = true;
            // Tells EventSource clients how soon to reconnect after the stream ends.
            return Some(Bytes::from_static(b"retry: 1000\n\n"));
        }
        loop {
            if *self.stopping.borrow() {
                return None;
            }
            // One page, read and rendered on the blocking pool: its last position and its
            // frames, or nothing when the feed is caught up.
            let (runtime, state, from) = (self.runtime.clone(), self.state.clone(), self.next);
            let read = self
                .state
                .read_queued(move || {
                    let page = runtime.read_all(from, LIVE_PAGE_EVENTS)?;
                    let Some(last) = page.last() else {
                        return Ok(None);
                    };
                    Ok(Some((last.position, frame(&state.aggregates, &page)?)))
                })
                .await;
            match read {
                Ok(Some((last, bytes))) => {
                    self.next = last.next();
                    return Some(bytes);
                }
                Ok(None) => {}
                Err(problem) => {
                    tracing::warn!(
                        problem = ?problem.detail(),
                        "live feed ends: the log cannot be read or rendered"
                    );
                    return None;
                }
            }
            // Caught up: wait for the head to move, a keep-alive, or the server to stop.
            self.head.borrow_and_update();
            if self.runtime.head_position() >= self.next {
                continue;
            }
            tokio::select! {
                changed = self.head.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = self.stopping.changed() => return None,
                _ = self.epoch.changed() => return None,
                () = tokio::time::sleep(self.keepalive) => {
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
            }
        }
    }
}

/// The Server-Sent Events of `page`: `id: {position}` and `data: {envelope}` per event.
fn frame(aggregates: &Aggregates, page: &[RecordedEvent]) -> Result<Bytes, Problem> {
    let mut out = Vec::with_capacity(page.len() * 256);
    for event in page {
        for rendered in render(aggregates, std::slice::from_ref(event))? {
            out.extend_from_slice(format!("id: {}\ndata: ", event.position).as_bytes());
            serde_json::to_writer(&mut out, &rendered).map_err(Problem::internal)?;
            out.extend_from_slice(b"\n\n");
        }
    }
    Ok(Bytes::from(out))
}
