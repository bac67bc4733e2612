//! `annals serve`: the HTTP service on the store the configuration names — the embedded sled
//! store (the default) or PostgreSQL (`--set store.backend=postgres --set
//! store.postgres_url=…`) — and [`Server`], the same server started from a program or a test.
//!
//! Start-up order: the configuration is loaded and validated first (a mistake exits with code
//! 2 before any port is bound); then the listener binds and the store is opened and recovered
//! on its own thread, so `/livez` answers at once and `/readyz` says 503 until the store is
//! open. Shutdown (SIGTERM, SIGINT, or [`Server::stop`]): live feeds end, the listener stops
//! accepting, requests in flight finish (up to `server.shutdown_timeout_ms`), then the runtime
//! shuts down: subscribers stop after their page, commands in flight complete, the journal is
//! drained and flushed. Every command that received a 200 is durable before its reply, so
//! nothing acknowledged depends on this order; it only avoids refusing work needlessly.
//!
//! A **supervisor** task watches the journal while the server runs: a journal that failed (a
//! write or fsync error, most often a full disk) refuses writes until its store is opened
//! again, so once the data directory's disk has room the supervisor reopens the store in the
//! same process (see `supervise`); meanwhile commands get 503 with `Retry-After` and
//! `/readyz` says why. On PostgreSQL, a failed health is a database that does not answer,
//! which passes by itself once it answers again: nothing is reopened.
//!
//! Opening fails with one line naming the store and why — a refused connection, a wrong
//! password or database (PostgreSQL's own message), a schema written by a newer build — and
//! `annals serve` exits 1; the URL in it has its password replaced by `***`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::{middleware::from_fn, web, App, HttpServer};
use annals::store::{BatchObserver, EventStore, PgStore};
use annals::{Runtime, RuntimeError};
use annals_config::flags::UsageError;
use annals_config::{Config, Flag, LogFormat, Sources, StoreBackend};
use anyhow::Context as _;

use crate::cli::ConfigArgs;
use crate::http::{self, AppState};

/// Arguments of `annals serve` and `annals config`: where the configuration comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// `--config`, `--data-dir`, `--set`.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The address to listen on (server.addr); port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
}

impl ServeArgs {
    /// The configuration sources: the file, the process's `ANNALS_*` environment, the flags.
    ///
    /// # Errors
    /// A [`UsageError`] for a malformed `--set`.
    pub fn sources(&self) -> Result<Sources, UsageError> {
        self.config.sources(self.addr_flag())
    }

    /// The validated configuration.
    ///
    /// # Errors
    /// A [`UsageError`] for a malformed `--set` or any mistake the configuration has.
    pub fn load(&self) -> Result<Config, UsageError> {
        self.config.load(self.addr_flag())
    }

    fn addr_flag(&self) -> Vec<Flag> {
        let addr = self.addr.as_ref();
        addr.map(|addr| Flag::new("server.addr", addr.clone(), "--addr"))
            .into_iter()
            .collect()
    }
}

/// Where the configured store is, for messages and logs: the data directory, or the
/// PostgreSQL schema and the URL with its password replaced by `***`.
pub fn describe_store(config: &Config) -> String {
    let store = &config.store;
    match store.backend {
        StoreBackend::Postgres => format!(
            "PostgreSQL schema {} at {}",
            store.postgres_schema,
            store
                .postgres_url
                .as_ref()
                .map_or_else(|| "(no store.postgres_url)".to_owned(), ToString::to_string)
        ),
        _ => format!("{} (sled)", store.data_dir.display()),
    }
}

/// `annals config`: prints the effective configuration, secrets redacted.
pub fn print_config(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    print!("{}", config.render());
    Ok(ExitCode::SUCCESS)
}

/// Installs the global tracing subscriber (text or JSON lines on stderr). Only the first call
/// of a process has an effect.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        _ => builder.try_init(),
    };
}

