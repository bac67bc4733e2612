//! The HTTP API: shared state, the route table ([`ROUTES`]), and the handlers by area.
//!
//! | module | routes |
//! |---|---|
//! | [`access`] | who may call which route (tokens, scopes), and each request's deadline |
//! | [`aggregates`] | `POST /v1/{aggregate}/{id}/commands`, `GET /v1/{aggregate}/{id}`, `GET /v1/{aggregate}/{id}/events` |
//! | [`log`] | `GET /v1/events` (the global log, paged), `GET /v1/events/live` (Server-Sent Events) |
//! | [`read`] | `/v1/projections…` (status, rebuild, parked events) and `/v1/views/…` (read models) |
//! | [`ops`] | `GET /livez`, `GET /readyz`, `GET /metrics` |
//! | [`openapi`] | `GET /openapi.json`, `GET /docs` |
//! | [`console`] | `GET /console` (the web console and its assets), `GET /v1/console/overview`, `GET /v1/console/aggregates/{aggregate}` |
//!
//! The server binds before the store is open: while recovery runs, `/livez` answers and
//! everything else answers 503 with `Retry-After`, so an orchestrator can tell "starting" from
//! "dead". Every error is a [`problem::Problem`] (RFC 9457).
//!
//! Store reads (state, history, log pages, views) run on actix's blocking thread pool, at most
//! `server.reads_in_flight_max` at once ([`AppState::read`]; 503 beyond), so a slow read never
//! stalls the HTTP workers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{guard, web, HttpRequest, HttpResponse, ResponseError};
use annals::store::PgStore;
use annals::Runtime;
use annals_config::Config;
use parking_lot::{Mutex, RwLock};

pub mod access;
pub mod aggregates;
pub mod console;
pub mod json;
pub mod log;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod problem;
pub mod read;

