//! The hub process the soak runs: started on 127.0.0.1 with its own data directory,
//! SIGKILLed and restarted on the same directory and port, and killed when the soak ends
//! (also when it ends early: dropping the handle kills the process).
//!
//! Its pid is written to `<run-dir>/hub.pid` while it runs, so a wrapper script can stop
//! it by pid should this process itself be killed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How often readiness is polled while the hub starts.
const READY_POLL: Duration = Duration::from_millis(50);

/// How much of the hub's log an error quotes.
const LOG_TAIL_BYTES: u64 = 2048;

/// One hub binary, its command line, and the process running it (if any).
#[derive(Debug)]
pub(crate) struct HubServer {
    bin: PathBuf,
    args: Vec<String>,
    addr: SocketAddr,
    /// The hub's stdout and stderr, appended across restarts.
    log: PathBuf,
    pid_file: PathBuf,
    child: Option<Child>,
}

impl HubServer {
    pub(crate) fn new(
        bin: PathBuf,
        args: Vec<String>,
        addr: SocketAddr,
        log: PathBuf,
        pid_file: PathBuf,
    ) -> Self {
        HubServer {
            bin,
            args,
            addr,
            log,
            pid_file,
            child: None,
        }
    }

    /// Starts the hub and waits (at most `limit`) until `/readyz` answers 200.
    pub(crate) async fn start(&mut self, limit: Duration) -> anyhow::Result<u32> {
        anyhow::ensure!(self.child.is_none(), "the hub is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let pid = child.id();
        self.child = Some(child);
        std::fs::write(&self.pid_file, format!("{pid}\n"))
            .with_context(|| format!("writing {}", self.pid_file.display()))?;
        self.wait_ready(limit).await?;
        Ok(pid)
    }

    /// SIGKILLs the hub (by its pid) and reaps it; nothing when it is not running.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // `Child::kill` is SIGKILL on Unix; an already exited child is not an error here.
        let _ = child.kill();
        child.wait().context("reaping the killed hub")?;
        let _ = std::fs::remove_file(&self.pid_file);
        Ok(())
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "the hub exited ({status}) while starting; {}",
                        self.log_tail()
                    );
                }
            }
            if ready(self.addr).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the hub was not ready on {} within {limit:?}; {}",
                    self.addr,
                    self.log_tail()
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// The end of the hub's log, for an error message.
    fn log_tail(&self) -> String {
        let read = || -> std::io::Result<String> {
            let mut file = File::open(&self.log)?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
            let mut tail = String::new();
            file.read_to_string(&mut tail)?;
            Ok(tail)
        };
        match read() {
            Ok(tail) => format!("the end of {}:\n{tail}", self.log.display()),
            Err(e) => format!("its log {} is unreadable: {e}", self.log.display()),
        }
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("actionhub-loadgen soak: {e:#}");
        }
    }
}

/// Whether `GET /readyz` answers 200 (one short HTTP/1.1 exchange, each step bounded).
async fn ready(addr: SocketAddr) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(&head == b"HTTP/1.1 200")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), exchange).await,
        Ok(Ok(true))
    )
}

/// A port on 127.0.0.1 that is free now (the kernel's choice for port 0).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}
