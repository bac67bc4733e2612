//! Read side: subscriber status, projection rebuilds, parked events, and the reference
//! domain's read models.
//!
//! Every view query accepts `min_position=P`, the `position` of a command's reply: the query
//! first waits (at most `server.wait_max_ms`) until the projection has processed position
//! `P`, so a client reads its own writes. If it has not got there in time the answer is 503
//! with `Retry-After` and the position it reached.
//!
//! Names and ids in paths are checked before anything is looked up: a projection name as the
//! runtime names subscribers (1 to 64 visible characters, no `@`, `#` or `/`), a customer id as
//! the runtime checks aggregate ids, a parked position as canonical decimal; anything else is
//! a 400, never a 404 for a spelling no name can have.
//!
//! Rebuilds are bounded: at most `server.rebuilds_max` run at once (503 beyond), counted and
//! started under one lock. A projection's parked retry counts as a rebuild, since it is one; a
//! process manager's handles the event again and is not bounded by it.
//!
//! Store reads run on the blocking pool ([`AppState::read`]). One valuable-customers request
//! reads at most [`VALUABLE_SCAN_PER_PAGE_ENTRY`] × `server.page_size_max` records of the view
//! (10,000 by default): when a page stops early (its `limit` reached, or that many records
//! read), `next_after` is the cursor to continue.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use annals::subscription::RetryError;
use annals::{Position, StreamId, SubscriberInfo, SubscriberStatus, Timestamp};
use annals_domain::customer::Customer;
use annals_domain::views::{self, ValuableCursor, ValuableCustomers};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::json::parse_rfc3339;
use super::problem::{Kind, Problem};
use super::AppState;
use crate::wire::api::{
    CustomerOrders, ParkedEvent, ParkedEvents, ParkedRetried, RebuildStarted, Rebuilding, Retried,
    Subscriber, SubscriberState, Subscribers, ValuableCustomers as ValuablePage,
};
use crate::wire::time::{self, Rfc3339};

/// Records of the valuable-customers view one request may read per entry of the largest page
/// (`server.page_size_max`): the scan budget of one request, so that a `min_order_total` no
/// customer reaches costs a bounded read, not the whole view. (The key prefixes it seeks are
/// bounded too: at most 1 + 8 × 255.)
pub const VALUABLE_SCAN_PER_PAGE_ENTRY: usize = 10;

pub(crate) fn status_json<'a>(
    info: &'a SubscriberInfo,
    owners: &'a [annals::store::Owner],
) -> Subscriber<'a> {
    // A projection's lease is held under its storage name, `{name}@{generation}`; the latest
    // renewed one is the generation running.
    let owner = owners
        .iter()
        .filter(|o| {
            o.name == info.name
                || o.name
                    .strip_prefix(info.name.as_str())
                    .is_some_and(|rest| rest.starts_with('@'))
        })
        .max_by_key(|o| o.renewed_at);
    let (status, reason) = match &info.status {
        SubscriberStatus::CatchingUp => (SubscriberState::CatchingUp, None),
        SubscriberStatus::Live => (SubscriberState::Live, None),
        SubscriberStatus::Rebuilding => (SubscriberState::Rebuilding, None),
        SubscriberStatus::Stopped => (SubscriberState::Stopped, None),
        SubscriberStatus::Standby => (SubscriberState::Standby, None),
        SubscriberStatus::Retrying(why) => (SubscriberState::Retrying, Some(why.as_str())),
        SubscriberStatus::Failed(why) => (SubscriberState::Failed, Some(why.as_str())),
    };
    Subscriber {
        name: &info.name,
        checkpoint: info.checkpoint.0,
        head: info.head.0,
        lag_events: info.lag_events,
        lag_seconds: info.lag_seconds,
        status,
        reason,
        owner: owner.map(|o| o.node.as_str()),
        owner_epoch: owner.map(|o| o.epoch),
    }
}

/// Checks a subscriber name from the path: what the runtime accepts as a name.
fn check_name(name: &str) -> Result<(), Problem> {
    let ok = !name.is_empty()
        && name.len() <= annals::subscription::NAME_LEN_MAX
        && !name.contains(['@', '#', '/'])
        && name.chars().all(annals::types::is_id_char);
    if ok {
        Ok(())
    } else {
        Err(Problem::bad_request(format!(
            "{name:?} is not a subscriber name: 1 to {} bytes of visible characters, without \
             '@', '#' or '/'",
            annals::subscription::NAME_LEN_MAX
        )))
    }
}