use access::Access;
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
    /// Open live feeds (bounded in total and per client address).
    pub live_feeds: Arc<FeedSlots>,
    /// Store reads running on the blocking pool (bounded by `server.reads_in_flight_max`).
    reads: Arc<tokio::sync::Semaphore>,
    /// Held while a rebuild (or a parked retry, which may start one) is being started, so that
    /// counting the rebuilds running and starting one is one step.
    pub(crate) rebuild_start: tokio::sync::Mutex<()>,
    /// The runtime: `None` while the store is being opened, or reopened after its journal
    /// failed (see `server.rs`).
    runtime: RwLock<Option<Runtime>>,
    /// The PostgreSQL store under the runtime, when that is the backend (for `/metrics`).
    postgres: RwLock<Option<PgStore>>,
    open_failure: Mutex<Option<String>>,
    /// Set while the store is being reopened after a journal failure.
    reopening: AtomicBool,
    /// Bumped when the runtime is taken out to be reopened: live feeds of the old one end
    /// (their clients resume with `Last-Event-ID` on the new one).
    epoch: tokio::sync::watch::Sender<u64>,
    stopping: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// State for `config`, serving the reference domain; the runtime comes later.
    pub fn new(config: Arc<Config>) -> AppState {
        let server = &config.server;
        let in_flight = Gauge::new(server.in_flight_max.get());
        let live_feeds = Arc::new(FeedSlots::new(
            server.sse_connections_max.get(),
            server.sse_connections_per_client_max.get(),
        ));
        let reads = Arc::new(tokio::sync::Semaphore::new(
            server.reads_in_flight_max.get(),
        ));
        let aggregates = Aggregates::domain();
        let metrics = Metrics::new(&aggregates);
        AppState {
            config,
            aggregates,
            metrics,
            in_flight,
            live_feeds,
            reads,
            rebuild_start: tokio::sync::Mutex::new(()),
            runtime: RwLock::new(None),
            postgres: RwLock::new(None),
            open_failure: Mutex::new(None),
            reopening: AtomicBool::new(false),
            epoch: tokio::sync::watch::channel(0).0,
            stopping: tokio::sync::watch::channel(false).0,
        }
    }

    /// The runtime, or 503 while the store is being opened (or could not be). Why it could
    /// not be opened (a path, the engine's error) is in the log, not in the answer.
    pub fn runtime(&self) -> Result<Runtime, Problem> {
        self.try_runtime().ok_or_else(|| {
            if self.reopening.load(Ordering::Acquire) {
                Problem::overloaded(
                    Kind::Unavailable,
                    "the store is being reopened after its journal failed",
                    Duration::from_secs(1),
                )
            } else if self.open_failure.lock().is_some() {
                Problem::overloaded(
                    Kind::Unavailable,
                    "the store could not be opened (the server log says why)",
                    Duration::from_secs(5),
                )
            } else {
                Problem::overloaded(
                    Kind::Unavailable,
                    "the store is being opened and recovered",
                    Duration::from_secs(1),
                )
            }
        })
    }

    /// Runs `read` (a store read and its rendering) on the blocking pool, so that it cannot
    /// stall an HTTP worker. At most `server.reads_in_flight_max` run at once: beyond that,
    /// 503 with `Retry-After`. A read whose request is abandoned (its client gone, its deadline
    /// passed) keeps its unit until it ends, so the bound counts what really runs.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> Result<T, Problem> + Send + 'static,
    ) -> Result<T, Problem> {
        let permit = Arc::clone(&self.reads).try_acquire_owned().map_err(|_| {
            Problem::overloaded(
                Kind::Unavailable,
                format!(
                    "{} store reads are running, the configured limit \
                     (server.reads_in_flight_max)",
                    self.config.server.reads_in_flight_max
                ),
                self.config.runtime.retry_after,
            )
        })?;
        Self::run_blocking(permit, read).await
    }

    /// [`AppState::read`], waiting for a unit instead of refusing: for the pages of a live
    /// feed that is already open (it waits as it would for a slow client).
    pub async fn read_queued<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> Result<T, Problem> + Send + 'static,
    ) -> Result<T, Problem> {
        let permit = Arc::clone(&self.reads)
            .acquire_owned()
            .await
            .map_err(|_| Problem::unavailable("the server is stopping", Duration::from_secs(1)))?;
        Self::run_blocking(permit, read).await
    }

    async fn run_blocking<T: Send + 'static>(
        permit: tokio::sync::OwnedSemaphorePermit,
        read: impl FnOnce() -> Result<T, Problem> + Send + 'static,
    ) -> Result<T, Problem> {
        web::block(move || {
            let _permit = permit;
            read()
        })
        .await
        .map_err(|e| Problem::internal(format!("the blocking pool could not run a read: {e}")))?
    }

    /// The runtime, if open.
    pub fn try_runtime(&self) -> Option<Runtime> {
        self.runtime.read().clone()
    }

    /// Makes the runtime available to the handlers (again, after a reopen).
    pub fn set_runtime(&self, runtime: Runtime) {
        self.set_runtime_on(runtime, None);
    }

    /// [`AppState::set_runtime`] for a runtime on `postgres`, the PostgreSQL store it was
    /// started over (`None` for another backend).
    pub fn set_runtime_on(&self, runtime: Runtime, postgres: Option<PgStore>) {
        *self.postgres.write() = postgres;
        *self.runtime.write() = Some(runtime);
        *self.open_failure.lock() = None;
        self.reopening.store(false, Ordering::Release);
    }

    /// The PostgreSQL store under the runtime, when that is the backend and it is open.
    pub fn postgres_store(&self) -> Option<PgStore> {
        self.postgres.read().clone()
    }

    /// Takes the runtime out to reopen its store: handlers answer 503 meanwhile, and live
    /// feeds of this runtime end.
    pub fn take_runtime_for_reopen(&self) -> Option<Runtime> {
        self.reopening.store(true, Ordering::Release);
        *self.postgres.write() = None;
        let taken = self.runtime.write().take();
        self.epoch.send_modify(|n| *n += 1);
        taken
    }

    /// Whether the store is being reopened after a journal failure.
    pub fn is_reopening(&self) -> bool {
        self.reopening.load(Ordering::Acquire)
    }

    /// A watch that changes when the runtime is taken out to be reopened.
    pub fn epoch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epoch.subscribe()
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

