//! The HTTP API: shared state, the route table, and the handlers by area.
//!
//! | module | routes |
//! |---|---|
//! | [`aggregates`] | `POST /v1/{aggregate}/{id}/commands`, `GET /v1/{aggregate}/{id}`, `GET /v1/{aggregate}/{id}/events` |
//! | [`log`] | `GET /v1/events` (the global log, paged), `GET /v1/events/live` (Server-Sent Events) |
//! | [`read`] | `/v1/projections…` (status, rebuild, parked events) and `/v1/views/…` (read models) |
//! | [`ops`] | `GET /livez`, `GET /readyz`, `GET /metrics` |
//! | [`openapi`] | `GET /openapi.json`, `GET /docs` |
//!
//! The server binds before the store is open: while recovery runs, `/livez` answers and
//! everything else answers 503 with `Retry-After`, so an orchestrator can tell "starting" from
//! "dead". Every error is a [`problem::Problem`] (RFC 9457).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{guard, web, HttpRequest, HttpResponse, ResponseError};
use annals::Runtime;
use annals_config::Config;
use parking_lot::Mutex;

pub mod aggregates;
pub mod json;
pub mod log;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod problem;
pub mod read;

use aggregates::Aggregates;
use metrics::Metrics;
use problem::{Kind, Problem};

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The aggregate types served.
    pub aggregates: Aggregates,
    /// The service's metrics.
    pub metrics: Metrics,
    /// Commands in flight (bounded by `server.in_flight_max`).
    pub in_flight: Gauge,
    /// Open live feeds (bounded by `server.sse_connections_max`).
    pub live_feeds: Arc<Gauge>,
    runtime: OnceLock<Runtime>,
    open_failure: Mutex<Option<String>>,
    stopping: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// State for `config`, serving the reference domain; the runtime comes later.
    pub fn new(config: Arc<Config>) -> AppState {
        let in_flight = Gauge::new(config.server.in_flight_max.get());
        let live_feeds = Arc::new(Gauge::new(config.server.sse_connections_max.get()));
        AppState {
            config,
            aggregates: Aggregates::domain(),
            metrics: Metrics::default(),
            in_flight,
            live_feeds,
            runtime: OnceLock::new(),
            open_failure: Mutex::new(None),
            stopping: tokio::sync::watch::channel(false).0,
        }
    }

    /// The runtime, or 503 while the store is being opened (or could not be).
    pub fn runtime(&self) -> Result<&Runtime, Problem> {
        self.runtime
            .get()
            .ok_or_else(|| match &*self.open_failure.lock() {
                Some(why) => Problem::unavailable(
                    format!("the store could not be opened: {why}"),
                    Duration::from_secs(5),
                ),
                None => Problem::unavailable(
                    "the store is being opened and recovered",
                    Duration::from_secs(1),
                ),
            })
    }

    /// The runtime, if open.
    pub fn try_runtime(&self) -> Option<&Runtime> {
        self.runtime.get()
    }

    /// Makes the runtime available to the handlers.
    pub fn set_runtime(&self, runtime: Runtime) {
        let _ = self.runtime.set(runtime);
    }

    /// Records why the store could not be opened (readiness reports it).
    pub fn set_open_failure(&self, why: String) {
        *self.open_failure.lock() = Some(why);
    }

    /// Why the store could not be opened, if it could not.
    pub fn open_failure(&self) -> Option<String> {
        self.open_failure.lock().clone()
    }

    /// Tells long-lived responses (live feeds) to end: the server is stopping.
    pub fn begin_stopping(&self) {
        self.stopping.send_replace(true);
    }

    /// A watch that turns `true` when the server starts stopping.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// The page size for a `limit` parameter: the default when absent, 400 above the maximum.
    pub fn page_size(&self, limit: Option<usize>) -> Result<usize, Problem> {
        let server = &self.config.server;
        match limit {
            None => Ok(server.page_size_default.get()),
            Some(0) => {
                Err(Problem::bad_request("limit must be at least 1").with("parameter", "limit"))
            }
            Some(n) if n > server.page_size_max.get() => Err(Problem::bad_request(format!(
                "limit {n} exceeds the maximum page size of {} (server.page_size_max)",
                server.page_size_max
            ))
            .with("parameter", "limit")),
            Some(n) => Ok(n),
        }
    }
}

/// A bounded count of things in progress.
#[derive(Debug)]
pub struct Gauge {
    current: AtomicUsize,
    max: usize,
}

