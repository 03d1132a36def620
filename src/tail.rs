//! `actionhub tail`: follows a hub's event stream (`GET /v1/events/stream`, NDJSON) and
//! prints each event frame as one line on stdout, for an operator watching live traffic
//! or a pipeline feeding `jq`, `vector` or `kafka-console-producer`.
//!
//! It resumes where it stopped: after the last seq it printed when the connection drops
//! (with a growing pause, 0.5 s to 10 s), and across runs from `--checkpoint`, a small
//! JSON file (`{"epoch","seq"}`) replaced atomically once the lines before it are flushed,
//! so the file never names a seq whose line was not written. A `reset` from the hub (the
//! history it asked for is gone or another epoch's) is said on stderr and the cursor moves
//! to where the hub goes on. A closed stdout (`| head`) ends it cleanly. It talks only
//! to the URL given.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The arguments of `actionhub tail`.
#[derive(Parser, Debug)]
#[command(
    name = "actionhub tail",
    about = "Print a hub's events as NDJSON, one frame a line, resuming where it stopped"
)]
pub struct TailArgs {
    /// The hub's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key with the `subscribe` scope (not needed in open mode).
    #[arg(long, env = "ACTIONHUB_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Topic patterns, comma-separated (`webchat:all,visitor:signin`).
    #[arg(long, default_value = "all")]
    topics: String,
    /// A `where` filter as JSON (`{"actionMapId":["..."]}`).
    #[arg(long = "where")]
    filter: Option<String>,
    /// Start after this seq (in `--epoch`, or the hub's current epoch) instead of live.
    #[arg(long)]
    since: Option<u64>,
    /// The epoch `--since` belongs to.
    #[arg(long, requires = "since")]
    epoch: Option<String>,
    /// A file that keeps the last seq printed; read at start (it wins over `--since`),
    /// rewritten as lines are printed.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
}

/// Where the stream goes on: after `seq` in `epoch`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Cursor {
    epoch: String,
    seq: u64,
}

/// The longest pause between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Runs `actionhub tail` with the arguments after `tail`.
pub fn main(args: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let args = TailArgs::parse_from(std::iter::once("actionhub tail".to_owned()).chain(args));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(run(args)) {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

async fn run(args: TailArgs) -> anyhow::Result<()> {
    if let Some(filter) = &args.filter {
        serde_json::from_str::<Value>(filter).context("--where is not JSON")?;
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // Only the URL given: a redirect could send the key elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let mut cursor = match args
        .checkpoint
        .as_deref()
        .map(read_checkpoint)
        .transpose()?
    {
        Some(Some(saved)) => Some(saved),
        _ => match (args.since, &args.epoch) {
            (Some(seq), Some(epoch)) => Some(Cursor {
                epoch: epoch.clone(),
                seq,
            }),
            (Some(seq), None) => Some(Cursor {
                epoch: current_epoch(&client, &base, &args).await?,
                seq,
            }),
            (None, _) => None,
        },
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        match follow(&client, &base, &args, &mut cursor).await {
            Ok(Ended::Refused(message)) => bail!(message),
            Ok(Ended::Closed) => backoff = Duration::from_millis(500),
            Err(e) if is_broken_pipe(&e) => return Err(e),
            Err(e) => eprintln!("actionhub tail: {e:#}; reconnecting in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// How one connection ended without an IO error.
enum Ended {
    /// The hub ended the stream (shutdown, or this reader fell behind): reconnect.
    Closed,
    /// The hub refused the request (bad filter, bad key): retrying cannot help.
    Refused(String),
}

/// One connection: prints events until the stream ends, moving `cursor` as lines are
/// flushed.
async fn follow(
    client: &reqwest::Client,
    base: &str,
    args: &TailArgs,
    cursor: &mut Option<Cursor>,
) -> anyhow::Result<Ended> {
    let mut query = vec![("topics", args.topics.clone())];
    if let Some(filter) = &args.filter {
        query.push(("where", filter.clone()));
    }
    if let Some(c) = cursor.as_ref() {
        query.push(("since", c.seq.to_string()));
        query.push(("epoch", c.epoch.clone()));
    }
    let mut request = client
        .get(format!("{base}/v1/events/stream"))
        .header("accept", "application/x-ndjson")
        .query(&query);
    if let Some(key) = &args.api_key {
        request = request.header("x-api-key", key);
    }
    let mut response = request.send().await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Ok(Ended::Refused(format!("the hub answered {status}: {body}")));
    }
    let epoch = response
        .headers()
        .get("actionhub-epoch")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut pending = Vec::new();
    let stdout = io::stdout();
    while let Some(chunk) = response.chunk().await? {
        pending.extend_from_slice(&chunk);
        let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let mut out = stdout.lock();
        let mut moved = None;
        for line in pending[..=end]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
        {
            let frame: Value =
                serde_json::from_slice(line).context("the hub sent a line that is not JSON")?;
            match frame["type"].as_str() {
                Some("event") => {
                    out.write_all(line)?;
                    out.write_all(b"\n")?;
                    moved = frame["seq"].as_u64().or(moved);
                }
                Some("reset") => {
                    let seq = frame["seq"].as_u64().unwrap_or_default();
                    eprintln!(
                        "actionhub tail: the hub cannot resume from {}; going on live after seq {seq} of epoch {}",
                        cursor.as_ref().map_or("the start".to_owned(), |c| format!("seq {} of epoch {}", c.seq, c.epoch)),
                        frame["epoch"].as_str().unwrap_or_default()
                    );
                    moved = Some(seq);
                }
                _ => {}
            }
        }
        out.flush()?;
        drop(out);
        pending.drain(..=end);
        if let Some(seq) = moved {
            let next = Cursor {
                epoch: epoch.clone(),
                seq,
            };
            if let Some(path) = &args.checkpoint {
                write_checkpoint(path, &next)?;
            }
            *cursor = Some(next);
        }
    }
    Ok(Ended::Closed)
}

/// The hub's epoch now (for `--since` without `--epoch`).
async fn current_epoch(
    client: &reqwest::Client,
    base: &str,
    args: &TailArgs,
) -> anyhow::Result<String> {
    let mut request = client.get(format!("{base}/v1/events?limit=1"));
    if let Some(key) = &args.api_key {
        request = request.header("x-api-key", key);
    }
    let text = request.send().await?.error_for_status()?.text().await?;
    let page: Value = serde_json::from_str(&text).context("the hub's answer is not JSON")?;
    page["epoch"]
        .as_str()
        .map(str::to_owned)
        .context("the hub's answer has no epoch")
}

/// The saved cursor; None when the file does not exist yet.
fn read_checkpoint(path: &Path) -> anyhow::Result<Option<Cursor>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("checkpoint {} is not {{\"epoch\",\"seq\"}}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading checkpoint {}", path.display())),
    }
}

/// Replaces the checkpoint atomically: a crash leaves the old one or the new one.
fn write_checkpoint(path: &Path, cursor: &Cursor) -> anyhow::Result<()> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, serde_json::to_vec(cursor)?)
        .with_context(|| format!("writing checkpoint {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("replacing checkpoint {}", path.display()))
}
