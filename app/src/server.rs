//! `annals serve`: the HTTP service with an embedded store, and [`Server`], the same server
//! started from a program or a test.
//!
//! Start-up order: the configuration is loaded and validated first (a mistake exits with code
//! 2 before any port is bound); then the listener binds and the store is opened and recovered
//! on its own thread, so `/livez` answers at once and `/readyz` says 503 until the store is
//! open. Shutdown (SIGTERM, SIGINT, or [`Server::stop`]): live feeds end, the listener stops
//! accepting, requests in flight finish (up to `server.shutdown_timeout_ms`), then the runtime
//! shuts down: subscribers stop after their page, commands in flight complete, the journal is
//! drained and flushed. Every command that received a 200 is durable before its reply, so
//! nothing acknowledged depends on this order; it only avoids refusing work needlessly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::{middleware::from_fn, web, App, HttpServer};
use annals::{Runtime, RuntimeError};
use annals_config::{Config, Flag, LogFormat, Sources};
use anyhow::Context as _;

use crate::http::{self, AppState};
use crate::UsageError;

/// Arguments of `annals serve` and `annals config`: where the configuration comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// A TOML configuration file (every key is documented in config/annals.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The address to listen on (server.addr); port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// The data directory (store.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Sets any key, such as `--set store.durability=relaxed`; repeatable, applied last.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
}

impl ServeArgs {
    /// The configuration sources: the file, the process's `ANNALS_*` environment, the flags.
    pub fn sources(&self) -> Result<Sources, UsageError> {
        let mut flags = Vec::new();
        if let Some(addr) = &self.addr {
            flags.push(flag("server.addr", addr.clone(), "--addr"));
        }
        if let Some(dir) = &self.data_dir {
            flags.push(flag(
                "store.data_dir",
                dir.display().to_string(),
                "--data-dir",
            ));
        }
        for setting in &self.set {
            let (key, value) = setting.split_once('=').ok_or_else(|| {
                UsageError(format!("--set {setting:?}: expected SECTION.KEY=VALUE"))
            })?;
            flags.push(flag(key.trim(), value.to_owned(), "--set"));
        }
        let mut sources = Sources::default();
        sources.file.clone_from(&self.config);
        sources.env = annals_config::environment();
        sources.flags = flags;
        Ok(sources)
    }

    /// The validated configuration.
    pub fn load(&self) -> Result<Config, UsageError> {
        Config::load(&self.sources()?).map_err(|e| UsageError(format!("configuration: {e}")))
    }
}

fn flag(key: &str, value: String, name: &str) -> Flag {
    Flag {
        key: key.to_owned(),
        value,
        name: name.to_owned(),
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
            data_dir = %config.store.data_dir.display(),
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

/// Opens the runtime the configuration describes, with the reference domain registered.
pub fn open_runtime(config: &Config) -> Result<Runtime, String> {
    let runtime = Runtime::open(config.runtime_options()).map_err(|e| e.to_string())?;
    let registered = (|| -> Result<(), String> {
        let options = annals_domain::DomainOptions::default()
            .with_decision_timeout(config.domain.decision_timeout);
        annals_domain::register(&runtime, &options).map_err(|e| format!("{e:#}"))?;
        runtime
            .register::<annals_domain::bank::Account>()
            .map_err(|e: RuntimeError| e.to_string())
    })();
    if let Err(why) = registered {
        let _ = futures::executor::block_on(runtime.shutdown());
        return Err(why);
    }
    Ok(runtime)
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
                .configure(http::routes)
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
                let result = open_runtime(&opening_state.config);
                match &result {
                    Ok(runtime) => {
                        tracing::info!(
                            took_ms = started.elapsed().as_millis(),
                            head_position = runtime.head_position().0,
                            "store opened and recovered"
                        );
                        opening_state.set_runtime(runtime.clone());
                    }
                    Err(why) => {
                        tracing::error!(error = %why, "the store could not be opened");
                        opening_state.set_open_failure(why.clone());
                    }
                }
                let _ = tx.send(Some(result.map(|_| ())));
            })
            .context("cannot start the thread that opens the store")?;
        Ok(Server {
            addr,
            state,
            handle,
            task,
            opening: Some(opening),
            opened,
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
            Some(Err(why)) => Err(anyhow::anyhow!("cannot open the store: {why}")),
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
        self.state.try_runtime().cloned()
    }

    /// The handlers' shared state.
    pub fn state(&self) -> &web::Data<AppState> {
        &self.state
    }

    /// Stops gracefully: live feeds end, no new connections, requests in flight finish, then
    /// the runtime shuts down (journal drained and flushed).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.state.begin_stopping();
        self.handle.stop(true).await;
        let _ = (&mut self.task).await;
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