/// The live feeds open, bounded in total (`server.sse_connections_max`, 503 beyond) and per
/// client address (`server.sse_connections_per_client_max`, 429 beyond). A client address is
/// the peer's IP: behind a proxy every client is the proxy's.
#[derive(Debug)]
pub struct FeedSlots {
    total_max: usize,
    per_client_max: usize,
    open: Mutex<FeedCounts>,
}

#[derive(Debug, Default)]
struct FeedCounts {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Why a live feed was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedRefusal {
    /// This client address holds `server.sse_connections_per_client_max` feeds.
    PerClient(usize),
    /// `server.sse_connections_max` feeds are open.
    Total(usize),
}

/// One open live feed, released when dropped (when the feed's response ends, or its client
/// disconnects).
#[derive(Debug)]
pub struct FeedSlot {
    slots: Arc<FeedSlots>,
    client: Option<IpAddr>,
}

impl FeedSlots {
    fn new(total_max: usize, per_client_max: usize) -> FeedSlots {
        FeedSlots {
            total_max,
            per_client_max,
            open: Mutex::new(FeedCounts::default()),
        }
    }

    /// Takes a slot for a feed of `client` (`None`: its address is unknown; only the total
    /// bounds it).
    pub fn enter(self: &Arc<Self>, client: Option<IpAddr>) -> Result<FeedSlot, FeedRefusal> {
        let mut open = self.open.lock();
        if let Some(ip) = client {
            if open.by_client.get(&ip).copied().unwrap_or(0) >= self.per_client_max {
                return Err(FeedRefusal::PerClient(self.per_client_max));
            }
        }
        if open.total >= self.total_max {
            return Err(FeedRefusal::Total(self.total_max));
        }
        open.total += 1;
        if let Some(ip) = client {
            *open.by_client.entry(ip).or_default() += 1;
        }
        Ok(FeedSlot {
            slots: Arc::clone(self),
            client,
        })
    }

    /// Feeds open.
    pub fn current(&self) -> usize {
        self.open.lock().total
    }
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.client {
            if let Some(n) = open.by_client.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.by_client.remove(&ip);
                }
            }
        }
    }
}

/// The methods of a route. A `GET` route answers `HEAD` too (actix sends no body for HEAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET` and `HEAD`.
    Get,
    /// `POST`.
    Post,
}

impl Method {
    /// The `Allow` header of the route's 405 answers.
    pub fn allow(self) -> &'static str {
        match self {
            Method::Get => "GET, HEAD",
            Method::Post => "POST",
        }
    }

    /// The method's name in lower case, as OpenAPI writes it (`get`).
    pub fn openapi(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
        }
    }
}

/// One route of the API: its path pattern, its method, who may call it, and its handler.
#[derive(Debug)]
pub struct Route {
    /// The path pattern (`/v1/{aggregate}/{id}`).
    pub pattern: &'static str,
    /// The method.
    pub method: Method,
    /// Who may call it. Required: a route cannot be declared without an access level.
    pub access: Access,
    /// Adds the handler (and any guard) to the route's resource.
    add: fn(actix_web::Resource) -> actix_web::Resource,
}

fn get() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

fn post() -> actix_web::Route {
    web::post()
}