/// `annals serve`: runs until SIGTERM or SIGINT, then stops gracefully and exits 0.
pub fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    init_logging(&config);
    actix_rt::System::new().block_on(async move {
        let server = Server::start(config.clone()).await?;
        tracing::info!(
            addr = %server.addr(),
            store = %describe_store(&config),
            "annals listening on http://{}", server.addr()
        );
        let signal = wait_for_signal();
        futures::pin_mut!(signal);
        tokio::select! {
            opened = server.ready() => {
                if let Err(error) = opened {
                    server.stop().await.ok();
                    return Err(error);
                }
                let head = server.runtime().map(|r| r.head_position().0);
                tracing::info!(head_position = head, "store open: ready");
            }
            signal_name = &mut signal => {
                tracing::info!(signal = signal_name, "stopping before the store was open");
                server.stop().await?;
                return Ok(ExitCode::SUCCESS);
            }
        }
        let signal_name = signal.await;
        tracing::info!(
            signal = signal_name,
            "stopping: finishing requests in flight"
        );
        let started = Instant::now();
        server.stop().await?;
        tracing::info!(took_ms = started.elapsed().as_millis(), "stopped");
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// A runtime opened from the configuration.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The runtime, with the reference domain registered.
    pub runtime: Runtime,
    /// The PostgreSQL store under it, when that is the backend: `/metrics` shows its pool.
    pub postgres: Option<PgStore>,
}

/// Opens the runtime the configuration describes (on the configured backend), with the
/// reference domain registered. The error is one line naming the store and why.
pub fn open_runtime(config: &Config, observer: Option<BatchObserver>) -> Result<Opened, String> {
    let mut options = config.runtime_options();
    if let Some(observer) = observer {
        options.store = options.store.with_batch_observer(observer);
    }
    // One line: PostgreSQL's detail may span several.
    let cannot_open = |e: &dyn std::fmt::Display| {
        format!("cannot open the store ({}): {e}", describe_store(config)).replace('\n', " ")
    };
    let opened = match options.store.postgres() {
        Some(pg) => {
            let store = PgStore::open(pg.clone()).map_err(|e| cannot_open(&e))?;
            match Runtime::with_stores(store.clone().into_stores(), options) {
                Ok(runtime) => Opened {
                    runtime,
                    postgres: Some(store),
                },
                Err(e) => {
                    let _ = store.shutdown();
                    return Err(cannot_open(&e));
                }
            }
        }
        None => Opened {
            runtime: Runtime::open(options).map_err(|e| cannot_open(&e))?,
            postgres: None,
        },
    };
    let runtime = &opened.runtime;
    let registered = (|| -> Result<(), String> {
        let options = annals_domain::DomainOptions::default()
            .with_decision_timeout(config.domain.decision_timeout);
        annals_domain::register(runtime, &options).map_err(|e| format!("{e:#}"))?;
        crate::causation::register(runtime, &annals_domain::SAGA_AGGREGATE_TYPES)
            .map_err(|e| format!("cannot register the causation index: {e}"))?;
        runtime
            .register::<annals_domain::bank::Account>()
            .map_err(|e: RuntimeError| e.to_string())
    })();
    if let Err(why) = registered {
        shut_down_blocking(&opened.runtime);
        return Err(why);
    }
    Ok(opened)
}

/// Shuts a runtime down from a thread that runs no executor. Not with
/// `futures::executor::block_on`: the PostgreSQL store's own blocking calls cannot run inside
/// it.
fn shut_down_blocking(runtime: &Runtime) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(executor) => {
            if let Err(e) = executor.block_on(runtime.shutdown()) {
                tracing::warn!(error = %e, "the runtime did not shut down cleanly");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot start an executor to shut the runtime down"),
    }
}

/// A running server. Needs an actix system (`actix_rt::System`, `#[actix_rt::test]`).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    state: web::Data<AppState>,
    handle: actix_web::dev::ServerHandle,
    task: actix_rt::task::JoinHandle<std::io::Result<()>>,
    opening: Option<JoinHandle<()>>,
    opened: tokio::sync::watch::Receiver<Option<Result<(), String>>>,
    supervisor: Option<actix_rt::task::JoinHandle<()>>,
}

