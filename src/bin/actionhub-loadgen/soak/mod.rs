//! The soak: a long run against a hub this process starts itself, with reconnect storms
//! and SIGKILL + restart on a schedule (issue 11). It checks that every acknowledged event
//! reaches every subscriber of its customer (zero loss), that each subscriber's seqs
//! strictly rise (no reordering, no duplicate), that every resume is `recovered`, and that
//! the hub's RSS is flat once warm. A tool for a quiet machine, not part of CI.
//!
//! Code map: `server` starts, kills and restarts the hub binary; `clients` holds the
//! subscriber and publisher tasks and the shared counts; `ledger` the per-customer loss
//! check (pure); this file the schedule, the JSON lines and the verdict.
//!
//! Every wait has a limit, and the hub is killed by its pid however the soak ends.

mod clients;
mod ledger;
mod server;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use self::clients::{ClientSettings, Count, Shared};
use self::server::HubServer;
use crate::connect;
use crate::hub::Hub;
use crate::probe::ServerProbe;
use crate::workload::Customers;

/// How often the hub's RSS is sampled.
const RSS_EVERY: Duration = Duration::from_secs(10);

/// How often a progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(60);

/// The window at each end of the steady state whose RSS peaks are compared.
const RSS_WINDOW: Duration = Duration::from_secs(60);

/// Longest the hub may take to answer `/readyz` after a start or restart.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// After publishing stops: longest wait for the last deliveries to arrive.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// How often the schedule polls progress while it waits.
const POLL: Duration = Duration::from_millis(20);

/// Exit status of a run that completed and found a failure (2: it could not run).
const CHECK_FAILED: u8 = 1;

/// `actionhub-loadgen soak`: 10,000 subscribers, storms and SIGKILLs on a schedule,
/// zero loss and flat memory checked. One JSON line per minute and a summary on stdout.
#[derive(Debug, clap::Args)]
pub(crate) struct SoakArgs {
    /// The hub binary to run [default: `actionhub` beside this executable].
    #[arg(long)]
    hub_bin: Option<PathBuf>,

    /// A directory that does not exist yet, for the hub's data (`data/`), its log
    /// (`hub.log`) and its pid (`hub.pid`) [default: a new one in the temp directory].
    /// The data is removed after a passing run.
    #[arg(long)]
    run_dir: Option<PathBuf>,

    /// Port on 127.0.0.1 for the hub (0: one that is free at the start).
    #[arg(long, default_value_t = 0)]
    port: u16,

    /// The hub's `--fsync` policy.
    #[arg(long, value_enum, default_value_t = Fsync::Interval)]
    fsync: Fsync,

    /// The hub's `--retention-age`: history and ended actions older than this are
    /// dropped, which is what lets memory level off. Longer than any outage.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
    retention_age: Duration,

    /// One more flag for the hub, repeatable (e.g. `--hub-arg=--queue-capacity=16384`).
    #[arg(long = "hub-arg", allow_hyphen_values = true)]
    hub_args: Vec<String>,

    /// How long the soak publishes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
    duration: Duration,

    /// Subscriber connections, each following one customer (`where.customerId`).
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,

    /// Customers; the subscribers are dealt over them round-robin.
    #[arg(long, default_value_t = 1_000)]
    customers: usize,

    /// Publisher connections; each owns every `publishers`-th customer alone.
    #[arg(long, default_value_t = 4)]
    publishers: usize,

    /// Total publishes per second. Each causes subscribers/customers deliveries, so the
    /// default, 20,000 with 10 subscribers a customer, is about half of the hub's
    /// measured maximum fan-out (docs/benchmarks.md).
    #[arg(long, default_value_t = 20_000.0)]
    rate: f64,

    /// Most publishes one publisher has in flight.
    #[arg(long, default_value_t = 512)]
    window: usize,

    /// Every this often, every subscriber closes and resumes with `since` + `epoch`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    storm_every: Duration,

    /// Every this often, the hub is SIGKILLed and restarted on the same data and port.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    kill_every: Duration,

    /// Longest a connection keeps retrying to reconnect before it gives up (a failure).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    reconnect_timeout: Duration,

    /// Time limit for one connection attempt (TCP, handshake, connect, subscribe).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    connect_timeout: Duration,

    /// Connections opened at once (a storm reopens every subscriber).
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,