/// Every route. This table is the only place routes are registered ([`routes`]), so every
/// route has an [`Access`]; the API description is checked against it
/// (`tests/tests/openapi.rs`), and the access tests walk it (`tests/tests/http_hostile.rs`).
/// The routes under [`AGGREGATE_PREFIX`] are registered once per aggregate type served, in a
/// scope of its own (`/v1/customers`, `/v1/orders`…): every path segment the router matches is
/// static but the ids, and the handler finds its aggregate type in the scope's data
/// ([`Served`]).
pub static ROUTES: &[Route] = &[
    Route {
        pattern: "/livez",
        method: Method::Get,
        access: Access::Open,
        add: |r| r.route(get().to(ops::livez)),
    },
    Route {
        pattern: "/readyz",
        method: Method::Get,
        access: Access::Open,
        add: |r| r.route(get().to(ops::readyz)),
    },
    Route {
        pattern: "/metrics",
        method: Method::Get,
        access: Access::ADMIN,
        add: |r| r.route(get().to(ops::metrics)),
    },
    Route {
        pattern: "/openapi.json",
        method: Method::Get,
        access: Access::Open,
        add: |r| r.route(get().to(openapi::document)),
    },
    Route {
        pattern: "/docs",
        method: Method::Get,
        access: Access::Open,
        add: |r| r.route(get().to(openapi::docs)),
    },
    Route {
        pattern: "/v1/{aggregate}/{id}/commands",
        method: Method::Post,
        access: Access::COMMANDS,
        add: |r| r.route(post().to(aggregates::post_command)),
    },
    Route {
        pattern: "/v1/{aggregate}/{id}/events",
        method: Method::Get,
        access: Access::READ,
        add: |r| r.route(get().to(aggregates::get_history)),
    },
    Route {
        pattern: "/v1/{aggregate}/{id}",
        method: Method::Get,
        access: Access::READ,
        add: |r| r.route(get().to(aggregates::get_state)),
    },
    Route {
        pattern: "/console",
        method: Method::Get,
        access: Access::Open,
        add: |r| r.route(get().to(console::page)),
    },
    Route {
        pattern: "/console/console.js",
        method: Method::Get,
        access: Access::Open,
        add: |r| r.route(get().to(console::script)),
    },
    Route {
        pattern: "/console/console.css",
        method: Method::Get,
        access: Access::Open,
        add: |r| r.route(get().to(console::style)),
    },
    Route {
        pattern: "/v1/console/overview",
        method: Method::Get,
        access: Access::READ,
        add: |r| r.route(get().to(console::overview)),
    },
    Route {
        pattern: "/v1/console/chain/{event_id}",
        method: Method::Get,
        access: Access::READ,
        add: |r| r.route(get().to(console::chain)),
    },
    Route {
        pattern: "/v1/console/aggregates/{aggregate}",
        method: Method::Get,
        access: Access::READ,
        add: |r| r.route(get().to(console::aggregate_ids)),
    },
    Route {
        pattern: "/v1/events",
        method: Method::Get,
        access: Access::READ,
        add: |r| r.route(get().to(log::global_log)),
    },
    Route {
        pattern: "/v1/events/live",
        method: Method::Get,
        access: Access::READ,
        add: |r| r.route(get().to(log::live)),
    },
    Route {
        pattern: "/v1/projections",
        method: Method::Get,
        access: Access::READ,
        add: |r| r.route(get().to(read::projections)),
    },
    Route {
        pattern: "/v1/projections/{name}/rebuild",
        method: Method::Post,
        access: Access::ADMIN,
        add: |r| r.route(post().to(read::rebuild)),
    },
    Route {
        pattern: "/v1/projections/{name}/parked",
        method: Method::Get,
        access: Access::READ,
        add: |r| r.route(get().to(read::parked)),
    },
    Route {
        pattern: "/v1/projections/{name}/parked/{position}/retry",
        method: Method::Post,
        access: Access::ADMIN,
        add: |r| r.route(post().to(read::retry_parked)),
    },
    Route {
        pattern: "/v1/views/customers/{id}",
        method: Method::Get,
        access: Access::READ,
        add: |r| r.route(get().to(read::customer_summary)),
    },
    Route {
        pattern: "/v1/views/customers/{id}/orders",
        method: Method::Get,
        access: Access::READ,
        add: |r| r.route(get().to(read::customer_orders)),
    },
    Route {
        pattern: "/v1/views/valuable-customers",
        method: Method::Get,
        access: Access::READ,
        add: |r| r.route(get().to(read::valuable_customers)),
    },
];

