//! Command-line flags of the load generator, and the parsing of the rate ladder.
//!
//! Only shapes and validates what the user asked for; it opens no connection.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Load generator for actionhub: real WebSocket subscribers and publishers, a ladder of
/// publish rates, one JSON line of results per step on stdout.
///
/// Subscribers each follow one customer's events; firehose subscribers follow all events.
/// Publishers send valid webchat lifecycle events (offered, accepted, started, engaged,
/// ended) round-robin over the customers, pipelined with a bounded in-flight window.
/// Every event carries its send time, so receivers measure publish-to-deliver latency.
/// A subscriber the hub closes as too slow (4008) comes back with `since` and the epoch,
/// as a client that must lose nothing does: what it missed is replayed and counted, late
/// (`resumedConnections` in the step's line).
///
/// `--target nats` drives nats-server's WebSocket listener with the same workload for a
/// side-by-side run: subjects `wa.<customerId>.<mediaType>.<state>`, customer subscribers
/// on `wa.<customerId>.>`, firehose subscribers on `wa.>`, the same event JSON as payload.
/// Core NATS acknowledges no publish, so a publisher sends PING every `--ping-every`
/// publishes (and at a full window or a step's end) and counts a PONG as the
/// acknowledgement of everything sent before its PING. NATS assigns no sequence numbers,
/// so each publisher stamps its events with its index and a per-customer counter
/// (`data.publisher`, `data.counter`, ~30 bytes more than the hub's payload), and order is
/// checked per customer and publisher: NATS orders one connection's messages, no more.
///
/// `actionhub-loadgen soak` is a different mode: a long run against a hub it starts,
/// SIGKILLs and restarts itself, with reconnect storms (see `soak --help`).
#[derive(Debug, Parser)]
#[command(
    name = "actionhub-loadgen",
    version,
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Args {
    /// A mode other than the rate ladder.
    #[command(subcommand)]
    pub(crate) mode: Option<Mode>,

    /// Address of the hub (host:port), or several, comma-separated (the nodes of a
    /// cluster): connections are dealt over them in turn, subscriber `i` to address
    /// `i mod n`, publisher `p` to `p mod n`. Only these addresses are ever connected to.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8080")]
    pub(crate) addr: Vec<SocketAddr>,

    /// Which server protocol to drive: actionhub, or nats-server's WebSocket listener.
    #[arg(long, value_enum, default_value_t = TargetKind::Hub)]
    pub(crate) target: TargetKind,

    /// Subscriber connections, each subscribed to the events of ONE customer
    /// (spread evenly over the customers).
    #[arg(long, default_value_t = 1000)]
    pub(crate) subscribers: usize,

    /// Distinct customers the events are about (fresh random ids every run).
    #[arg(long, default_value_t = 100)]
    pub(crate) customers: usize,

    /// Firehose subscriber connections, each subscribed to every event (no filter).
    #[arg(long, default_value_t = 0)]
    pub(crate) firehose: usize,

    /// Publishing connections; the step's rate is split evenly among them.
    #[arg(long, default_value_t = 4)]
    pub(crate) publishers: usize,

    /// Rate ladder: total publishes per second across all publishers, one step per entry,
    /// comma-separated. `max` publishes as fast as acknowledgements allow.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000,max")]
    pub(crate) rates: Vec<Rate>,

    /// How long each step publishes (e.g. 5s, 500ms, 1m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub(crate) duration: Duration,

    /// Most publishes one publisher may have sent but not yet seen acknowledged.
    #[arg(long, default_value_t = 128)]
    pub(crate) window: usize,

    /// With `--target nats`: publishes between two PINGs, whose PONG acknowledges them
    /// (at most `--window`; ignored for the hub, which acknowledges every publish).
    #[arg(long, default_value_t = 32)]
    pub(crate) ping_every: usize,

    /// Longest wait after a step for in-flight deliveries before counting them
    /// (it ends sooner once every expected delivery has arrived or the counts settle).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub(crate) drain: Duration,

    /// Connections opened at once while setting up.
    #[arg(long, default_value_t = 256)]
    pub(crate) connect_concurrency: usize,

    /// Time limit for opening one connection (TCP, WebSocket handshake, connect, subscribe).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub(crate) connect_timeout: Duration,

    /// Process id of the server, to report its CPU time, RSS, CPU per delivery and memory
    /// per connection (read from /proc; the server must run on this machine). Several,
    /// comma-separated (a cluster's nodes): the figures are their sums, and CPU per
    /// delivery is the nodes' CPU over every delivery.
    #[arg(long, value_delimiter = ',')]
    pub(crate) server_pid: Vec<u32>,

    /// API key sent in `connect` (not needed in the hub's open development mode).
    #[arg(long, env = "ACTIONHUB_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,

    /// Exit non-zero (saying why on stderr) if any step lost deliveries, had publish
    /// errors or unacknowledged publishes, saw an order violation or a connection closed
    /// for good (one that resumed with `since` is not).
    #[arg(long)]
    pub(crate) check: bool,
}

