//! Server lifecycle: bind, serve, shut down. (Stub; the real one lands with the core.)

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// A hub serving on a bound address, stopped with [`Running::shutdown`].
pub struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Binds `config.listen` (port 0 picks a free port) and serves in a background task.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        token.cancelled().await;
        drop(listener);
        Ok(())
    });
    Ok(Running { addr, shutdown, task })
}

impl Running {
    /// The address the hub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Graceful shutdown: closes connections with 1001 and waits for the server to stop.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }
}