/// One unit of a [`Gauge`], released on drop.
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a Gauge);

impl Gauge {
    fn new(max: usize) -> Gauge {
        Gauge {
            current: AtomicUsize::new(0),
            max,
        }
    }

    fn take(&self) -> bool {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes one unit, or `None` at the maximum.
    pub fn enter(&self) -> Option<GaugeGuard<'_>> {
        self.take().then(|| GaugeGuard(self))
    }

    /// Takes one unit for as long as the returned owner lives (for streams).
    pub fn enter_owned(self: &Arc<Self>) -> Option<OwnedGaugeGuard> {
        self.take().then(|| OwnedGaugeGuard(Arc::clone(self)))
    }

    /// Units in use.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An owned unit of a shared [`Gauge`].
#[derive(Debug)]
pub struct OwnedGaugeGuard(Arc<Gauge>);

impl Drop for OwnedGaugeGuard {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Registers every route on `config`.
pub fn routes(config: &mut web::ServiceConfig) {
    // GET routes answer HEAD too (actix sends no body for HEAD).
    let get = || web::route().guard(guard::Any(guard::Get()).or(guard::Head()));
    let post = web::post;
    config
        .app_data(query_config())
        .app_data(path_config())
        .service(resource("/livez", "GET, HEAD").route(get().to(ops::livez)))
        .service(resource("/readyz", "GET, HEAD").route(get().to(ops::readyz)))
        .service(resource("/metrics", "GET, HEAD").route(get().to(ops::metrics)))
        .service(resource("/openapi.json", "GET, HEAD").route(get().to(openapi::document)))
        .service(resource("/docs", "GET, HEAD").route(get().to(openapi::docs)))
        // The aggregate routes first (see `aggregate_path`).
        .service(
            resource("/v1/{aggregate}/{id}/commands", "POST")
                .guard(guard::fn_guard(aggregate_path))
                .route(post().to(aggregates::post_command)),
        )
        .service(
            resource("/v1/{aggregate}/{id}/events", "GET, HEAD")
                .guard(guard::fn_guard(aggregate_path))
                .route(get().to(aggregates::get_history)),
        )
        .service(
            resource("/v1/{aggregate}/{id}", "GET, HEAD")
                .guard(guard::fn_guard(aggregate_path))
                .route(get().to(aggregates::get_state)),
        )
        .service(resource("/v1/events", "GET, HEAD").route(get().to(log::global_log)))
        .service(resource("/v1/events/live", "GET, HEAD").route(get().to(log::live)))
        .service(resource("/v1/projections", "GET, HEAD").route(get().to(read::projections)))
        .service(resource("/v1/projections/{name}/rebuild", "POST").route(post().to(read::rebuild)))
        .service(
            resource("/v1/projections/{name}/parked", "GET, HEAD").route(get().to(read::parked)),
        )
        .service(
            resource("/v1/projections/{name}/parked/{position}/retry", "POST")
                .route(post().to(read::retry_parked)),
        )
        .service(
            resource("/v1/views/customers/{id}", "GET, HEAD")
                .route(get().to(read::customer_summary)),
        )
        .service(
            resource("/v1/views/customers/{id}/orders", "GET, HEAD")
                .route(get().to(read::customer_orders)),
        )
        .service(
            resource("/v1/views/valuable-customers", "GET, HEAD")
                .route(get().to(read::valuable_customers)),
        )
        .default_service(web::to(not_found));
}

/// The first path segments under `/v1/` that are not aggregate types.
const RESERVED: [&str; 3] = ["events", "projections", "views"];

/// Whether the request's first segment after `/v1/` may name an aggregate type: the aggregate
/// routes are matched first (they carry nearly all the traffic), and the fixed routes whose
/// paths they would also match are reached through this guard.
fn aggregate_path(ctx: &guard::GuardContext<'_>) -> bool {
    ctx.head()
        .uri
        .path()
        .strip_prefix("/v1/")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|segment| !RESERVED.contains(&segment))
}

/// A resource whose other methods answer 405 as a problem, with `Allow: {allow}`.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        let problem = Problem::new(
            Kind::MethodNotAllowed,
            format!(
                "{} is not allowed on {}; allowed: {allow}",
                req.method(),
                req.path()
            ),
        );
        let mut response = problem.error_response();
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        response
    }))
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error, _| {
        Problem::bad_request(format!("invalid query string: {error}")).into()
    })
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|error, _| Problem::bad_request(format!("invalid path: {error}")).into())
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, Problem> {
    Err(Problem::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
