//! actionhub-loadgen: the project's load generator, a black-box client of the hub.
//!
//! It opens real WebSocket connections (customer subscribers, firehose subscribers and
//! publishers), publishes valid webchat lifecycle events up a ladder of rates, and prints
//! one JSON line per step: publish and delivery rates, loss, order violations,
//! publish-to-deliver latency, and (with `--server-pid`) the server's CPU and memory.
//! `--check` turns it into a test: a non-zero exit when anything was lost, refused or out
//! of order.
//!
//! Code map:
//! - `cli`: flags; `run`: set-up and the step loop; `report`: the JSON lines and `--check`.
//! - `target`: the protocol seam; `hub`: actionhub's protocol behind it; `nats`: the NATS
//!   client protocol over WebSocket, for a side-by-side run against nats-server.
//! - `publisher`, `subscriber`: the connection tasks; `connect`: opening connections.
//! - `workload`: customers, the events published and the deliveries each must cause.
//! - `probe`: the server's CPU time and RSS from /proc.
//! - `soak`: `actionhub-loadgen soak`, the long run with storms and restarts against a
//!   hub it starts itself (its own map is in `soak/mod.rs`).
//!
//! Invariants: only `hub` and `nats` (each a `Target`) know a server's frames; it connects only to
//! the `--addr` addresses (the soak: only to the hub it started on 127.0.0.1); every wait has a limit, so
//! the process always ends by itself.

mod cli;
mod connect;
mod hub;
mod nats;
mod probe;
mod publisher;
mod report;
mod run;
mod soak;
mod subscriber;
mod target;
mod workload;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use crate::cli::{Args, Mode, TargetKind};
use crate::workload::Customers;

/// Exit status when `--check` found a problem (2 is a run that could not be made at all).
const CHECK_FAILED: u8 = 1;
const RUN_FAILED: u8 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    match run_to_end(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("actionhub-loadgen: {e:#}");
            ExitCode::from(RUN_FAILED)
        }
    }
}

fn run_to_end(args: &Args) -> anyhow::Result<ExitCode> {
    if let Some(Mode::Soak(soak)) = &args.mode {
        return soak::main(soak);
    }
    args.validate()?;
    let connections = args.connections();
    let fd_limit = connect::raise_fd_limit()?;
    // Every connection is one descriptor; leave a little for stdio, the runtime and /proc.
    let needed = connections as u64 + 64;
    if fd_limit < needed {
        bail!(
            "{connections} connections need about {needed} open files, but the limit is \
             {fd_limit}: raise the hard limit (ulimit -Hn) or use fewer connections"
        );
    }
    if args
        .addr
        .iter()
        .any(|&addr| connect::too_many_for_one_source(connections, addr))
    {
        eprintln!(
            "actionhub-loadgen: warning: {connections} connections from one source address \
             may exhaust ephemeral ports; source addresses are spread only for an IPv4 \
             loopback --addr"
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let customers = Arc::new(Customers::new(
        args.customers,
        args.subscribers,
        args.firehose,
    ));
    let budget = run::time_budget(args);
    let outcome = runtime.block_on(async {
        let ladder = async {
            match args.target {
                TargetKind::Hub => {
                    let hub = hub::Hub::new(Arc::clone(&customers), args.api_key.clone());
                    run::run(args, Arc::new(hub), customers).await
                }
                TargetKind::Nats => {
                    let nats = nats::Nats::new(Arc::clone(&customers));
                    run::run(args, Arc::new(nats), customers).await
                }
            }
        };
        tokio::time::timeout(budget, ladder)
            .await
            .with_context(|| format!("gave up: the run took longer than {budget:?}"))?
    });
    // Connection tasks are still reading; they are dropped, not awaited.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let steps = outcome?;

    if !args.check {
        return Ok(ExitCode::SUCCESS);
    }
    let problems: Vec<String> = steps.iter().flat_map(report::problems).collect();
    if problems.is_empty() {
        eprintln!("actionhub-loadgen: check passed ({} steps)", steps.len());
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("actionhub-loadgen: check failed:");
    for problem in &problems {
        eprintln!("  {problem}");
    }
    Ok(ExitCode::from(CHECK_FAILED))
}