/// The prefix of the per-aggregate routes of [`ROUTES`]: `{aggregate}` stands for the route
/// name of each aggregate type served ([`ApiAggregate::route`](aggregates::ApiAggregate::route)).
pub const AGGREGATE_PREFIX: &str = "/v1/{aggregate}";

/// The aggregate type a per-aggregate scope serves (the scope's data, for its handlers).
#[derive(Clone)]
pub struct Served(pub Arc<dyn aggregates::ApiAggregate>);

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Served").field(&self.0.route()).finish()
    }
}

/// Registers every route of [`ROUTES`] on `config`, each behind its access level
/// ([`access::guarded`]): the fixed ones once, the per-aggregate ones in a scope for each of
/// `aggregates`; and the answer to paths no route matches.
pub fn routes(config: &mut web::ServiceConfig, aggregates: &Aggregates) {
    config.app_data(query_config()).app_data(path_config());
    // The aggregate scopes first: the router tries services in registration order, and a
    // fixed route with a parameter costs a regex match to rule out, so the command path
    // (most of the traffic) meets one static prefix per aggregate type and one regex. No fixed
    // route lies under an aggregate's scope (`Aggregates::add` refuses such a route name).
    for api in aggregates.iter() {
        let mut scope = web::scope(&format!("/v1/{}", api.route()))
            .app_data(web::Data::new(Served(Arc::clone(api))))
            .default_service(web::to(not_found));
        for route in ROUTES {
            if let Some(pattern) = route.pattern.strip_prefix(AGGREGATE_PREFIX) {
                let resource = (route.add)(resource(pattern, route.method.allow()));
                scope = scope.service(access::guarded(resource, route.access));
            }
        }
        config.service(scope);
    }
    for route in ROUTES {
        if !route.pattern.starts_with(AGGREGATE_PREFIX) {
            let resource = (route.add)(resource(route.pattern, route.method.allow()));
            config.service(access::guarded(resource, route.access));
        }
    }
    config.default_service(web::to(not_found));
}

/// A resource whose other methods answer 405 as a problem, with `Allow: {allow}`.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        let problem = Problem::new(
            Kind::MethodNotAllowed,
            format!(
                "{} is not allowed on this route; allowed: {allow}",
                req.method()
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

/// A path no route matches: 404 — to a valid token only, when the server has tokens (deny by
/// default: the route table cannot be probed without one).
async fn not_found(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    access::admit(&state.config.auth, req.headers(), Access::Token)?;
    Err(Problem::not_found(format!(
        "no route for {} {:?}",
        req.method(),
        req.path()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_and_the_description_are_open() {
        let open: Vec<&str> = ROUTES
            .iter()
            .filter(|r| r.access == Access::Open)
            .map(|r| r.pattern)
            .collect();
        assert_eq!(
            open,
            [
                "/livez",
                "/readyz",
                "/openapi.json",
                "/docs",
                "/console",
                "/console/console.js",
                "/console/console.css"
            ]
        );
        for route in ROUTES {
            assert!(
                route.access != Access::Token,
                "{}: a route needs a scope or is open",
                route.pattern
            );
        }
    }

    #[test]
    fn each_pattern_is_declared_once() {
        let mut patterns: Vec<&str> = ROUTES.iter().map(|r| r.pattern).collect();
        patterns.sort_unstable();
        patterns.dedup();
        assert_eq!(patterns.len(), ROUTES.len());
    }
}
