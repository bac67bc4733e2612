//! Operations endpoints: liveness, readiness and metrics.
//!
//! `/livez` answers 200 as long as the process serves HTTP. `/readyz` answers 200 only when
//! commands can succeed and read models follow: the store is open (not still recovering, not
//! failed to open), the journal has not failed (on PostgreSQL: the database answers the
//! store's head poll), no projection or process manager has failed, and, on the sled backend,
//! the data directory's file system has at least `store.disk_free_bytes_min` bytes free;
//! otherwise 503 naming every failing check.
//!
//! Both are open to anyone, so a check names what failed and never how: no path, no engine
//! error text (those go to the log, where the operator reads them). `/metrics` needs the
//! `admin` scope.

use std::path::Path;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use annals::store::StoreHealth;
use annals::SubscriberStatus;
use annals_config::StoreBackend;

use super::problem::{Kind, Problem};
use super::AppState;
use crate::wire::api::{Live, LiveStatus, Ready, ReadyStatus};

/// `GET /livez`.
pub async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(Live {
        status: LiveStatus::Live,
    })
}

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn disk_free_bytes(path: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// What failed, for `/readyz`: fixed words and configuration key names, and the names of the
/// server's own subscribers; nothing from the environment or from a client.
fn failing_checks(state: &AppState) -> (Vec<String>, Option<u64>) {
    let mut failing = Vec::new();
    match state.try_runtime() {
        None if state.is_reopening() => {
            failing.push("store reopening after a journal failure".to_owned());
        }
        None if state.open_failure().is_some() => {
            failing.push("store failed to open (see the server log)".to_owned());
        }
        None => failing.push("recovering".to_owned()),
        Some(runtime) => {
            let postgres = state.config.store.backend == StoreBackend::Postgres;
            match runtime.health() {
                StoreHealth::Ready => {}
                StoreHealth::Failed(_) if postgres => failing.push(
                    "database unreachable (PostgreSQL does not answer; see the server log)"
                        .to_owned(),
                ),
                StoreHealth::Failed(_) => failing.push(
                    "journal failed (write or fsync error; reopened once the disk has room)"
                        .to_owned(),
                ),
                StoreHealth::Closed => failing.push("journal shut down".to_owned()),
            }
            for subscriber in runtime.subscribers() {
                if let SubscriberStatus::Failed(_) = subscriber.status {
                    failing.push(format!("subscriber {} failed", subscriber.name));
                }
            }
        }
    }
    let store = &state.config.store;
    if store.backend != StoreBackend::Sled {
        // No data directory: the database's disk is the database server's to watch.
        return (failing, None);
    }
    let free = match disk_free_bytes(&store.data_dir) {
        Ok(free) => {
            if free < store.disk_free_bytes_min {
                failing.push("disk free below store.disk_free_bytes_min".to_owned());
            }
            Some(free)
        }
        Err(error) => {
            tracing::warn!(error = ?error.to_string(), "cannot read the free space of the data directory");
            failing.push("disk free space cannot be read (see the server log)".to_owned());
            None
        }
    };
    (failing, free)
}

/// `GET /readyz`.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    // The checks read the store (a subscriber's state, the disk's free space): on the blocking
    // pool, not on an HTTP worker. Not through the bounded reads of `AppState::read`, so that
    // a burst of reads does not make the server look unready; a probe comes every few seconds.
    let checked = state.clone();
    let (failing, free) = web::block(move || failing_checks(&checked))
        .await
        .map_err(|e| {
            Problem::internal(format!("the blocking pool could not run the checks: {e}"))
        })?;
    if !failing.is_empty() {
        return Err(Problem::overloaded(
            Kind::Unavailable,
            format!("not ready: {}", failing.join("; ")),
            Duration::from_secs(1),
        )
        .with("checks", failing));
    }
    Ok(HttpResponse::Ok().json(Ready {
        status: ReadyStatus::Ready,
        head_position: state.try_runtime().map(|r| r.head_position().0),
        disk_free_bytes: free,
    }))
}

/// `GET /metrics`: Prometheus text format. Rendered on the blocking pool, as a store read
/// ([`AppState::read`]): the subscribers' lag reads the log.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let (metrics, runtime, postgres) = (
        state.metrics.clone(),
        state.try_runtime(),
        state.postgres_store(),
    );
    let text = state
        .read(move || Ok(metrics.render(runtime.as_ref(), postgres.as_ref())))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .body(text))
}