/// Checks a customer id from the path, as the runtime checks aggregate ids.
fn check_customer_id(id: &str) -> Result<(), Problem> {
    StreamId::new(<Customer as annals::Aggregate>::TYPE, id)
        .map(|_| ())
        .map_err(|e| Problem::bad_request(e.to_string()))
}

/// `GET /v1/projections`: every subscriber (projections, process managers, rebuilds).
pub async fn projections(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let runtime = state.runtime()?;
    // Which node runs what, when nodes share a database (empty on the embedded store), and
    // each one's lag, which reads the log: on the blocking pool.
    let body = state
        .read(move || {
            let owners = runtime.stores().state.owners()?;
            let infos = runtime.subscribers();
            let subscribers = infos
                .iter()
                .map(|info| status_json(info, &owners))
                .collect();
            serde_json::to_vec(&Subscribers { subscribers })
                .map_err(|e| Problem::internal(format!("cannot render the subscribers: {e}")))
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// Runs `start` (which may start a rebuild) if fewer than `server.rebuilds_max` rebuilds are
/// running; 503 otherwise. Starts are taken one at a time, so that counting and starting are
/// one step; a request waiting for its turn is bounded by `server.request_deadline_ms`.
async fn bounded_rebuild<T>(
    state: &AppState,
    start: impl std::future::Future<Output = Result<T, Problem>>,
) -> Result<T, Problem> {
    let runtime = state.runtime()?;
    let max = state.config.server.rebuilds_max.get();
    let _starting = state.rebuild_start.lock().await;
    let running = runtime
        .subscribers()
        .iter()
        .filter(|s| s.name.ends_with("#rebuild") && s.status == SubscriberStatus::Rebuilding)
        .count();
    if running >= max {
        return Err(Problem::overloaded(
            Kind::Unavailable,
            format!(
                "{running} projection rebuilds are running, the configured limit \
                 (server.rebuilds_max)"
            ),
            Duration::from_secs(5),
        ));
    }
    start.await
}

/// `POST /v1/projections/{name}/rebuild`: 202, the rebuild runs beside the live projection.
pub async fn rebuild(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    check_name(&name)?;
    let runtime = state.runtime()?;
    bounded_rebuild(&state, async { Ok(runtime.rebuild(&name)?) }).await?;
    Ok(HttpResponse::Accepted().json(RebuildStarted {
        name: &name,
        status: Rebuilding::Rebuilding,
        detail: format!(
            "{name} is being rebuilt from position 0 beside the live one and swapped in when \
             it reaches the head; GET /v1/projections shows its progress as {name}#rebuild"
        ),
    }))
}

/// `GET /v1/projections/{name}/parked`.
pub async fn parked(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    check_name(&name)?;
    let runtime = state.runtime()?;
    let name = name.into_inner();
    let body = state
        .read(move || {
            let stored = runtime.parked(&name)?;
            let parked = stored
                .iter()
                .map(|p| ParkedEvent {
                    position: p.position.0,
                    reason: &p.reason,
                    attempts: p.attempts,
                    parked_at: Rfc3339(p.parked_at),
                })
                .collect();
            to_json(&ParkedEvents {
                name: &name,
                parked,
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(body))
}

/// `POST /v1/projections/{name}/parked/{position}/retry`.
pub async fn retry_parked(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (name, position) = path.into_inner();
    check_name(&name)?;
    let position = parse_position(&position)?;
    let runtime = state.runtime()?;
    let retry = async {
        runtime
            .retry_parked(&name, position)
            .await
            .map_err(|error| {
                let detail = error.to_string();
                match error {
                    RetryError::UnknownSubscriber(_) | RetryError::NotParked(_) => {
                        Problem::not_found(detail)
                    }
                    RetryError::Failed(_) => Problem::new(Kind::Conflict, detail),
                    RetryError::Stopped => Problem::unavailable(detail, Duration::from_secs(5)),
                    RetryError::Store(store) => Problem::from(store),
                    other => Problem::internal(other),
                }
            })
    };
    // A projection's parked retry is a rebuild, and counts as one; a process manager's is not.
    if runtime.is_projection(&name) {
        bounded_rebuild(&state, retry).await?;
    } else {
        retry.await?;
    }
    Ok(HttpResponse::Ok().json(ParkedRetried {
        name: &name,
        position: position.0,
        status: Retried::Retried,
    }))
}

/// A position from the path: canonical decimal digits only.
fn parse_position(text: &str) -> Result<Position, Problem> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    text.parse::<u64>()
        .ok()
        .filter(|_| canonical)
        .map(Position)
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "{text:?} is not a position (a number in decimal, without sign or leading zeros)"
            ))
        })
}

/// The query of the view routes (`limit` for lists only); its schema documents their
/// parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewQuery {
    /// Read your writes: first wait (at most `server.wait_max_ms`) until the view has processed
    /// this position, the `position` of a command's reply. A position beyond the log's head is
    /// a 400; a wait that runs out is a 503.
    min_position: Option<u64>,
    /// At most this many entries (lists only; default `server.page_size_default`, at most
    /// `server.page_size_max`).
    limit: Option<usize>,
}

