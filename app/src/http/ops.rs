//! Operations endpoints: liveness, readiness and metrics.
//!
//! `/livez` answers 200 as long as the process serves HTTP. `/readyz` answers 200 only when
//! commands can succeed: the store is open (not still recovering, not failed to open), the
//! journal has not failed, and the data directory's file system has at least
//! `store.disk_free_bytes_min` bytes free; otherwise 503 naming every failing check.

use std::path::Path;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use annals::store::StoreHealth;
use serde_json::json;

use super::problem::Problem;
use super::AppState;

/// `GET /livez`.
pub async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "live" }))
}

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn disk_free_bytes(path: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// `GET /readyz`.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let mut failing = Vec::new();
    match state.try_runtime() {
        None => failing.push(match state.open_failure() {
            Some(why) => format!("the store could not be opened: {why}"),
            None => "the store is being opened and recovered".to_owned(),
        }),
        Some(runtime) => match runtime.health() {
            StoreHealth::Ready => {}
            StoreHealth::Failed(why) => failing.push(format!("the journal has failed: {why}")),
            StoreHealth::Closed => failing.push("the journal is shut down".to_owned()),
        },
    }
    let store = &state.config.store;
    let free = disk_free_bytes(&store.data_dir);
    match &free {
        Ok(free) if *free < store.disk_free_bytes_min => failing.push(format!(
            "the disk is full: {free} bytes free, below store.disk_free_bytes_min ({})",
            store.disk_free_bytes_min
        )),
        Ok(_) => {}
        Err(e) => failing.push(format!(
            "cannot read the free space of the data directory: {e}"
        )),
    }
    if !failing.is_empty() {
        return Err(
            Problem::unavailable(failing.join("; "), Duration::from_secs(1))
                .with("checks", failing),
        );
    }
    Ok(HttpResponse::Ok().json(json!({
        "status": "ready",
        "head_position": state.try_runtime().map(|r| r.head_position().0),
        "disk_free_bytes": free.ok(),
    })))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .body(state.metrics.render(state.try_runtime()))
}