impl Server {
    /// Binds `config.server.addr` and starts serving; the store opens in the background (see
    /// [`Server::ready`]).
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let config = Arc::new(config);
        let state = web::Data::new(AppState::new(Arc::clone(&config)));
        let app_state = state.clone();
        let server_config = &config.server;
        let http = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .wrap(from_fn(http::middleware::observe))
                .configure(|config| http::routes(config, &app_state.aggregates))
        })
        .workers(server_config.workers.get())
        .max_connections(server_config.connections_max.get())
        .client_request_timeout(server_config.request_timeout)
        // A client that closes its side of the connection is gone: the dispatcher shuts the
        // connection down at once, dropping a streaming response (a live feed frees its slot
        // now, not at its next keep-alive write). A client that half-closes and still waits
        // for its answer does not get one.
        .h1_allow_half_closed(false)
        .shutdown_timeout(server_config.shutdown_timeout.as_secs().max(1))
        .disable_signals()
        .bind(server_config.addr)
        .with_context(|| format!("cannot listen on {}", server_config.addr))?;
        let addr = http
            .addrs()
            .first()
            .copied()
            .context("the listener has no address")?;
        let running = http.run();
        let handle = running.handle();
        let task = actix_rt::spawn(running);
        let (tx, opened) = tokio::sync::watch::channel(None);
        let opening_state = state.clone();
        let opening = std::thread::Builder::new()
            .name("annals-open".into())
            .spawn(move || {
                let started = Instant::now();
                let result = open_runtime(
                    &opening_state.config,
                    Some(opening_state.metrics.batch_observer()),
                );
                match &result {
                    Ok(opened) => {
                        tracing::info!(
                            took_ms = started.elapsed().as_millis(),
                            head_position = opened.runtime.head_position().0,
                            "store opened and recovered"
                        );
                        opening_state
                            .set_runtime_on(opened.runtime.clone(), opened.postgres.clone());
                    }
                    Err(why) => {
                        tracing::error!(error = %why, "the store could not be opened");
                        opening_state.set_open_failure(why.clone());
                    }
                }
                let _ = tx.send(Some(result.map(|_| ())));
            })
            .context("cannot start the thread that opens the store")?;
        let supervisor = actix_rt::spawn(supervise(state.clone()));
        Ok(Server {
            addr,
            state,
            handle,
            task,
            opening: Some(opening),
            opened,
            supervisor: Some(supervisor),
        })
    }

    /// [`Server::start`], then [`Server::ready`].
    pub async fn start_ready(config: Config) -> anyhow::Result<Server> {
        let server = Server::start(config).await?;
        if let Err(error) = server.ready().await {
            server.stop().await.ok();
            return Err(error);
        }
        Ok(server)
    }

    /// Waits until the store is open; an error if it could not be opened.
    pub async fn ready(&self) -> anyhow::Result<()> {
        let mut opened = self.opened.clone();
        let result = opened
            .wait_for(Option::is_some)
            .await
            .map(|r| r.clone())
            .map_err(|_| anyhow::anyhow!("the store-opening thread ended without a result"))?;
        match result {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(anyhow::anyhow!(why)),
            None => Err(anyhow::anyhow!("the store is not open")),
        }
    }

    /// The address listened on (with the port chosen for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The runtime, once the store is open.
    pub fn runtime(&self) -> Option<Runtime> {
        self.state.try_runtime()
    }

    /// The handlers' shared state.
    pub fn state(&self) -> &web::Data<AppState> {
        &self.state
    }

    /// Stops gracefully: live feeds end, no new connections, requests in flight finish, then
    /// the runtime shuts down (journal drained and flushed).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.state.begin_stopping();
        // Aggregate actors that requests activated run on the HTTP workers' threads: move them
        // off before the workers stop, so a command one of them is running for another worker
        // (or a process manager) is answered, not cut off with its thread.
        if let Some(runtime) = self.state.try_runtime() {
            runtime.release_callers().await;
        }
        self.handle.stop(true).await;
        let _ = (&mut self.task).await;
        if let Some(supervisor) = self.supervisor.take() {
            // It ends at `stopping`, shutting down a store it was reopening.
            let _ = supervisor.await;
        }
        if let Some(opening) = self.opening.take() {
            // Wait for an open in progress, so its store is shut down, not abandoned.
            while !opening.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = opening.join();
        }
        if let Some(runtime) = self.state.try_runtime() {
            runtime
                .shutdown()
                .await
                .context("the runtime did not shut down cleanly")?;
        }
        Ok(())
    }
}