/// Waits until `projection` has reached `min_position`, within the configured bound.
async fn reach(
    state: &AppState,
    projection: &str,
    min_position: Option<u64>,
) -> Result<(), Problem> {
    let Some(wanted) = min_position else {
        return Ok(());
    };
    let runtime = state.runtime()?;
    let head = runtime.head_position().0;
    if wanted > head {
        return Err(Problem::bad_request(format!(
            "min_position {wanted} is beyond the log's head ({head}): it is not the position \
             of any acknowledged command"
        ))
        .with("parameter", "min_position"));
    }
    let retry_after = state.config.runtime.retry_after;
    runtime
        .wait_for(projection, Position(wanted), state.config.server.wait_max)
        .await
        .map(|_| ())
        .map_err(|e| Problem::from_wait(&e, retry_after))
}

fn with_times(mut value: Value, fields: &[&str]) -> Value {
    if let Value::Object(map) = &mut value {
        for field in fields {
            if let Some(Value::Number(n)) = map.get(*field) {
                if let Some(micros) = n.as_u64() {
                    map.insert((*field).to_owned(), time::format(Timestamp(micros)).into());
                }
            }
        }
    }
    value
}

fn to_json(value: &impl serde::Serialize) -> Result<Value, Problem> {
    serde_json::to_value(value).map_err(|e| Problem::internal(format!("cannot render: {e}")))
}

/// `GET /v1/views/customers/{id}`.
pub async fn customer_summary(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ViewQuery>,
) -> Result<HttpResponse, Problem> {
    check_customer_id(&id)?;
    if query.limit.is_some() {
        return Err(Problem::bad_request("limit applies to lists only").with("parameter", "limit"));
    }
    reach(&state, views::CUSTOMER_SUMMARIES, query.min_position).await?;
    let runtime = state.runtime()?;
    let id = id.into_inner();
    let summary = state
        .read(move || {
            let summary = views::customer_summary(&runtime, &id)?
                .ok_or_else(|| Problem::not_found(format!("customer {id:?} does not exist")))?;
            Ok(with_times(to_json(&summary)?, &["created_at"]))
        })
        .await?;
    Ok(HttpResponse::Ok().json(summary))
}