    /// RSS samples taken at least this long after a hub (re)start are steady state.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3m")]
    warmup: Duration,

    /// Most growth, in percent, of the RSS peak from the first to the last minute of
    /// steady state.
    #[arg(long, default_value_t = 25.0)]
    rss_tolerance: f64,

    /// Debug: subscribers ignore the Nth delivery of a published event (counted over
    /// all of them), as if the hub had skipped it. The soak must then report a loss.
    #[arg(long)]
    debug_drop_delivery: Option<u64>,

    /// Debug: the Nth delivery is handled twice, as if the hub had sent it twice. The
    /// soak must then report an order violation.
    #[arg(long)]
    debug_repeat_delivery: Option<u64>,
}

/// The hub's fsync policies, passed through as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Fsync {
    Always,
    Interval,
    Never,
}

impl Fsync {
    fn as_flag(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Interval => "interval",
            Fsync::Never => "never",
        }
    }
}

impl SoakArgs {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.customers >= 1, "--customers must be at least 1");
        anyhow::ensure!(
            (1..=self.customers).contains(&self.publishers),
            "--publishers must be between 1 and --customers (each owns its customers)"
        );
        anyhow::ensure!(
            self.subscribers >= self.customers,
            "--subscribers must be at least --customers, so every customer is followed"
        );
        anyhow::ensure!(
            self.rate.is_finite() && self.rate > 0.0,
            "--rate must be positive"
        );
        anyhow::ensure!(self.window >= 1, "--window must be at least 1");
        anyhow::ensure!(
            self.connect_concurrency >= 1,
            "--connect-concurrency must be at least 1"
        );
        for (flag, value) in [
            ("--duration", self.duration),
            ("--storm-every", self.storm_every),
            ("--kill-every", self.kill_every),
        ] {
            anyhow::ensure!(!value.is_zero(), "{flag} must be positive");
        }
        anyhow::ensure!(
            u32::try_from(self.customers).is_ok(),
            "--customers is too large"
        );
        Ok(())
    }
}

/// Runs the soak to its end; the exit code says whether it passed.
pub(crate) fn main(args: &SoakArgs) -> anyhow::Result<ExitCode> {
    args.validate()?;
    let fd_limit = connect::raise_fd_limit()?;
    let needed = (args.subscribers + args.publishers) as u64 + 64;
    if fd_limit < needed {
        bail!(
            "{needed} open files are needed, but the limit is {fd_limit}: raise the hard \
             limit (ulimit -Hn) or use fewer subscribers"
        );
    }
    let hub_bin = match &args.hub_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("finding this executable")?
            .with_file_name("actionhub"),
    };
    let run_dir = match &args.run_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("actionhub-soak-{}", std::process::id())),
    };
    std::fs::create_dir(&run_dir)
        .with_context(|| format!("creating the run directory {}", run_dir.display()))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(soak(args, hub_bin, run_dir.clone()));
    // Connection tasks still running are dropped, not awaited.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let problems = outcome?;
    if problems.is_empty() {
        let _ = std::fs::remove_dir_all(run_dir.join("data"));
        eprintln!("actionhub-loadgen soak: passed");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "actionhub-loadgen soak: failed (hub data and log kept in {}):",
        run_dir.display()
    );
    for problem in &problems {
        eprintln!("  {problem}");
    }
    Ok(ExitCode::from(CHECK_FAILED))
}

