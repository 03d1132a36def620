//! Server lifecycle: bind, serve, shut down.
//!
//! [`start`] binds, builds the hub and serves in the background, so tests start a real hub
//! on port 0 and stop it with [`Running::shutdown`]; [`run`] is the same for `main`, with
//! the shutdown signal passed in. Shutdown stops accepting, tells every connection to
//! close with 1001, waits for them under a deadline, then drains the pipeline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::clock::now_millis;
use crate::config::{Config, ConfigError};
use crate::edge::app::App;
use crate::edge::sinks::Sinks;
use crate::hub::Hub;
use crate::ids::Seq;
use crate::store::log::{is_disk_full, Log};
use crate::store::recovery::{self, RecoveryError};
use crate::store::snapshot;

/// Why a hub could not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// A webhook sink's file or definition, naming it.
    #[error("webhook sinks: {0}")]
    Sinks(String),
    #[error("a server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// An IO error's context, for `map_err`.
fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Io { what, source }
}

/// How long shutdown waits for connections to finish their closing handshake.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// A hub serving on a bound address, stopped with [`Running::shutdown`].
pub struct Running {
    addr: SocketAddr,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

/// Binds `config.listen` (port 0 picks a free port) and serves in a background task.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    start_with_log(config, |log| log).await
}

/// [`start`], with the recovered log handed to `wrap` first: the seam a test uses to slow
/// the log down or watch what reaches it.
pub async fn start_with_log(
    config: Config,
    wrap: impl FnOnce(Box<dyn Log>) -> Box<dyn Log>,
) -> Result<Running, ServerError> {
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(io("reading the bound address"))?;
    if config.is_clustered() {
        let (hub, pipeline, node) = crate::cluster::start(Arc::new(config), addr.port()).await?;
        let shared = node.sinks();
        if let Err(e) = crate::edge::sinks::shared::check_config(&shared, hub.config()).await {
            hub.close_pipeline();
            node.stop().await;
            return Err(ServerError::Sinks(e));
        }
        return serve(
            listener,
            hub,
            pipeline,
            Stopping::Cluster(node),
            Some(shared),
        );
    }
    let data_dir = config.data_dir.clone();
    let (restored, wal, prepared) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let (restored, mut wal) = recovery::recover(&config)?;
            // Try the log's first writes now, so a full disk is known before anyone
            // publishes: the hub then starts read-only instead of refusing to start.
            let prepared = wal.prepare();
            Ok::<_, RecoveryError>((restored, wal, prepared))
        })
        .await??
    };
    let read_only = match prepared {
        Ok(()) => None,
        Err(e) if is_disk_full(&e) => Some(e),
        Err(e) => return Err(io("preparing the write-ahead log")(e)),
    };
    let restored_snapshot = restored.snapshot_seq;
    let (hub, pipeline) = Hub::start_restored(Arc::new(config), wrap(Box::new(wal)), restored);
    if let Some(e) = read_only {
        hub.log_full_or_abort("starting the log", e);
    }
    // Bounded: one stop message; the snapshot thread polls it between snapshots.
    let (stop_snapshots, stop_rx) = std::sync::mpsc::sync_channel(1);
    let snapshotter = {
        let (hub, data_dir) = (hub.clone(), data_dir.clone());
        let last = restored_snapshot;
        std::thread::Builder::new()
            .name("actionhub-snapshot".into())
            .spawn(move || snapshot::run(hub, data_dir, stop_rx, last))
            .map_err(io("starting the snapshot thread"))?
    };
    let stopping = Stopping::Local {
        stop_snapshots,
        snapshotter,
        data_dir,
    };
    serve(listener, hub, pipeline, stopping, None)
}

/// What stops after the connections have closed, besides the pipeline.
enum Stopping {
    /// One node: the snapshot thread, then a final snapshot.
    Local {
        stop_snapshots: std::sync::mpsc::SyncSender<()>,
        snapshotter: std::thread::JoinHandle<Seq>,
        data_dir: std::path::PathBuf,
    },
    /// A cluster node: its proposer, lease and applier.
    Cluster(crate::cluster::Node),
}