/// `GET /v1/views/customers/{id}/orders`.
pub async fn customer_orders(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ViewQuery>,
) -> Result<HttpResponse, Problem> {
    check_customer_id(&id)?;
    let limit = state.page_size(query.limit)?;
    reach(&state, views::CUSTOMER_SUMMARIES, query.min_position).await?;
    let runtime = state.runtime()?;
    let id = id.into_inner();
    let body = state
        .read(move || {
            let orders: Vec<Value> = views::customer_orders(&runtime, &id, limit)?
                .iter()
                .map(|o| to_json(o).map(|v| with_times(v, &["created_at"])))
                .collect::<Result<_, _>>()?;
            to_json(&CustomerOrders {
                customer_id: &id,
                orders,
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(body))
}

/// Query of `GET /v1/views/valuable-customers`; its schema documents the route's parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValuableQuery {
    /// Customers created strictly after this time (RFC 3339; default: any; before 1970 is a
    /// 400).
    created_after: Option<String>,
    /// ... with a shipped order whose total is at least this, in minor units (default 1).
    min_order_total: Option<u64>,
    /// Continue after this cursor: the `next_after` of the previous page (`{created_at
    /// µs}:{customer id}`); anything else is a 400.
    after: Option<String>,
    /// Read your writes: first wait (at most `server.wait_max_ms`) until the view has processed
    /// this position, the `position` of a command's reply. A position beyond the log's head is
    /// a 400; a wait that runs out is a 503.
    min_position: Option<u64>,
    /// At most this many customers (default `server.page_size_default`; at most
    /// `server.page_size_max`).
    limit: Option<usize>,
}

/// Where a page of valuable customers continues: after the customer created at `micros`
/// with id `id`. Written `{micros}:{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    micros: u64,
    id: String,
}

impl Cursor {
    fn parse(text: &str) -> Result<Cursor, Problem> {
        let bad = || {
            Problem::bad_request(format!(
                "after {text:?} is not a cursor: send the next_after of the previous page"
            ))
            .with("parameter", "after")
        };
        let (micros, id) = text.split_once(':').ok_or_else(bad)?;
        let micros = (!micros.is_empty() && micros.bytes().all(|b| b.is_ascii_digit()))
            .then(|| micros.parse::<u64>().ok())
            .flatten()
            .ok_or_else(bad)?;
        check_customer_id(id).map_err(|_| bad())?;
        Ok(Cursor {
            micros,
            id: id.to_owned(),
        })
    }

    fn render(&self) -> String {
        format!("{}:{}", self.micros, self.id)
    }

    fn to_domain(&self) -> ValuableCursor {
        ValuableCursor {
            created_at: Timestamp(self.micros),
            customer_id: self.id.clone(),
        }
    }

    fn from_domain(cursor: &ValuableCursor) -> Cursor {
        Cursor {
            micros: cursor.created_at.as_micros(),
            id: cursor.customer_id.clone(),
        }
    }
}

/// `GET /v1/views/valuable-customers`: customers created after a time who have a shipped order
/// of at least a total, oldest first, paged by a cursor.
pub async fn valuable_customers(
    state: web::Data<AppState>,
    query: web::Query<ValuableQuery>,
) -> Result<HttpResponse, Problem> {
    let limit = state.page_size(query.limit)?;
    let created_after = match &query.created_after {
        Some(text) => parse_rfc3339("created_after", text)?,
        None => Timestamp(0),
    };
    let cursor = query.after.as_deref().map(Cursor::parse).transpose()?;
    // The view answers "total above N"; the API's parameter is inclusive.
    let total_above = query.min_order_total.unwrap_or(1).saturating_sub(1);
    reach(&state, views::VALUABLE_CUSTOMERS, query.min_position).await?;
    let runtime = state.runtime()?;
    let budget =
        VALUABLE_SCAN_PER_PAGE_ENTRY.saturating_mul(state.config.server.page_size_max.get());
    let body = state
        .read(move || {
            let page = ValuableCustomers::open(&runtime)?
                .page(
                    created_after,
                    total_above,
                    cursor.as_ref().map(Cursor::to_domain).as_ref(),
                    limit,
                    budget,
                )
                .map_err(Problem::internal)?;
            let customers: Vec<Value> = page
                .customers
                .iter()
                .map(|c| to_json(c).map(|v| with_times(v, &["created_at"])))
                .collect::<Result<_, _>>()?;
            to_json(&ValuablePage {
                customers,
                next_after: page.next.as_ref().map(|c| Cursor::from_domain(c).render()),
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ids_and_positions_are_checked() {
        assert!(check_name("customer-summaries").is_ok());
        for bad in [
            "",
            "a#rebuild",
            "a/b",
            "a b",
            "a\nb",
            "a\u{FFFD}b",
            &"n".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_customer_id("c-1").is_ok());
        assert!(check_customer_id("a\u{FFFD}b").is_err());
        assert_eq!(parse_position("12").ok(), Some(Position(12)));
        assert_eq!(parse_position("0").ok(), Some(Position(0)));
        for bad in ["", "+1", "01", "-1", "1e3", "18446744073709551616"] {
            assert!(parse_position(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor {
            micros: 1_795_000_000_123_456,
            id: "c:1/x".into(),
        };
        assert_eq!(Cursor::parse(&cursor.render()).ok(), Some(cursor.clone()));
        for bad in ["", "12", ":c-1", "x:c-1", "+1:c-1", "1:", "1:a b"] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Cursor::from_domain(&cursor.to_domain()), cursor);
    }
}
