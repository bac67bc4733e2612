//! The web console: its page and assets (`app/console/`, built into the binary: no network at
//! run time, no build step) and the two endpoints only it needs — the overview and the search
//! of aggregate ids. Everything else the page shows comes from the API it documents, with the
//! token the user gives it; the page itself is open, like `/docs`, and holds no data.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use schemars::JsonSchema;
use serde::Deserialize;

use annals::store::StoreHealth;
use annals::types::AGGREGATE_ID_LEN_MAX;
use annals::{Position, RecordedEvent, Timestamp};
use annals_config::StoreBackend;

use super::problem::Problem;
use super::read::status_json;
use super::AppState;
use crate::wire::api::{
    AggregateIds, Chain, ChainDeadline, JournalHealth, JournalOverview, Latency, Overview,
};
use crate::wire::cbor;
use crate::wire::time::Rfc3339;

const PAGE: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");

/// The page's policy: its own script and style only, API calls to its own origin, no frames.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// `GET /console`.
pub async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /console/console.js`.
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /console/console.css`.
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /v1/console/overview`.
pub async fn overview(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let runtime = state.runtime()?;
    let latency = state.metrics.recent_latency();
    let disk_dir = (state.config.store.backend == StoreBackend::Sled)
        .then(|| state.config.store.data_dir.clone());
    // The subscribers' lag and the disk are reads: on the blocking pool.
    let body = state
        .read(move || {
            let owners = runtime.stores().state.owners()?;
            let infos = runtime.subscribers();
            let stats = runtime.stats();
            let health = match runtime.health() {
                StoreHealth::Ready => JournalHealth::Ok,
                StoreHealth::Failed(_) => JournalHealth::Failed,
                _ => JournalHealth::Closed,
            };
            let overview = Overview {
                time: Rfc3339(Timestamp::now()),
                commands_total: latency.commands_total,
                command_latency_ms: Latency {
                    p50: latency.p50_ms,
                    p99: latency.p99_ms,
                },
                journal: JournalOverview {
                    appends_total: stats.journal.appends,
                    events_total: stats.journal.events,
                    fsyncs_total: stats.journal.fsyncs,
                    health,
                },
                disk_free_bytes: disk_dir.and_then(|dir| super::ops::disk_free_bytes(&dir).ok()),
                live_actors: u64::try_from(stats.live_actors).unwrap_or(u64::MAX),
                subscribers: infos
                    .iter()
                    .map(|info| status_json(info, &owners))
                    .collect(),
            };
            serde_json::to_vec(&overview)
                .map_err(|e| Problem::internal(format!("cannot render the overview: {e}")))
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// Pending deadlines a chain looks through (soonest first): a bound on the read.
pub const DEADLINES_SCANNED: usize = 10_000;

/// `GET /v1/console/chain/{event_id}`: the event's chain from the causation index
/// ([`crate::causation`]); 404 if the index does not hold it (yet).
pub async fn chain(
    state: web::Data<AppState>,
    event_id: web::Path<String>,
    query: web::Query<ChainQuery>,
) -> Result<HttpResponse, Problem> {
    let runtime = state.runtime()?;
    let limit = state.page_size(query.limit)?;
    let after = query.after.unwrap_or(0);
    let event_id = event_id.into_inner();
    if uuid::Uuid::parse_str(&event_id).is_err() {
        return Err(Problem::bad_request(format!(
            "{event_id:?} is not an event id (a UUID, as `event_id` in an envelope)"
        )));
    }
    let shared = state.clone();
    let body = state
        .read(move || {
            let log = runtime.stores().log;
            let read = |position: Position| -> Result<Option<RecordedEvent>, String> {
                let events = log.read_all(position, 1).map_err(|e| e.to_string())?;
                Ok(events.into_iter().find(|e| e.position == position))
            };
            let Some((positions, truncated)) =
                crate::causation::chain(&runtime, &event_id, &read).map_err(Problem::internal)?
            else {
                return Err(Problem::not_found(format!(
                    "event {event_id} is not in the causation index (not indexed yet, or of an \
                     aggregate type it does not index)"
                )));
            };
            let mut page = positions.into_iter().filter(|p| *p > after);
            let mut stored = Vec::with_capacity(limit);
            for position in page.by_ref().take(limit) {
                stored.extend(read(Position(position)).map_err(Problem::internal)?);
            }
            let next_after = page
                .next()
                .and_then(|_| stored.last().map(|e| e.position.0));
            // The pending deadlines of the chain's events and correlations.
            let ids: std::collections::HashSet<String> =
                stored.iter().map(|e| e.event_id.to_string()).collect();
            let correlations: std::collections::HashSet<&str> = stored
                .iter()
                .filter_map(|e| e.meta.correlation_id.as_deref())
                .collect();
            let deadlines = runtime
                .pending_deadlines(DEADLINES_SCANNED)?
                .into_iter()
                .filter(|d| {
                    ids.contains(&d.causation_id)
                        || d.correlation_id
                            .as_deref()
                            .is_some_and(|c| correlations.contains(c))
                })
                .map(|d| {
                    let command = annals::codec::decode_plain::<annals::codec::Value>(&d.command)
                        .ok()
                        .and_then(|c| serde_json::to_value(cbor::Json(&c)).ok())
                        .unwrap_or(serde_json::Value::Null);
                    ChainDeadline {
                        due: Rfc3339(d.due),
                        command_id: d.command_id,
                        causation_id: d.causation_id,
                        aggregate: d.aggregate_type,
                        id: d.aggregate_id,
                        command,
                    }
                })
                .collect();
            let events = super::log::render(&shared.aggregates, &stored)?;
            serde_json::to_vec(&Chain {
                event_id,
                events,
                next_after,
                truncated,
                deadlines,
            })
            .map_err(|e| Problem::internal(format!("cannot render the chain: {e}")))
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// Query of `GET /v1/console/chain/{event_id}`; its schema documents the parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainQuery {
    /// Events of the chain after this position (default 0: from its start).
    after: Option<u64>,
    /// At most this many events (default `server.page_size_default`; at most
    /// `server.page_size_max`).
    limit: Option<usize>,
}

/// Query of `GET /v1/console/aggregates/{aggregate}`; its schema documents the parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdsQuery {
    /// Ids that start with this (default: any).
    prefix: Option<String>,
    /// At most this many ids (default 20).
    limit: Option<usize>,
}

/// Ids listed when the query names no limit.
pub const IDS_DEFAULT: usize = 20;

/// `GET /v1/console/aggregates/{aggregate}`: ids of the aggregate type served under that
/// route, by prefix.
pub async fn aggregate_ids(
    state: web::Data<AppState>,
    route: web::Path<String>,
    query: web::Query<IdsQuery>,
) -> Result<HttpResponse, Problem> {
    let runtime = state.runtime()?;
    let api = state.aggregates.get(&route)?;
    let type_name = api.type_name();
    let IdsQuery { prefix, limit } = query.into_inner();
    let prefix = prefix.unwrap_or_default();
    if prefix.len() > AGGREGATE_ID_LEN_MAX {
        return Err(Problem::bad_request(format!(
            "the prefix is longer than an aggregate id may be ({AGGREGATE_ID_LEN_MAX} bytes)"
        ))
        .with("parameter", "prefix"));
    }
    let max = state.config.server.page_size_max.get();
    let limit = limit.unwrap_or(IDS_DEFAULT);
    if limit == 0 || limit > max {
        return Err(Problem::bad_request(format!(
            "limit must be from 1 to {max} (server.page_size_max)"
        ))
        .with("parameter", "limit"));
    }
    let ids = state
        .read(move || Ok(runtime.stores().log.stream_ids(type_name, &prefix, limit)?))
        .await?;
    Ok(HttpResponse::Ok().json(AggregateIds { ids }))
}
