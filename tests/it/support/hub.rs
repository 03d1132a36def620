//! A hub in this process, on a loopback port 0 and a data directory of its own.

use std::net::SocketAddr;

use actionhub::Config;
use serde_json::Value;

use super::frames::assert_type;
use super::{bounded, Client, Http, SHUTDOWN_WAIT, WAIT};

/// A running hub with its own data directory, which lives as long as the hub (and across
/// [`Hub::restart`]).
pub(crate) struct Hub {
    running: Option<actionhub::server::Running>,
    addr: SocketAddr,
    /// Kept so a restart runs the same configuration on the same data.
    config: Config,
    data_dir: tempfile::TempDir,
}

impl Hub {
    /// A hub with the default (ephemeral) configuration.
    pub(crate) async fn start() -> Hub {
        Hub::start_with(|_| {}).await
    }

    /// A hub whose configuration `tweak` adjusts first.
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut Config)) -> Hub {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::ephemeral(data_dir.path());
        tweak(&mut config);
        Hub::launch(config, data_dir).await
    }

    /// A hub on `data_dir` (made where a test needs it, such as on a small file system).
    pub(crate) async fn start_in(
        data_dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut Config),
    ) -> Hub {
        let mut config = Config::ephemeral(data_dir.path());
        tweak(&mut config);
        Hub::launch(config, data_dir).await
    }

    async fn launch(config: Config, data_dir: tempfile::TempDir) -> Hub {
        let starting = actionhub::server::start(config.clone());
        let running = bounded(WAIT, "the hub to start", starting)
            .await
            .expect("hub starts");
        let addr = running.addr();
        assert!(addr.ip().is_loopback(), "tests bind loopback only: {addr}");
        Hub {
            running: Some(running),
            addr,
            config,
            data_dir,
        }
    }

    /// Shuts down gracefully and starts again on the same data directory (on a new port).
    pub(crate) async fn restart(mut self) -> Hub {
        self.stop().await;
        Hub::launch(self.config, self.data_dir).await
    }

    /// Shuts down gracefully, removes the snapshots, and starts again on the same data
    /// directory: the state comes back from the log alone.
    pub(crate) async fn restart_from_log(mut self) -> Hub {
        self.stop().await;
        std::fs::remove_dir_all(self.data_dir.path().join("snapshots")).expect("snapshots");
        Hub::launch(self.config, self.data_dir).await
    }

    /// Graceful shutdown, bounded.
    pub(crate) async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        let running = self.running.take().expect("hub still running");
        bounded(SHUTDOWN_WAIT, "the hub to shut down", running.shutdown())
            .await
            .expect("hub shuts down cleanly");
    }

    /// The hub's data directory.
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A WebSocket that has completed `connect`.
    pub(crate) async fn client(&self) -> Client {
        Client::connected_to(self.addr, None).await
    }

    /// A WebSocket that sent `connect` with `fields` (such as `apiKey` or `token`), which
    /// the hub must have answered `connected`.
    pub(crate) async fn client_with(&self, fields: Value) -> Client {
        let mut client = self.raw_client().await;
        let reply = client.connect_with(fields).await;
        assert_type(&reply, "connected");
        client
    }

    /// A WebSocket right after the upgrade, before any frame.
    pub(crate) async fn raw_client(&self) -> Client {
        Client::open(self.addr, &[], None).await
    }

    pub(crate) fn http(&self) -> Http {
        Http::new(self.addr)
    }

    /// A WebSocket opened with extra upgrade `headers`, before any frame; a refused
    /// handshake is `Err((status, body))`.
    pub(crate) async fn client_with_headers(
        &self,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, String)> {
        Client::try_open(self.addr, headers).await
    }

    /// An HTTP client that sends `headers` (such as `X-API-Key`) on every request.
    pub(crate) fn http_with(&self, headers: &[(&str, &str)]) -> Http {
        Http::with_headers(self.addr, headers)
    }
}
