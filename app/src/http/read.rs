//! Read side: subscriber status, projection rebuilds, parked events, and the reference
//! domain's read models.
//!
//! Every view query accepts `min_position=P`, the `position` of a command's reply: the query
//! first waits (at most `server.wait_max_ms`) until the projection has processed position
//! `P`, so a client reads its own writes. If it has not got there in time the answer is 503
//! with `Retry-After` and the position it reached.

use actix_web::{web, HttpResponse};
use annals::subscription::RetryError;
use annals::{Position, SubscriberInfo, SubscriberStatus, Timestamp};
use annals_domain::views;
use serde::Deserialize;
use serde_json::{json, Value};

use super::json::{parse_rfc3339, rfc3339};
use super::problem::{Kind, Problem};
use super::AppState;

fn status_json(info: &SubscriberInfo) -> Value {
    let (status, reason) = match &info.status {
        SubscriberStatus::CatchingUp => ("catching_up", None),
        SubscriberStatus::Live => ("live", None),
        SubscriberStatus::Rebuilding => ("rebuilding", None),
        SubscriberStatus::Stopped => ("stopped", None),
        SubscriberStatus::Retrying(why) => ("retrying", Some(why.as_str())),
        SubscriberStatus::Failed(why) => ("failed", Some(why.as_str())),
    };
    json!({
        "name": info.name,
        "checkpoint": info.checkpoint.0,
        "head": info.head.0,
        "lag_events": info.lag_events,
        "lag_seconds": info.lag_seconds,
        "status": status,
        "reason": reason,
    })
}

/// `GET /v1/projections`: every subscriber (projections, process managers, rebuilds).
pub async fn projections(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let runtime = state.runtime()?;
    let all: Vec<Value> = runtime.subscribers().iter().map(status_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "subscribers": all })))
}

/// `POST /v1/projections/{name}/rebuild`: 202, the rebuild runs beside the live projection.
pub async fn rebuild(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let runtime = state.runtime()?;
    runtime.rebuild(&name)?;
    Ok(HttpResponse::Accepted().json(json!({
        "name": *name,
        "status": "rebuilding",
        "detail": format!(
            "{name} is being rebuilt from position 0 beside the live one and swapped in when \
             it reaches the head; GET /v1/projections shows its progress as {name}#rebuild"
        ),
    })))
}

/// `GET /v1/projections/{name}/parked`.
pub async fn parked(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let runtime = state.runtime()?;
    let parked: Vec<Value> = runtime
        .parked(&name)?
        .iter()
        .map(|p| {
            json!({
                "position": p.position.0,
                "reason": p.reason,
                "attempts": p.attempts,
                "parked_at": rfc3339(p.parked_at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "name": *name, "parked": parked })))
}

/// `POST /v1/projections/{name}/parked/{position}/retry`.
pub async fn retry_parked(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let runtime = state.runtime()?;
    let (name, position) = path.into_inner();
    let position = position
        .parse::<u64>()
        .map(Position)
        .map_err(|_| Problem::bad_request(format!("{position:?} is not a position")))?;
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
                RetryError::Stopped => {
                    Problem::unavailable(detail, std::time::Duration::from_secs(5))
                }
                RetryError::Store(store) => Problem::from(store),
                _ => Problem::internal(detail),
            }
        })?;
    Ok(HttpResponse::Ok().json(json!({
        "name": name,
        "position": position.0,
        "status": "retried",
    })))
}

/// The `min_position` parameter shared by view queries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewQuery {
    /// Wait until the view has processed this position.
    min_position: Option<u64>,
    /// At most this many entries (lists only).
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
                    map.insert((*field).to_owned(), rfc3339(Timestamp(micros)).into());
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
    if query.limit.is_some() {
        return Err(Problem::bad_request("limit applies to lists only").with("parameter", "limit"));
    }
    reach(&state, views::CUSTOMER_SUMMARIES, query.min_position).await?;
    let summary = views::customer_summary(state.runtime()?, &id)?
        .ok_or_else(|| Problem::not_found(format!("customer {:?} does not exist", *id)))?;
    Ok(HttpResponse::Ok().json(with_times(to_json(&summary)?, &["created_at"])))
}

/// `GET /v1/views/customers/{id}/orders`.
pub async fn customer_orders(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ViewQuery>,
) -> Result<HttpResponse, Problem> {
    let limit = state.page_size(query.limit)?;
    reach(&state, views::CUSTOMER_SUMMARIES, query.min_position).await?;
    let orders: Vec<Value> = views::customer_orders(state.runtime()?, &id, limit)?
        .iter()
        .map(|o| to_json(o).map(|v| with_times(v, &["created_at"])))
        .collect::<Result<_, _>>()?;
    Ok(HttpResponse::Ok().json(json!({ "customer_id": *id, "orders": orders })))
}

/// Query of `GET /v1/views/valuable-customers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValuableQuery {
    /// Customers created strictly after this instant (RFC 3339; default: any).
    created_after: Option<String>,
    /// ... with a shipped order whose total is at least this (minor units; default 1).
    min_order_total: Option<u64>,
    /// Wait until the view has processed this position.
    min_position: Option<u64>,
    /// At most this many customers.
    limit: Option<usize>,
}

/// `GET /v1/views/valuable-customers`: customers created after a time who have a shipped order
/// of at least a total, oldest first.
pub async fn valuable_customers(
    state: web::Data<AppState>,
    query: web::Query<ValuableQuery>,
) -> Result<HttpResponse, Problem> {
    let limit = state.page_size(query.limit)?;
    let created_after = match &query.created_after {
        Some(text) => parse_rfc3339("created_after", text)?,
        None => Timestamp(0),
    };
    // The view answers "total above N"; the API's parameter is inclusive.
    let total_above = query.min_order_total.unwrap_or(1).saturating_sub(1);
    reach(&state, views::VALUABLE_CUSTOMERS, query.min_position).await?;
    let customers: Vec<Value> =
        views::recent_valuable_customers(state.runtime()?, created_after, total_above, limit)?
            .iter()
            .map(|c| to_json(c).map(|v| with_times(v, &["created_at"])))
            .collect::<Result<_, _>>()?;
    Ok(HttpResponse::Ok().json(json!({ "customers": customers })))
}