impl Args {
    /// Refuses combinations that cannot run, before anything connects.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.addr.is_empty(), "--addr needs at least one address");
        anyhow::ensure!(self.customers >= 1, "--customers must be at least 1");
        anyhow::ensure!(self.publishers >= 1, "--publishers must be at least 1");
        anyhow::ensure!(self.window >= 1, "--window must be at least 1");
        anyhow::ensure!(
            (1..=self.window).contains(&self.ping_every),
            "--ping-every must be between 1 and --window ({})",
            self.window
        );
        anyhow::ensure!(
            self.connect_concurrency >= 1,
            "--connect-concurrency must be at least 1"
        );
        anyhow::ensure!(!self.rates.is_empty(), "--rates needs at least one step");
        anyhow::ensure!(!self.duration.is_zero(), "--duration must be positive");
        anyhow::ensure!(
            u32::try_from(self.customers).is_ok(),
            "--customers is too large"
        );
        Ok(())
    }

    /// Every connection the run opens.
    pub(crate) fn connections(&self) -> usize {
        self.subscribers + self.firehose + self.publishers
    }

    /// The address the `n`th connection of its kind (subscriber or publisher) dials.
    pub(crate) fn addr_of(&self, n: usize) -> SocketAddr {
        self.addr[n % self.addr.len()]
    }
}

/// The modes besides the rate ladder.
#[derive(Debug, Subcommand)]
pub(crate) enum Mode {
    /// Soak: 30 minutes at half the hub's max fan-out with 10,000 subscribers, reconnect
    /// storms every 5 minutes and SIGKILL + restart every 10, checking zero loss, order,
    /// recovered resumes and flat RSS. Starts the hub itself on 127.0.0.1.
    Soak(crate::soak::SoakArgs),
}

/// The server protocol the generator drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TargetKind {
    /// actionhub's own WebSocket protocol (`/v1/ws`, subprotocol `actionhub.v1`).
    Hub,
    /// nats-server's WebSocket listener (plain-text NATS protocol), for comparison.
    Nats,
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetKind::Hub => "hub",
            TargetKind::Nats => "nats",
        })
    }
}

/// One step of the ladder: a total publish rate, or as fast as acknowledgements allow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Rate {
    /// Publishes per second, summed over all publishers.
    PerSecond(f64),
    /// No pacing: each publisher keeps its in-flight window full.
    Max,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::PerSecond(r)),
            _ => Err(format!(
                "`{s}` is not a rate: use a positive number of publishes per second or `max`"
            )),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::PerSecond(r) => write!(f, "{r}"),
            Rate::Max => f.write_str("max"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_numbers_and_max() {
        assert_eq!("1000".parse::<Rate>(), Ok(Rate::PerSecond(1000.0)));
        assert_eq!(" MAX ".parse::<Rate>(), Ok(Rate::Max));
        assert!("0".parse::<Rate>().is_err());
        assert!("-5".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    #[test]
    fn soak_is_a_subcommand_beside_the_ladder_flags() {
        let args = Args::try_parse_from(["x", "soak", "--subscribers", "500"]).unwrap();
        assert!(matches!(args.mode, Some(Mode::Soak(_))));
        let args = Args::try_parse_from(["x", "--subscribers", "5"]).unwrap();
        assert!(args.mode.is_none());
        assert_eq!(args.subscribers, 5);
    }

    #[test]
    fn ladder_splits_on_commas() {
        let args = Args::try_parse_from(["x", "--rates", "500,max"]).unwrap();
        assert_eq!(args.rates, vec![Rate::PerSecond(500.0), Rate::Max]);
    }
}
