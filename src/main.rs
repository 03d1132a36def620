//! The `actionhub` binary: parse configuration, start logging, serve until a signal (or,
//! with `--print-config`, print the configuration and exit). `actionhub tail ...` runs
//! the stream reader of [`actionhub::tail`] instead.

use actionhub::config::{ConfigError, Invocation};

// Ingest is allocation-heavy (a parsed JSON tree per publish): glibc's malloc and free took
// about a fifth of the hub's CPU under load. See docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("tail") {
        return actionhub::tail::main(args.skip(1));
    }
    let invocation = match Invocation::from_process() {
        Ok(invocation) => invocation,
        // Help, version and usage errors are printed, and exit, the way clap does.
        Err(ConfigError::Args(e)) => e.exit(),
        Err(e) => return Err(e.into()),
    };
    if invocation.print_config {
        print!("{}", invocation.config.to_toml());
        return Ok(());
    }
    let config = invocation.config;
    let node = config
        .is_clustered()
        .then(|| config.node(config.listen.port()));
    actionhub::logging::init(config.log_format, node);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(actionhub::server::run(config, shutdown_signal()))?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