/// The whole soak; answers what failed (empty when it passed).
async fn soak(args: &SoakArgs, hub_bin: PathBuf, run_dir: PathBuf) -> anyhow::Result<Vec<String>> {
    let port = match args.port {
        0 => server::free_port()?,
        port => port,
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // A storm's new connections may be accepted while the old ones are still closing.
    let max_connections = (2 * (args.subscribers + args.publishers) + 100).to_string();
    let mut hub_args = vec![
        "--listen".to_owned(),
        addr.to_string(),
        "--data-dir".to_owned(),
        run_dir.join("data").display().to_string(),
        "--fsync".to_owned(),
        args.fsync.as_flag().to_owned(),
        "--retention-age".to_owned(),
        humantime::format_duration(args.retention_age).to_string(),
        "--max-connections".to_owned(),
        max_connections.clone(),
        "--max-connections-per-ip".to_owned(),
        max_connections,
    ];
    hub_args.extend(args.hub_args.iter().cloned());
    let mut server = HubServer::new(
        hub_bin,
        hub_args,
        addr,
        run_dir.join("hub.log"),
        run_dir.join("hub.pid"),
    );
    let pid = server.start(READY_LIMIT).await?;
    let hub_pid = Arc::new(AtomicU32::new(pid));

    let customers = Arc::new(Customers::new(args.customers, args.subscribers, 0));
    let settings = ClientSettings {
        connect_timeout: args.connect_timeout,
        reconnect_timeout: args.reconnect_timeout,
        window: args.window,
        rate_per_publisher: args.rate / args.publishers as f64,
        drop_delivery: args.debug_drop_delivery,
        repeat_delivery: args.debug_repeat_delivery,
    };
    let shared = Arc::new(Shared::new(
        Hub::new(Arc::clone(&customers), None),
        customers,
        addr,
        args.subscribers,
        settings,
        args.connect_concurrency,
    ));

    let setup_start = Instant::now();
    let (storm_tx, storm_rx) = watch::channel(0u64);
    let (stop_subscribers, stop_rx) = watch::channel(false);
    let subscribers: Vec<JoinHandle<()>> = (0..args.subscribers)
        .map(|i| {
            tokio::spawn(clients::subscriber(
                Arc::clone(&shared),
                i,
                storm_rx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let setup_limit = args.connect_timeout
        * (args.subscribers.div_ceil(args.connect_concurrency) as u32 + 2)
        + args.reconnect_timeout;
    if wait_resumed(&shared, 1, setup_limit).await.is_none() {
        bail!("not every subscriber was subscribed within {setup_limit:?}");
    }
    emit(&json!({
        "phase": "connected",
        "subscribers": args.subscribers,
        "customers": args.customers,
        "publishers": args.publishers,
        "rate": args.rate,
        "fsync": args.fsync.as_flag(),
        "retentionAge": humantime::format_duration(args.retention_age).to_string(),
        "connectSeconds": round3(setup_start.elapsed().as_secs_f64()),
        "hubPid": pid,
        "addr": addr.to_string(),
        "runDir": run_dir.display().to_string(),
    }))?;

    let (stop_publishers, stop_rx) = watch::channel(false);
    let map_id = Uuid::new_v4();
    let publishers: Vec<JoinHandle<()>> = (0..args.publishers)
        .map(|p| {
            tokio::spawn(clients::publisher(
                Arc::clone(&shared),
                p,
                args.publishers,
                map_id,
                stop_rx.clone(),
            ))
        })
        .collect();
    let run_start = Instant::now();
    let (stop_reporter, reporter_rx) = watch::channel(false);
    let reporter = tokio::spawn(report(
        Arc::clone(&shared),
        Arc::clone(&hub_pid),
        run_start,
        reporter_rx,
    ));

    let mut schedule = Schedule {
        args,
        shared: &shared,
        server: &mut server,
        hub_pid: &hub_pid,
        run_start,
        storm_tx,
        storm_seconds: Vec::new(),
        restarts: Vec::new(),
    };
    schedule.run().await?;
    let Schedule {
        storm_seconds,
        restarts,
        ..
    } = schedule;

    // The end: publishers stop and wait for their acks, then deliveries settle.
    let _ = stop_publishers.send(true);
    join_within(
        publishers,
        args.reconnect_timeout + args.connect_timeout * 2,
    )
    .await;
    let unacked = shared.in_flight.load(Ordering::Relaxed);
    let settle_start = Instant::now();
    while pending(&shared) > 0 && settle_start.elapsed() < SETTLE_LIMIT {
        tokio::time::sleep(POLL).await;
    }
    let _ = stop_subscribers.send(true);
    join_within(subscribers, Duration::from_secs(5)).await;
    for ledger in &shared.ledgers {
        let faults = ledger.lock().finish();
        shared.counters.add(Count::Lost, faults.lost);
        shared.counters.add(Count::Unexpected, faults.unexpected);
    }
    let _ = stop_reporter.send(true);
    let (samples, latency) = reporter.await.context("the reporter task failed")?;
    server.kill()?;

    let rss = rss_verdict(&samples, args.warmup);
    let mut line = counts_json(&shared);
    line.insert("phase".into(), json!("summary"));
    line.insert(
        "seconds".into(),
        json!(round3(run_start.elapsed().as_secs_f64())),
    );
    line.insert("unacked".into(), json!(unacked));
    line.insert("stormSecondsMax".into(), json!(max_of(&storm_seconds)));
    let ready: Vec<f64> = restarts.iter().map(|r| r.0).collect();
    let resumed: Vec<f64> = restarts.iter().map(|r| r.1).collect();
    line.insert("restartReadySecondsMax".into(), json!(max_of(&ready)));
    line.insert("restartResumedSecondsMax".into(), json!(max_of(&resumed)));
    insert_latency(&mut line, &latency);
    line.insert(
        "rssMaxKib".into(),
        json!(samples.iter().map(|s| s.kib).max()),
    );
    line.insert("rssSteadyFirstKib".into(), json!(rss.map(|r| r.first_kib)));
    line.insert("rssSteadyLastKib".into(), json!(rss.map(|r| r.last_kib)));
    line.insert(
        "rssGrowthPercent".into(),
        json!(rss.map(|r| round1(r.growth_percent))),
    );
    line.insert(
        "firstFailure".into(),
        json!(shared.first_failure.lock().clone()),
    );
    line.insert("runDir".into(), json!(run_dir.display().to_string()));

    let mut problems: Vec<String> = Count::ALL
        .iter()
        .filter(|c| c.is_failure())
        .filter_map(|&c| {
            let n = shared.counters.get(c);
            (n > 0).then(|| format!("{}: {n}", c.name()))
        })
        .collect();
    if unacked > 0 {
        problems.push(format!("unacked: {unacked}"));
    }
    if shared.counters.get(Count::Acks) == 0 {
        problems.push("no publish was acknowledged".to_owned());
    }
    if let Some(rss) = rss.filter(|r| r.growth_percent > args.rss_tolerance) {
        problems.push(format!(
            "RSS grew {:.1}% in steady state ({} -> {} KiB), more than {}%",
            rss.growth_percent, rss.first_kib, rss.last_kib, args.rss_tolerance
        ));
    }
    if let Some(first) = shared.first_failure.lock().as_ref() {
        problems.push(format!("first failure: {first}"));
    }
    line.insert("passed".into(), json!(problems.is_empty()));
    emit(&Value::Object(line))?;
    Ok(problems)
}

/// The storms and restarts, in time order, until the soak's duration is over.
struct Schedule<'a> {
    args: &'a SoakArgs,
    shared: &'a Arc<Shared>,
    server: &'a mut HubServer,
    hub_pid: &'a AtomicU32,
    run_start: Instant,
    storm_tx: watch::Sender<u64>,
    /// Per storm: seconds from the drop until every subscriber was back.
    storm_seconds: Vec<f64>,
    /// Per restart: seconds from the kill until the hub was ready, and until every
    /// subscriber had resumed.
    restarts: Vec<(f64, f64)>,
}

impl Schedule<'_> {
    async fn run(&mut self) -> anyhow::Result<()> {
        let end = self.run_start + self.args.duration;
        let mut next_storm = self.run_start + self.args.storm_every;
        let mut next_kill = self.run_start + self.args.kill_every;
        loop {
            let next = next_storm.min(next_kill);
            if next >= end {
                tokio::time::sleep_until(end).await;
                return Ok(());
            }
            tokio::time::sleep_until(next).await;
            // When both are due, the kill comes first and the storm right after it.
            if next_kill <= next_storm {
                self.restart().await?;
                next_kill += self.args.kill_every;
            } else {
                self.storm().await?;
                next_storm += self.args.storm_every;
            }
        }
    }

    /// Every subscriber drops its connection and resumes.
    async fn storm(&mut self) -> anyhow::Result<()> {
        let n = self.shared.disturbance.fetch_add(1, Ordering::SeqCst) + 1;
        let start = Instant::now();
        let _ = self.storm_tx.send(n);
        self.shared.counters.add(Count::Storms, 1);
        let seconds = self.wait_back(n).await;
        self.storm_seconds.extend(seconds);
        emit(&json!({
            "phase": "storm",
            "n": self.storm_seconds.len(),
            "atSeconds": round3((start - self.run_start).as_secs_f64()),
            "resumedSeconds": seconds.map(round3),
        }))
    }

    /// SIGKILL, restart on the same data and port, and wait for everyone to resume.
    async fn restart(&mut self) -> anyhow::Result<()> {
        let n = self.shared.disturbance.fetch_add(1, Ordering::SeqCst) + 1;
        let start = Instant::now();
        self.server.kill()?;
        let pid = self.server.start(READY_LIMIT).await?;
        self.hub_pid.store(pid, Ordering::Relaxed);
        let ready = start.elapsed().as_secs_f64();
        self.shared.counters.add(Count::Restarts, 1);
        // Subscribers retry while the hub recovers, so count from the kill.
        let resumed = self
            .wait_back(n)
            .await
            .map(|_| start.elapsed().as_secs_f64());
        if let Some(resumed) = resumed {
            self.restarts.push((ready, resumed));
        }
        emit(&json!({
            "phase": "restart",
            "n": self.shared.counters.get(Count::Restarts),
            "atSeconds": round3((start - self.run_start).as_secs_f64()),
            "hubPid": pid,
            "readySeconds": round3(ready),
            "resumedSeconds": resumed.map(round3),
        }))
    }

    /// Seconds until every subscriber has resumed after disturbance `n`, or `None`
    /// (counted as a failure) when they were not all back within the reconnect timeout.
    async fn wait_back(&self, n: u64) -> Option<f64> {
        let limit = self.args.reconnect_timeout + self.args.connect_timeout;
        let seconds = wait_resumed(self.shared, n + 1, limit).await;
        if seconds.is_none() {
            self.shared.counters.add(Count::IncompleteDisturbances, 1);
            self.shared.note(|| {
                format!("not every subscriber was back within {limit:?} of disturbance {n}")
            });
        }
        seconds
    }
}

/// Seconds until every subscriber's `resumed` mark reaches `mark` (or it gave up).
async fn wait_resumed(shared: &Shared, mark: u64, limit: Duration) -> Option<f64> {
    let start = Instant::now();
    loop {
        let behind = shared
            .resumed
            .iter()
            .any(|r| r.load(Ordering::SeqCst) < mark);
        if !behind {
            return Some(start.elapsed().as_secs_f64());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Deliveries not accounted for yet, over all customers.
fn pending(shared: &Shared) -> u64 {
    shared.ledgers.iter().map(|l| l.lock().pending()).sum()
}

/// Waits for the tasks, at most `limit` in all; the rest are aborted.
async fn join_within(tasks: Vec<JoinHandle<()>>, limit: Duration) {
    let deadline = Instant::now() + limit;
    for task in tasks {
        let abort = task.abort_handle();
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            abort.abort();
        }
    }
}

/// One RSS reading of the hub.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RssSample {
    /// Since the soak started publishing.
    at: Duration,
    /// Since the hub process that was read started.
    uptime: Duration,
    kib: u64,
}

/// Samples RSS every [`RSS_EVERY`] and prints a line every [`LINE_EVERY`] until `stop`;
/// answers the samples and the whole run's latency.
async fn report(
    shared: Arc<Shared>,
    hub_pid: Arc<AtomicU32>,
    run_start: Instant,
    mut stop: watch::Receiver<bool>,
) -> (Vec<RssSample>, Histogram<u64>) {
    let mut samples = Vec::new();
    let mut total = clients::new_histogram();
    let mut pid = hub_pid.load(Ordering::Relaxed);
    let mut pid_since = run_start;
    let mut last_line = Instant::now();
    let mut last_counts = counts_json(&shared);
    let mut minute = 0;
    let mut tick = tokio::time::interval(RSS_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {
                let _ = total.add(shared.take_latency());
                return (samples, total);
            }
        }
        let now_pid = hub_pid.load(Ordering::Relaxed);
        if now_pid != pid {
            pid = now_pid;
            pid_since = Instant::now();
        }
        // A read fails while the hub is being restarted; that sample is skipped.
        if let Ok(kib) = ServerProbe::new(pid).rss_kib() {
            samples.push(RssSample {
                at: run_start.elapsed(),
                uptime: pid_since.elapsed(),
                kib,
            });
        }
        if last_line.elapsed() < LINE_EVERY {
            continue;
        }
        minute += 1;
        let seconds = last_line.elapsed().as_secs_f64();
        last_line = Instant::now();
        let counts = counts_json(&shared);
        let rate = |name: &str| {
            let delta =
                counts[name].as_u64().unwrap_or(0) - last_counts[name].as_u64().unwrap_or(0);
            round1(delta as f64 / seconds)
        };
        let latency = shared.take_latency();
        let _ = total.add(&latency);
        let mut line = Map::new();
        line.insert("phase".into(), json!("minute"));
        line.insert("minute".into(), json!(minute));
        line.insert("deliveriesPerSec".into(), json!(rate("deliveries")));
        line.insert("publishesPerSec".into(), json!(rate("acks")));
        insert_latency(&mut line, &latency);
        line.insert("rssKib".into(), json!(samples.last().map(|s| s.kib)));
        let held: usize = shared.ledgers.iter().map(|l| l.lock().held()).sum();
        line.insert("ledgerHeld".into(), json!(held));
        line.insert("failures".into(), json!(shared.counters.failures()));
        line.extend(counts.clone());
        last_counts = counts;
        // Nobody may be reading stdout any more; the counts still reach the summary.
        let _ = emit(&Value::Object(line));
    }
}

/// Every count by its JSON name.
fn counts_json(shared: &Shared) -> Map<String, Value> {
    Count::ALL
        .iter()
        .map(|&c| (c.name().to_owned(), json!(shared.counters.get(c))))
        .collect()
}

fn insert_latency(line: &mut Map<String, Value>, latency: &Histogram<u64>) {
    let quantile = |q: f64| (!latency.is_empty()).then(|| latency.value_at_quantile(q));
    line.insert("latencyP50Micros".into(), json!(quantile(0.5)));
    line.insert("latencyP99Micros".into(), json!(quantile(0.99)));
    line.insert(
        "latencyMaxMicros".into(),
        json!((!latency.is_empty()).then(|| latency.max())),
    );
}

/// The RSS peaks of the first and the last minute of steady state.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RssVerdict {
    first_kib: u64,
    last_kib: u64,
    growth_percent: f64,
}

/// Compares the steady-state RSS peak (samples at least `warmup` into their hub
/// process's life) of the run's first steady minute with that of its last; `None` when
/// the steady state is too short to have two separate minutes.
fn rss_verdict(samples: &[RssSample], warmup: Duration) -> Option<RssVerdict> {
    let steady: Vec<&RssSample> = samples.iter().filter(|s| s.uptime >= warmup).collect();
    let (first, last) = (steady.first()?.at, steady.last()?.at);
    if last < first + 2 * RSS_WINDOW {
        return None;
    }
    let peak = |keep: &dyn Fn(Duration) -> bool| {
        steady
            .iter()
            .filter(|s| keep(s.at))
            .map(|s| s.kib)
            .max()
            .unwrap_or(0)
    };
    let first_kib = peak(&|at| at < first + RSS_WINDOW);
    let last_kib = peak(&|at| at + RSS_WINDOW > last);
    let growth_percent = (last_kib as f64 / first_kib.max(1) as f64 - 1.0) * 100.0;
    Some(RssVerdict {
        first_kib,
        last_kib,
        growth_percent,
    })
}

fn max_of(values: &[f64]) -> Option<f64> {
    values.iter().copied().reduce(f64::max).map(round3)
}

/// Prints one JSON line and flushes it, so a reader sees it at once.
fn emit(line: &Value) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, line)?;
    writeln!(stdout)?;
    stdout.flush().context("writing to stdout")
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_secs: u64, uptime_secs: u64, kib: u64) -> RssSample {
        RssSample {
            at: Duration::from_secs(at_secs),
            uptime: Duration::from_secs(uptime_secs),
            kib,
        }
    }

    #[test]
    fn rss_is_judged_on_steady_samples_only() {
        let warmup = Duration::from_secs(60);
        let samples = [
            sample(10, 10, 50),  // warming up: ignored
            sample(70, 70, 100), // first steady minute
            sample(120, 120, 110),
            sample(200, 200, 500), // a peak in the middle is neither window
            sample(250, 10, 40),   // restarted: warming up again
            sample(320, 80, 120),  // last steady minute
        ];
        let verdict = rss_verdict(&samples, warmup).unwrap();
        assert_eq!((verdict.first_kib, verdict.last_kib), (110, 120));
        assert!((verdict.growth_percent - 9.09).abs() < 0.01, "{verdict:?}");
    }

    #[test]
    fn a_short_steady_state_is_not_judged() {
        let samples = [sample(70, 70, 100), sample(150, 150, 900)];
        assert_eq!(rss_verdict(&samples, Duration::from_secs(60)), None);
    }
}
