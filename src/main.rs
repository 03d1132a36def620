//! The `actionhub` binary: parse configuration, start logging, serve until a signal (or,
//! with `--print-config`, print the configuration and exit). `actionhub tail ...` runs
//! the stream reader of [`actionhub::tail`] instead.

use actionhub::config::{ConfigError, Invocation, LogFormat};

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
    init_tracing(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(actionhub::server::run(config, shutdown_signal()))?;
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal; log shippers get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