/// Starts the webhook sinks and serves `hub` on `listener` in a background task until
/// shutdown, then stops what `stopping` names and the pipeline.
fn serve(
    listener: tokio::net::TcpListener,
    hub: Arc<Hub>,
    pipeline: crate::hub::Pipeline,
    stopping: Stopping,
    shared_sinks: Option<Arc<crate::cluster::sinks::SharedSinks>>,
) -> Result<Running, ServerError> {
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    // The sinks' tasks are tracked like connections, so shutdown waits for them too.
    let sinks = match Sinks::start(hub.clone(), shutdown.clone(), tracker.clone(), shared_sinks) {
        Ok(sinks) => sinks,
        Err(e) => {
            hub.close_pipeline();
            return Err(ServerError::Sinks(e));
        }
    };
    let ctx = App::new(hub.clone(), shutdown.clone(), tracker.clone(), sinks);
    let app = crate::edge::http::router(ctx);
    // In a cluster the lease holder's ticks come through the stream instead.
    if matches!(stopping, Stopping::Local { .. }) {
        tracker.spawn(sweep(hub.clone(), shutdown.clone()));
    }
    match hub.node() {
        Some(node) => info!(%addr, %node, epoch = %hub.epoch(), "actionhub listening"),
        None => info!(%addr, epoch = %hub.epoch(), "actionhub listening"),
    }
    if hub.config().is_open_mode() {
        warn!("open development mode: no API keys or JWT secrets are configured, so anyone who can reach {addr} may publish and subscribe");
    } else {
        let config = &hub.config();
        info!(
            api_keys = config.api_keys.len(),
            jwt_secrets = config.jwt_secrets.len(),
            allowed_origins = config.allowed_origins.len(),
            "credentials configured"
        );
    }
    let task = {
        let (hub, shutdown) = (hub.clone(), shutdown.clone());
        tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            // Frames leave as soon as they are written: the outbox already coalesces them,
            // and Nagle's algorithm against a delayed ACK would hold some back ~40 ms.
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY not set");
                }
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await
                .map_err(io("serving HTTP"))?;
            tracker.close();
            if tokio::time::timeout(DRAIN_DEADLINE, tracker.wait())
                .await
                .is_err()
            {
                warn!("some connections did not close within the drain deadline");
            }
            let local = match stopping {
                Stopping::Local {
                    stop_snapshots,
                    snapshotter,
                    data_dir,
                } => Some((stop_snapshots, snapshotter, data_dir)),
                Stopping::Cluster(node) => {
                    node.stop().await;
                    None
                }
            };
            hub.close_pipeline();
            let final_hub = hub.clone();
            tokio::task::spawn_blocking(move || {
                pipeline.join();
                let Some((stop_snapshots, snapshotter, data_dir)) = local else {
                    return;
                };
                let _ = stop_snapshots.send(());
                let last = snapshotter.join().unwrap_or_default();
                // A final snapshot, so the next start replays nothing. Without it the next
                // start replays the log, which the pipeline has flushed: a warning, not an
                // unclean stop.
                if final_hub.latest_seq() > last || last == Seq(0) || final_hub.has_forgotten() {
                    if let Err(e) = snapshot::take_and_prune(&final_hub, &data_dir) {
                        final_hub.metrics().snapshot_failures.inc();
                        warn!(error = %e, "the final snapshot failed; the next start replays the log");
                    }
                }
            })
            .await?;
            info!("actionhub stopped");
            Ok(())
        })
    };
    Ok(Running {
        addr,
        hub,
        shutdown,
        task,
    })
}

/// Serves until `signal` completes, then shuts down gracefully.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> Result<(), ServerError> {
    // Poll the signal once before starting, so its handlers are installed before recovery
    // and before the "listening" line: a SIGTERM from then on means a clean stop, never
    // the default action (being killed without a final snapshot).
    let mut signal = std::pin::pin!(signal);
    let early = futures_util::FutureExt::now_or_never(signal.as_mut()).is_some();
    raise_open_files_limit(config.max_connections);
    let running = start(config).await?;
    if !early {
        signal.await;
    }
    info!("shutting down");
    running.shutdown().await
}

/// Descriptors the hub holds besides its WebSocket connections: the listener, HTTP
/// requests, the log's segments and the snapshot being written, the sinks' outbound
/// sockets, cluster mode's NATS connection and the runtime's own.
const FILES_MARGIN: u64 = 256;

/// Raises the open-files soft limit to the hard limit, because every connection is a
/// descriptor and the usual default soft limit (1024) is far below `max_connections`; a
/// hub at its limit would fail accepts, not refuse them with 503. Warns when even the
/// hard limit cannot fit `max_connections` and [`FILES_MARGIN`]. Only `run` calls it:
/// the process's limit is the binary's business, not a test's that starts a hub inside.
fn raise_open_files_limit(max_connections: usize) {
    let needed = max_connections as u64 + FILES_MARGIN;
    let (soft, hard) = match rlimit::increase_nofile_limit(u64::MAX)
        .and_then(|soft| Ok((soft, rlimit::Resource::NOFILE.get()?.1)))
    {
        Ok(limits) => limits,
        Err(e) => {
            warn!(error = %e, "cannot read or raise the open-files limit");
            return;
        }
    };
    if soft < needed {
        warn!(
            open_files = soft,
            hard_limit = hard,
            max_connections,
            needed,
            "the open-files limit cannot fit max_connections: raise the hard limit \
             (LimitNOFILE= in the systemd unit, or ulimit -Hn) or lower max_connections"
        );
    } else {
        info!(open_files = soft, max_connections, "open-files limit");
    }
}

/// Ticks the hub with the clock's time, until shutdown: each tick ends idle sessions and
/// ages out history, actions and idle customers (see [`Hub::sweep_at`]). The time is read
/// here, at the edge, and passed in like any input's.
async fn sweep(hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(hub.sweep_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                // The sweep's work is chunked under the sequencer lock, but all of it is
                // CPU; it runs beside the async workers, not on them.
                let hub = hub.clone();
                let now = now_millis();
                let _ = tokio::task::spawn_blocking(move || hub.sweep_at(now)).await;
            }
        }
    }
}

impl Running {
    /// The address the hub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The running hub, for in-process tools and tests.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Graceful shutdown: closes connections with 1001 and waits for the server to stop.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        self.task.await?
    }
}