/// How often the supervisor looks at the journal's health.
const SUPERVISE_INTERVAL: Duration = Duration::from_secs(1);
/// Free bytes the data directory's disk needs (or `store.disk_free_bytes_min`, if more) before
/// a store whose journal failed is reopened: recovery writes, and a disk that is still full
/// would fail it again.
const REOPEN_FREE_BYTES_MIN: u64 = 16 * 1024 * 1024;
/// The longest pause between attempts to reopen.
const REOPEN_PAUSE_MAX: Duration = Duration::from_secs(10);

/// Watches the journal and brings the service back by itself after a failure whose cause has
/// passed. A failed journal refuses every write until its store is opened again (after a failed
/// write or fsync, nothing it holds in memory can be trusted); the usual cause is a full disk.
/// Once the data directory's disk has room again, the supervisor takes the runtime out
/// (handlers answer 503 with `Retry-After`, `/readyz` says "reopening", live feeds end and
/// their clients resume with `Last-Event-ID`), shuts it down, and opens the store again —
/// recovery, then the same checks as at start — until that succeeds or the server stops.
async fn supervise(state: web::Data<AppState>) {
    let mut stopping = state.stopping();
    let mut waiting_for_room = false;
    loop {
        tokio::select! {
            _ = stopping.changed() => return,
            () = tokio::time::sleep(SUPERVISE_INTERVAL) => {}
        }
        if *stopping.borrow() {
            return;
        }
        // A PostgreSQL store that fails its health check is a database that does not answer:
        // the store sees it answer again by itself, and reopening would not help.
        if state.config.store.backend != StoreBackend::Sled {
            continue;
        }
        let Some(runtime) = state.try_runtime() else {
            continue;
        };
        let annals::store::StoreHealth::Failed(reason) = runtime.health() else {
            waiting_for_room = false;
            continue;
        };
        let store = &state.config.store;
        let needed = store.disk_free_bytes_min.max(REOPEN_FREE_BYTES_MIN);
        let free = http::ops::disk_free_bytes(&store.data_dir).unwrap_or(0);
        if free < needed {
            if !waiting_for_room {
                tracing::warn!(reason = ?reason.to_string(), free, needed, "the journal failed; the store is reopened once the disk has room");
                waiting_for_room = true;
            }
            continue;
        }
        waiting_for_room = false;
        tracing::warn!(reason = ?reason.to_string(), "the journal failed; reopening the store");
        drop(runtime);
        reopen(&state, &mut stopping).await;
    }
}

/// Takes the failed runtime out, shuts it down, and opens the store again until that works or
/// the server stops (see [`supervise`]).
async fn reopen(state: &web::Data<AppState>, stopping: &mut tokio::sync::watch::Receiver<bool>) {
    if let Some(old) = state.take_runtime_for_reopen() {
        if let Err(e) = old.shutdown().await {
            tracing::info!(error = ?e.to_string(), "the failed runtime shut down");
        }
    }
    let mut pause = SUPERVISE_INTERVAL;
    loop {
        let config = Arc::clone(&state.config);
        let observer = state.metrics.batch_observer();
        let (tx, rx) = futures::channel::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("annals-reopen".into())
            .spawn(move || {
                let _ = tx.send(open_runtime(&config, Some(observer)));
            });
        let opened = match spawned {
            Ok(_) => rx
                .await
                .unwrap_or_else(|_| Err("the reopening thread ended without a result".into())),
            Err(e) => Err(format!("cannot start a thread to reopen the store: {e}")),
        };
        match opened {
            Ok(opened) if *stopping.borrow() => {
                let _ = opened.runtime.shutdown().await;
                return;
            }
            Ok(opened) => {
                tracing::info!(
                    head_position = opened.runtime.head_position().0,
                    "store reopened"
                );
                state.set_runtime_on(opened.runtime, opened.postgres);
                return;
            }
            // The old runtime's last handles (requests that were in flight) may still hold
            // the directory; or the disk filled again. Try again.
            Err(why) => tracing::warn!(error = ?why, ?pause, "cannot reopen the store yet"),
        }
        tokio::select! {
            _ = stopping.changed() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(REOPEN_PAUSE_MAX);
    }
}
