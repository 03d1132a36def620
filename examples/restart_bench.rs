//! Times a restart with many actions in state (docs/benchmarks.md, "Durability").
//!
//! ```sh
//! cargo run --release --example restart_bench -- fill  /tmp/rb 1000000          # clean stop
//! cargo run --release --example restart_bench -- fill  /tmp/rb 1000000 --crash  # no final snapshot
//! cargo run --release --example restart_bench -- start /tmp/rb                   # time to ready
//! cargo run --release --example restart_bench -- fill  /tmp/rc 1000000 --no-snapshot
//! ```
//!
//! `FSYNC=always|interval|never` picks the fsync policy (default interval); `RETENTION=N`
//! keeps only the last N events of history (default 2,000,000: the whole fill), so that the
//! resident memory `start` reports is mostly the state.
//!
//! `fill` runs a hub in this process on a new data directory and publishes that many
//! actions (one `offered` event each, ten actions per customer, so a tenth as many session
//! starts), 1,000 events per publish, with a snapshot due half way through (none with
//! `--no-snapshot`); it reports the ingest rate and the slowest publish (which includes
//! any pause the snapshot causes).
//! Then it stops cleanly (a final snapshot), or with `--crash` exits on the spot, leaving
//! the log to replay. `start` times `server::start` (recovery included) until the hub
//! answers, which is when `/readyz` can first answer.

use std::time::{Duration, Instant};

use actionhub::ingest::event::Event;
use actionhub::Config;
use serde_json::json;

/// The hub binary's allocator, so that the memory figures are the hub's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn config(dir: &str, events: u64, snapshots: bool) -> Config {
    let mut config = Config::ephemeral(dir);
    config.snapshot_interval = Duration::from_secs(3600);
    config.snapshot_every_events = match snapshots {
        true => (events / 2).max(1),
        false => u64::MAX,
    };
    // `--fsync` for the fill, e.g. `FSYNC=always`.
    config.fsync = match std::env::var("FSYNC").as_deref() {
        Ok("always") => actionhub::config::FsyncPolicy::Always,
        Ok("never") => actionhub::config::FsyncPolicy::Never,
        _ => actionhub::config::FsyncPolicy::Interval,
    };
    // The whole fill stays replayable; the default (1,000,000) would do as well.
    // `RETENTION=N` keeps only the last N events, so that `start`'s memory figure is
    // mostly the state: the per-action cost DESIGN.md bounds.
    config.retention_events = std::env::var("RETENTION")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000_000);
    config
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["fill", dir, n, rest @ ..] => {
            let snapshots = !rest.contains(&"--no-snapshot");
            fill(dir, n.parse()?, rest.contains(&"--crash"), snapshots).await
        }
        ["start", dir] => start(dir).await,
        _ => anyhow::bail!("usage: restart_bench fill DIR ACTIONS [--crash] | start DIR"),
    }
}

async fn fill(dir: &str, actions: u64, crash: bool, snapshots: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        !std::path::Path::new(dir).exists(),
        "{dir} exists; fill wants a new directory"
    );
    let running = actionhub::server::start(config(dir, actions + actions / 10, snapshots)).await?;
    let hub = running.hub().clone();
    let map = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut batch = Vec::with_capacity(1000);
    let (mut customer, mut session) = (String::new(), String::new());
    for i in 0..actions {
        if i % 10 == 0 {
            customer = uuid::Uuid::new_v4().to_string();
            session = uuid::Uuid::new_v4().to_string();
        }
        batch.push(Event::from_json(json!({
            "actionId": uuid::Uuid::new_v4().to_string(), "actionState": "offered",
            "actionMediaType": "webchat", "actionMapId": map, "actionMapVersion": 1,
            "customerId": customer, "sessionId": session,
            "data": {"campaign": "spring", "slot": i % 7},
        })));
        if batch.len() == 1000 || i + 1 == actions {
            let sent = Instant::now();
            for result in hub.publish(std::mem::take(&mut batch)).await {
                result.map_err(|e| anyhow::anyhow!("refused: {}", e.message))?;
            }
            slowest = slowest.max(sent.elapsed());
        }
    }
    let took = started.elapsed();
    println!(
        "filled {actions} actions ({} events) in {:.2} s: {:.0} events/s, slowest publish of 1000: {:.1} ms",
        hub.latest_seq().0,
        took.as_secs_f64(),
        hub.latest_seq().0 as f64 / took.as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    if crash {
        println!("exiting without a clean stop");
        std::process::exit(0);
    }
    let stopping = Instant::now();
    running.shutdown().await?;
    println!(
        "clean stop (drain + final snapshot) took {:.2} s",
        stopping.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn start(dir: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let running = actionhub::server::start(config(dir, 1_000_000, true)).await?;
    let ready = started.elapsed();
    let actions = running.hub().state().action_count();
    println!(
        "ready after {:.2} s with {actions} actions, seq {}",
        ready.as_secs_f64(),
        running.hub().latest_seq().0
    );
    if let Some(rss) = resident_bytes() {
        println!(
            "resident memory {:.0} MiB: {:.0} bytes per action, everything included",
            rss as f64 / (1024.0 * 1024.0),
            rss as f64 / actions.max(1) as f64
        );
    }
    running.shutdown().await?;
    Ok(())
}

/// This process's resident memory, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
