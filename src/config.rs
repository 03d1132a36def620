//! Configuration: defaults, an optional TOML file, `ACTIONHUB_*` environment variables and
//! command-line flags, in rising order of precedence.
//!
//! This module owns every tunable and its default. It does no IO beyond reading the config
//! file and the environment, and it refuses combinations that would be unsafe (open mode on
//! a public address) before anything binds.
//!
//! Each setting is declared once, in the `settings!` list below: a doc comment, a name, a
//! type and a default. From that one declaration the macro makes the [`Config`] field, its
//! default and its row of `SETTINGS`, the table that the file key (`retention_events`), the
//! environment variable (`ACTIONHUB_RETENTION_EVENTS`), the flag (`--retention-events`),
//! `--help` and `--print-config` are all derived from; so a setting cannot exist without
//! every source. How a type is written in those sources (a duration as `30s`, API keys as
//! `key=scope+scope`) is said once per type, by `SettingValue`.
//!
//! Why a macro rather than `figment`: figment would merge the sources, but the struct, its
//! defaults and a clap struct of optional flags would still be three declarations of each
//! setting. Its environment provider also reads every `ACTIONHUB_*` variable and guesses a
//! type from the text, so an unrelated variable (the JS tests set `ACTIONHUB_BIN`) would be
//! refused as an unknown key, and a data directory or secret of only digits would arrive as
//! a number and be refused. Clap still parses the flags and writes `--help`, from the table.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction};
use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Deserializer, Serialize};

use crate::edge::auth::{ApiKeys, JwtSecrets};
use crate::edge::sinks::spec::{SinkConfig, SinkSpec};

/// Declares every setting: `doc comment, name: Type = default;`. See the module doc.
macro_rules! settings {
    ($($(#[doc = $doc:literal])+ $name:ident: $ty:ty = $default:expr;)+) => {
        /// Every setting of a running hub, after defaults, file, environment and flags are
        /// merged.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $(
                $(#[doc = $doc])+
                #[serde(deserialize_with = "SettingValue::from_file")]
                pub $name: $ty,
            )+
            /// Webhook sinks, the file's `[[sinks]]` tables (docs/protocol.md, "Webhook
            /// sinks"). A list of tables has no flag or variable form, so it sits outside
            /// the settings: from the file only.
            #[serde(deserialize_with = "sinks_from_file")]
            pub sinks: Vec<SinkConfig>,
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $($name: $default,)+ sinks: Vec::new() }
            }
        }

        /// Every setting, in the order declared: what the merge, `--help` and
        /// `--print-config` walk.
        const SETTINGS: &[Setting] = &[$(Setting {
            name: stringify!($name),
            doc: &[$($doc),+],
            value_name: <$ty as SettingValue>::VALUE_NAME,
            repeats: <$ty as SettingValue>::REPEATS,
            set: |config, text| {
                config.$name = SettingValue::parse(text)?;
                Ok(())
            },
            show: |config| SettingValue::show(&config.$name),
            #[cfg(test)]
            samples: <$ty as SettingValue>::SAMPLES,
            #[cfg(test)]
            debug: |config| format!("{:?}", config.$name),
        }),+];
    };
}

settings! {
    /// Address the HTTP and WebSocket listener binds to. Open mode (no API keys or JWT
    /// secrets) refuses any address that is not loopback.
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080));
    /// Directory for the write-ahead log and snapshots.
    data_dir: PathBuf = PathBuf::from("./data");
    /// Log line format: `text` for people, `json` for log shippers.
    log_format: LogFormat = LogFormat::Text;
    /// Events kept in the replayable history, which serves `since` replay and
    /// `GET /v1/events`.
    retention_events: usize = 1_000_000;
    /// Age of the oldest event kept in the history; also how long ended actions stay in
    /// snapshots.
    retention_age: Duration = Duration::from_secs(24 * 3600);
    /// Outbound frames one connection may have queued before it is closed as slow (4008).
    queue_capacity: usize = 8192;
    /// Largest client WebSocket frame accepted, in bytes (larger closes with 4009).
    max_frame_bytes: usize = 64 * 1024;
    /// Largest HTTP request body, in bytes (larger is 413 `too_large`).
    max_body_bytes: usize = 1024 * 1024;
    /// Most events in one `POST /v1/events` batch.
    max_batch_events: usize = 1000;
    /// Bad frames in a row before a connection is closed with 4000 (never fewer than 5).
    max_bad_frames: u32 = 10;
    /// How long a new WebSocket has to send `connect`.
    connect_timeout: Duration = Duration::from_secs(10);
    /// Interval of WebSocket-level pings; a peer silent for two intervals is dropped.
    ping_interval: Duration = Duration::from_secs(30);
    /// A session with no event for this long is ended with reason `idle`.
    session_idle_timeout: Duration = Duration::from_secs(30 * 60);
    /// A customer not seen for this long is forgotten, with its actions; a visitor profile
    /// goes with its last customer (their events stay in the history as retention says).
    visitor_idle_age: Duration = Duration::from_secs(30 * 24 * 3600);
    /// Whether the hub moves a session's still-`offered` actions to `ignored` when it ends.
    auto_ignore_on_session_end: bool = true;
    /// Most subscriptions one connection may hold.
    max_subscriptions_per_connection: usize = 256;
    /// When a logged event is made durable: `always` (before it is acknowledged),
    /// `interval` or `never` (README, "Durability").
    fsync: FsyncPolicy = FsyncPolicy::Interval;
    /// Longest time between syncs under `fsync = "interval"`.
    fsync_interval: Duration = Duration::from_millis(100);
    /// A snapshot of the state is written at least this often (when anything changed).
    snapshot_interval: Duration = Duration::from_secs(60);
    /// A snapshot is also written after this many events since the last one.
    snapshot_every_events: u64 = 1_000_000;
    /// Size at which a write-ahead log segment is closed and a new one started, in bytes.
    wal_segment_bytes: u64 = 64 * 1024 * 1024;
    /// API keys and their scopes, kept only hashed: `key1=publish+subscribe,key2=admin`,
    /// or in the file a table `key = "publish+subscribe"`; a key may be given hashed as
    /// `sha256:<hex>`. Prefer the environment or the file to the flag. With neither keys
    /// nor JWT secrets the hub runs in open development mode.
    api_keys: ApiKeys = ApiKeys::default();
    /// HS256 secrets of browser tokens, `current,previous`, each at least 32 bytes: the
    /// first signs, every one verifies (rotation).
    jwt_secrets: JwtSecrets = JwtSecrets::default();
    /// Clock skew forgiven on a token's `exp` and `nbf`.
    jwt_leeway: Duration = Duration::from_secs(30);
    /// Origins that browser (token) connections and CORS requests may come from (a list
    /// in the file, comma-separated elsewhere). None: any origin for tokens, and no CORS
    /// headers.
    allowed_origins: Vec<String> = Vec::new();
    /// Most open WebSocket connections; more are refused at the upgrade with 503.
    max_connections: usize = 10_000;
    /// Most open WebSocket connections from one client address; more get 429.
    max_connections_per_ip: usize = 1_000;
    /// Take the client address from the last `X-Forwarded-For` entry (behind a proxy).
    trust_forwarded_for: bool = false;
    /// The request header a trusted proxy or CDN names the client's country in (e.g.
    /// `CF-IPCountry`), shown as a visitor's `location.country`. Empty: none is read.
    geo_country_header: String = String::new();
    /// The request header a trusted proxy or CDN names the client's city in, shown as a
    /// visitor's `location.city`. Empty: none is read.
    geo_city_header: String = String::new();
    /// Publishes a second one token connection may make, on average.
    publish_rate: u32 = 50;
    /// Publishes a token connection may make at once before the rate applies.
    publish_burst: u32 = 100;
    /// Deepest nesting of arrays and objects in a frame or request body.
    max_json_depth: usize = 32;
    /// NATS server URLs (`nats://host:port`, several for a NATS cluster). When set, the
    /// hub runs in cluster mode: a JetStream stream is the log and the source of order,
    /// shared by every node, and the data directory keeps only this node's own files.
    nats: Vec<String> = Vec::new();
    /// This node's name in cluster mode, shown as `node` in `connected` and `/readyz` and
    /// in logs and metrics. Empty: the host name and the listen port.
    node_name: String = String::new();
    /// The JetStream stream the cluster's nodes share (created when missing).
    nats_stream: String = "actionhub".to_owned();
    /// How many NATS servers keep a copy of the stream (3 for a 3-server NATS cluster).
    nats_replicas: usize = 1;
    /// How long a publish in cluster mode waits for the stream to order it (during a NATS
    /// leader election, say) before it is refused `unavailable`.
    nats_timeout: Duration = Duration::from_secs(10);
    /// How long one webhook request may take (connecting included) before it counts as
    /// failed and is retried.
    sink_timeout: Duration = Duration::from_secs(10);
    /// Longest delay between retries of a webhook batch; delays double from 100ms up to
    /// it, each a random part of that (full jitter).
    sink_backoff_max: Duration = Duration::from_secs(30);
    /// Failed attempts in a row of one webhook batch after which its sink is paused
    /// (until `POST /v1/sinks/{id}/resume`).
    sink_max_failures: u32 = 20;
    /// How long one webhook batch may keep failing before its sink is paused.
    sink_max_retry: Duration = Duration::from_secs(3600);
}

/// Reads `[[sinks]]` and checks each table, so that a bad one is refused at start with
/// the line it is on.
fn sinks_from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SinkConfig>, D::Error> {
    let sinks = Vec::<SinkConfig>::deserialize(d)?;
    for sink in &sinks {
        SinkSpec::from_config(sink).map_err(serde::de::Error::custom)?;
    }
    Ok(sinks)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// When an appended event is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Before the publish is acknowledged or the event delivered (group commit).
    Always,
    /// At most `fsync_interval` after the event was acknowledged.
    Interval,
    /// When the operating system writes it back.
    Never,
}

/// One row of `SETTINGS`: a setting as the sources and the printer see it.
struct Setting {
    /// The field and file key, e.g. `retention_events`.
    name: &'static str,
    /// The doc comment, one entry a line.
    doc: &'static [&'static str],
    value_name: &'static str,
    /// Whether the flag may be given more than once (its values are then joined by commas).
    repeats: bool,
    /// Sets the setting from its environment and flag form.
    set: fn(&mut Config, &str) -> Result<(), String>,
    /// The setting in its file form; `None` for a secret that is set.
    show: fn(&Config) -> Option<toml::Value>,
    #[cfg(test)]
    samples: &'static [(&'static str, &'static str)],
    #[cfg(test)]
    debug: fn(&Config) -> String,
}

impl Setting {
    fn flag(&self) -> String {
        self.name.replace('_', "-")
    }

    fn env(&self) -> String {
        format!("ACTIONHUB_{}", self.name.to_ascii_uppercase())
    }

    /// The doc comment as one line.
    fn prose(&self) -> String {
        let words: Vec<&str> = self.doc.iter().map(|line| line.trim()).collect();
        words.join(" ")
    }

    /// The default as `--help` writes it: bare text, `none` for an empty list.
    fn default_text(&self) -> String {
        match (self.show)(&Config::default()) {
            Some(toml::Value::String(text)) => text,
            Some(toml::Value::Array(items)) if items.is_empty() => "none".into(),
            Some(value) => value.to_string(),
            None => "none".into(),
        }
    }

    fn arg(&self) -> Arg {
        let help = format!(
            "{} [env: {}] [default: {}]",
            self.prose(),
            self.env(),
            self.default_text()
        );
        let action = if self.repeats {
            ArgAction::Append
        } else {
            ArgAction::Set
        };
        Arg::new(self.name)
            .long(self.flag())
            .value_name(self.value_name)
            .action(action)
            .help(help)
    }
}

/// How a setting's type is written in each source. The environment and the flags share one
/// text form; the file has TOML's own types (integers, lists, tables).
trait SettingValue: Sized {
    /// What `--help` shows after the flag.
    const VALUE_NAME: &'static str;
    /// A list whose flag may be repeated.
    const REPEATS: bool = false;
    /// Pairs of one value in its text form and in its file form, for the precedence test;
    /// two at least, each different from the one before.
    #[cfg(test)]
    const SAMPLES: &'static [(&'static str, &'static str)];

    /// Reads the environment and flag form. The message never quotes the text, which may
    /// be a secret.
    fn parse(text: &str) -> Result<Self, String>;

    /// Reads the file form.
    fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;

    /// The file form for `--print-config`; `None` keeps a secret from being printed.
    fn show(&self) -> Option<toml::Value>;
}

/// The `FromStr` of a type, its error as text.
fn parse_str<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e: T::Err| e.to_string())
}

macro_rules! integer_values {
    ($($ty:ty),+) => {$(
        impl SettingValue for $ty {
            const VALUE_NAME: &'static str = "N";
            #[cfg(test)]
            const SAMPLES: &'static [(&'static str, &'static str)] =
                &[("5001", "5001"), ("5002", "5002")];

            fn parse(text: &str) -> Result<Self, String> {
                parse_str(text)
            }

            fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$ty as Deserialize>::deserialize(d)
            }

            fn show(&self) -> Option<toml::Value> {
                // TOML integers end at i64::MAX, which is beyond any useful setting.
                Some(toml::Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX)))
            }
        }
    )+};
}

integer_values!(usize, u32, u64);

impl SettingValue for bool {
    const VALUE_NAME: &'static str = "BOOL";
    #[cfg(test)]
    const SAMPLES: &'static [(&'static str, &'static str)] =
        &[("true", "true"), ("false", "false")];

    fn parse(text: &str) -> Result<Self, String> {
        parse_str(text)
    }

    fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bool::deserialize(d)
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*self))
    }
}

impl SettingValue for SocketAddr {
    const VALUE_NAME: &'static str = "ADDR";
    #[cfg(test)]
    const SAMPLES: &'static [(&'static str, &'static str)] = &[
        ("127.0.0.1:5001", "\"127.0.0.1:5001\""),
        ("[::1]:5002", "\"[::1]:5002\""),
    ];

    fn parse(text: &str) -> Result<Self, String> {
        parse_str(text)
    }

    fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SocketAddr::deserialize(d)
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

impl SettingValue for PathBuf {
    const VALUE_NAME: &'static str = "DIR";
    #[cfg(test)]
    const SAMPLES: &'static [(&'static str, &'static str)] =
        &[("/tmp/hub-a", "\"/tmp/hub-a\""), ("hub-b", "\"hub-b\"")];

    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }

    fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PathBuf::deserialize(d)
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string_lossy().into_owned()))
    }
}

impl SettingValue for String {
    const VALUE_NAME: &'static str = "NAME";
    #[cfg(test)]
    const SAMPLES: &'static [(&'static str, &'static str)] =
        &[("name-a", "\"name-a\""), ("name-b", "\"name-b\"")];

    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }

    fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.clone()))
    }
}

/// Durations are written the same way everywhere: `"30s"`, `"24h"`, `"500ms"`.
impl SettingValue for Duration {
    const VALUE_NAME: &'static str = "DURATION";
    #[cfg(test)]
    const SAMPLES: &'static [(&'static str, &'static str)] =
        &[("11s", "\"11s\""), ("12m", "\"12m\"")];

    fn parse(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text).map_err(|e| e.to_string())
    }

    fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Duration::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(
            humantime::format_duration(*self).to_string(),
        ))
    }
}

/// Enums are written by their serde names in every source.
macro_rules! named_values {
    ($($ty:ty: $value_name:literal, $samples:expr;)+) => {$(
        impl SettingValue for $ty {
            const VALUE_NAME: &'static str = $value_name;
            #[cfg(test)]
            const SAMPLES: &'static [(&'static str, &'static str)] = $samples;

            fn parse(text: &str) -> Result<Self, String> {
                parse_name(text)
            }

            fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$ty as Deserialize>::deserialize(d)
            }

            fn show(&self) -> Option<toml::Value> {
                toml::Value::try_from(self).ok()
            }
        }
    )+};
}

named_values! {
    LogFormat: "text|json", &[("json", "\"json\""), ("text", "\"text\"")];
    FsyncPolicy: "always|interval|never", &[("always", "\"always\""), ("never", "\"never\"")];
}

fn parse_name<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let name: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        text.into_deserializer();
    T::deserialize(name).map_err(|e| e.to_string())
}

/// A list is comma-separated in the environment and in one flag, and the flag may also be
/// repeated.
impl SettingValue for Vec<String> {
    const VALUE_NAME: &'static str = "LIST";
    const REPEATS: bool = true;
    #[cfg(test)]
    const SAMPLES: &'static [(&'static str, &'static str)] = &[
        ("https://a.example", "[\"https://a.example\"]"),
        (
            "https://a.example,https://b.example",
            "[\"https://a.example\", \"https://b.example\"]",
        ),
    ];

    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.split(',').map(str::to_owned).collect())
    }

    fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::deserialize(d)
    }

    fn show(&self) -> Option<toml::Value> {
        let items = self.iter().cloned().map(toml::Value::String).collect();
        Some(toml::Value::Array(items))
    }
}

/// Credentials are shown only when there are none.
impl SettingValue for ApiKeys {
    const VALUE_NAME: &'static str = "KEYS";
    #[cfg(test)]
    const SAMPLES: &'static [(&'static str, &'static str)] = &[
        ("key-a=publish", "[\"key-a=publish\"]"),
        (
            "key-a=publish,key-b=subscribe+admin",
            "[\"key-a=publish\", \"key-b=subscribe+admin\"]",
        ),
    ];

    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }

    fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ApiKeys::deserialize(d)
    }

    fn show(&self) -> Option<toml::Value> {
        self.is_empty().then(|| toml::Value::Array(Vec::new()))
    }
}

impl SettingValue for JwtSecrets {
    const VALUE_NAME: &'static str = "SECRETS";
    #[cfg(test)]
    const SAMPLES: &'static [(&'static str, &'static str)] = &[
        (
            "secret-a-0123456789abcdef0123456789",
            "[\"secret-a-0123456789abcdef0123456789\"]",
        ),
        (
            "secret-a-0123456789abcdef0123456789,secret-b-0123456789abcdef0123456789",
            "\"secret-a-0123456789abcdef0123456789,secret-b-0123456789abcdef0123456789\"",
        ),
    ];

    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }

    fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        JwtSecrets::deserialize(d)
    }

    fn show(&self) -> Option<toml::Value> {
        self.is_empty().then(|| toml::Value::Array(Vec::new()))
    }
}

/// The variable that names the config file, like `--config`.
const CONFIG_ENV: &str = "ACTIONHUB_CONFIG";

/// The opening of `--print-config`'s output, and so of `actionhub.example.toml`.
const TOML_HEADER: &str = "\
# actionhub's configuration, as `actionhub --print-config` prints it: every setting and its
# value; with no file, environment or flags, the defaults (actionhub.example.toml).
#
# Every key is optional. Precedence, lowest first: the defaults, this file (`--config FILE`
# or ACTIONHUB_CONFIG), the ACTIONHUB_* environment variables, the flags. Durations are
# written like \"500ms\", \"30s\", \"90m\", \"24h\". Secrets that are set are never printed.
";

/// The closing of `--print-config`'s output when no sink is configured: how to add one.
const SINKS_EXAMPLE: &str = "
# Webhook sinks: each [[sinks]] table posts the events it selects to a URL, in signed
# batches (docs/protocol.md, \"Webhook sinks\"). From this file only (no flag or
# variable); `name` keys the sink's cursor in <data_dir>/sinks/, so keep it stable.
#
# [[sinks]]
# name = \"analytics\"                     # 1 to 64 letters, digits, `-`, `_`
# url = \"https://collector.example/hooks\"  # http or https
# topics = [\"webchat:all\"]               # patterns, as in `subscribe`
# where = { actionMapId = [\"9f1c2a4e-3b7d-4c1e-8a2b-0123456789ab\"] }  # optional
# batch_size = 100                       # events a request at most, 1 to 1000
# linger_ms = 1000                       # how long a batch waits to fill, 0 to 60000
# secret = \"whsec_...\"                   # Standard Webhooks secret, whsec_<base64>
";

/// The command line: `--config`, `--print-config` and a flag for every setting.
fn command() -> clap::Command {
    let command = clap::Command::new("actionhub")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A realtime web-action event hub.")
        .after_help(
            "Each setting is also a key of the config file and an ACTIONHUB_* environment \
             variable; flags override the environment, which overrides the file. \
             `--print-config` shows the result.",
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help(format!(
                    "TOML file with any of the settings below (snake_case keys, e.g. \
                     `retention_events`; see actionhub.example.toml) [env: {CONFIG_ENV}]"
                )),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help("Print the effective configuration as TOML, secrets left out, and exit"),
        );
    SETTINGS
        .iter()
        .fold(command, |command, setting| command.arg(setting.arg()))
}

/// What the command line asks for.
#[derive(Debug)]
pub struct Invocation {
    /// The merged, validated configuration.
    pub config: Config,
    /// `--print-config`: print `config` (see [`Config::to_toml`]) instead of serving.
    pub print_config: bool,
}

impl Invocation {
    /// From this process's arguments and environment.
    pub fn from_process() -> Result<Invocation, ConfigError> {
        Invocation::parse(std::env::args_os(), |name| std::env::var_os(name))
    }

    /// Merges the defaults, the config file, the environment (`env` looks a variable up)
    /// and the flags in `args` (the program name first), then validates the result.
    pub fn parse<I, T>(
        args: I,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Invocation, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let flags = command().try_get_matches_from(args)?;
        let file = match flags.get_one::<PathBuf>("config") {
            Some(path) => Some(path.clone()),
            None => env(CONFIG_ENV).map(PathBuf::from),
        };
        let mut config = match file {
            Some(path) => Config::from_file(&path)?,
            None => Config::default(),
        };
        for setting in SETTINGS {
            let name = setting.env();
            if let Some(value) = env(&name) {
                let text = value
                    .into_string()
                    .map_err(|_| ConfigError::Invalid(format!("{name}: not UTF-8")))?;
                (setting.set)(&mut config, &text)
                    .map_err(|e| ConfigError::Invalid(format!("{name}: {e}")))?;
            }
        }
        for setting in SETTINGS {
            if let Some(values) = flags.get_many::<String>(setting.name) {
                let text = values.map(String::as_str).collect::<Vec<_>>().join(",");
                (setting.set)(&mut config, &text)
                    .map_err(|e| ConfigError::Invalid(format!("--{}: {e}", setting.flag())))?;
            }
        }
        config.validate()?;
        Ok(Invocation {
            config,
            print_config: flags.get_flag("print-config"),
        })
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line itself: an unknown flag, or `--help` and `--version`, whose text
    /// this is. [`clap::Error::exit`] prints it the way clap does.
    #[error(transparent)]
    Args(#[from] clap::Error),
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The message says where, but does not quote the file: its line may hold a secret.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file on top of the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .and_then(|span| text.get(..span.start))
                .map(|before| before.matches('\n').count() + 1);
            ConfigError::Parse {
                path: path.to_owned(),
                message: match line {
                    Some(line) => format!("line {line}: {}", e.message()),
                    None => e.message().to_owned(),
                },
            }
        })
    }

    /// A configuration for tests and tools: loopback, an ephemeral port, the given data
    /// directory, and otherwise the defaults.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            ..Config::default()
        }
    }

    /// The configuration as a config file: every setting with its doc comment, its flag
    /// and its variable. API keys and JWT secrets that are set are left out, so the text
    /// may be shown and logged.
    pub fn to_toml(&self) -> String {
        let mut text = String::from(TOML_HEADER);
        for setting in SETTINGS {
            text.push('\n');
            for line in setting.doc {
                let _ = writeln!(text, "#{}", line.trim_end());
            }
            let _ = writeln!(text, "# --{}, {}", setting.flag(), setting.env());
            let _ = match (setting.show)(self) {
                Some(value) => writeln!(text, "{} = {value}", setting.name),
                None => writeln!(text, "# {} is set; secrets are not printed", setting.name),
            };
        }
        match self.sinks.is_empty() {
            true => text.push_str(SINKS_EXAMPLE),
            false => self
                .sinks
                .iter()
                .for_each(|sink| text.push_str(&sink.to_toml())),
        }
        text
    }

    /// Refuses settings that cannot work or would be unsafe.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("retention_events", self.retention_events),
            ("queue_capacity", self.queue_capacity),
            ("max_frame_bytes", self.max_frame_bytes),
            ("max_body_bytes", self.max_body_bytes),
            ("max_batch_events", self.max_batch_events),
            (
                "max_subscriptions_per_connection",
                self.max_subscriptions_per_connection,
            ),
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("publish_rate", self.publish_rate as usize),
            ("publish_burst", self.publish_burst as usize),
            ("nats_replicas", self.nats_replicas),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if self.max_bad_frames < 5 {
            return Err(ConfigError::Invalid(
                "max_bad_frames must be at least 5 (PROTOCOL.md section 5)".into(),
            ));
        }
        if self.snapshot_every_events == 0 || self.wal_segment_bytes < 4096 {
            return Err(ConfigError::Invalid(
                "snapshot_every_events must be at least 1 and wal_segment_bytes at least 4096"
                    .into(),
            ));
        }
        if self.snapshot_interval.is_zero() || self.fsync_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "snapshot_interval and fsync_interval must be longer than zero".into(),
            ));
        }
        if self.max_json_depth < 8 {
            return Err(ConfigError::Invalid(
                "max_json_depth must be at least 8: a publish frame alone nests 3 deep".into(),
            ));
        }
        if self.ping_interval.is_zero() || self.connect_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "ping_interval and connect_timeout must be longer than zero".into(),
            ));
        }
        let stream_name_ok = !self.nats_stream.is_empty()
            && self
                .nats_stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !stream_name_ok {
            return Err(ConfigError::Invalid(format!(
                "nats_stream {:?} is not a stream name: use letters, digits, `-` and `_`",
                self.nats_stream
            )));
        }
        if self.nats.iter().any(|url| url.trim().is_empty()) {
            return Err(ConfigError::Invalid(
                "nats holds an empty URL: write `nats://host:port[,nats://host:port...]`".into(),
            ));
        }
        if self.sink_timeout.is_zero() || self.sink_max_retry.is_zero() {
            return Err(ConfigError::Invalid(
                "sink_timeout and sink_max_retry must be longer than zero".into(),
            ));
        }
        if self.sink_backoff_max < Duration::from_millis(100) || self.sink_max_failures == 0 {
            return Err(ConfigError::Invalid(
                "sink_backoff_max must be at least 100ms and sink_max_failures at least 1".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for sink in &self.sinks {
            SinkSpec::from_config(sink).map_err(ConfigError::Invalid)?;
            if !names.insert(sink.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "two [[sinks]] are named {:?}: a name keys a sink's cursor",
                    sink.name
                )));
            }
        }
        if self.nats_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "nats_timeout must be longer than zero".into(),
            ));
        }
        if self.is_open_mode() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {}: no API keys or JWT secrets are configured, so the hub \
                 runs in open development mode, which only listens on loopback (127.0.0.1 or ::1). \
                 Listen on loopback, or configure credentials: API keys \
                 (ACTIONHUB_API_KEYS=\"key1=publish+subscribe,key2=admin\" or `api_keys` in the \
                 config file) and/or browser-token secrets (ACTIONHUB_JWT_SECRETS).",
                self.listen
            )));
        }
        Ok(())
    }

    /// Cluster mode: a NATS JetStream stream is the log and the source of order.
    pub fn is_clustered(&self) -> bool {
        !self.nats.is_empty()
    }

    /// This node's name: `node_name`, or the host name and the port it listens on.
    pub fn node(&self, port: u16) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "actionhub".to_owned());
        format!("{host}:{port}")
    }

    /// Open development mode: no credentials configured, everything allowed.
    pub fn is_open_mode(&self) -> bool {
        self.api_keys.is_empty() && self.jwt_secrets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Environment variables, by name and value.
    type Vars<'a> = [(&'a str, &'a str)];

    /// Parses `args` (after the program name) with the variables in `env` as the whole
    /// environment.
    fn parse(args: &[&str], env: &Vars<'_>) -> Result<Config, ConfigError> {
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(name, value)| (name.to_string(), OsString::from(value)))
            .collect();
        let args = std::iter::once("actionhub").chain(args.iter().copied());
        Invocation::parse(args, |name| env.get(name).cloned()).map(|i| i.config)
    }

    fn write_file(dir: &tempfile::TempDir, text: &str) -> String {
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// The first sample of `setting` whose value differs from `below`'s, as (text, file
    /// form, the value's Debug).
    fn sample_over(setting: &Setting, below: &str) -> (&'static str, &'static str, String) {
        setting
            .samples
            .iter()
            .map(|&(text, file)| {
                let mut config = Config::default();
                (setting.set)(&mut config, text).unwrap_or_else(|e| {
                    panic!("sample {text:?} of {} does not parse: {e}", setting.name)
                });
                (text, file, (setting.debug)(&config))
            })
            .find(|(_, _, value)| value != below)
            .unwrap_or_else(|| panic!("{} needs a sample other than {below}", setting.name))
    }

    /// Every setting, at once: a flag beats the environment, which beats the file, which
    /// beats the default. Each layer gets a value unlike the one below it, so the winner is
    /// told apart; a setting that one source cannot set fails here.
    #[test]
    fn every_setting_comes_from_file_env_and_flag_in_that_precedence() {
        let mut file_text = String::new();
        let mut env = vec![
            // Other tools' variables share the prefix and are not settings.
            ("ACTIONHUB_BIN".to_owned(), "/bin/false".to_owned()),
        ];
        let mut flags = Vec::new();
        // Per setting, the Debug of its value in each layer: default, file, env, flag.
        let mut expected: Vec<[String; 4]> = Vec::new();
        for setting in SETTINGS {
            let default = (setting.debug)(&Config::default());
            let (_, file_form, file) = sample_over(setting, &default);
            let (env_text, _, env_value) = sample_over(setting, &file);
            let (flag_text, _, flag) = sample_over(setting, &env_value);
            let _ = writeln!(file_text, "{} = {file_form}", setting.name);
            env.push((setting.env(), env_text.to_owned()));
            flags.push(format!("--{}={flag_text}", setting.flag()));
            expected.push([default, file, env_value, flag]);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, &file_text);
        let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let file_flag = ["--config", path.as_str()];
        let all_flags = file_flag
            .into_iter()
            .chain(flags.iter().map(String::as_str))
            .collect::<Vec<_>>();

        let layers: [(&str, &[&str], &Vars<'_>); 4] = [
            ("default", &[], &[]),
            ("file", &file_flag, &[]),
            ("env", &file_flag, &env),
            ("flag", &all_flags, &env),
        ];
        for (layer, (winner, args, env)) in layers.into_iter().enumerate() {
            let config = parse(args, env).unwrap_or_else(|e| panic!("{winner}: {e}"));
            for (setting, values) in SETTINGS.iter().zip(&expected) {
                assert_eq!(
                    (setting.debug)(&config),
                    values[layer],
                    "{} should come from the {winner}",
                    setting.name
                );
            }
        }
    }

    #[test]
    fn the_config_file_can_come_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "retention_events = 5\n");
        let config = parse(&[], &[(CONFIG_ENV, &path)]).unwrap();
        assert_eq!(config.retention_events, 5);
        let other = write_file(&dir, "retention_events = 6\n");
        let config = parse(&["--config", &other], &[(CONFIG_ENV, "/nonexistent")]).unwrap();
        assert_eq!(config.retention_events, 6);
    }

    #[test]
    fn help_shows_every_setting_with_its_variable_and_default() {
        // Unwrapped, so that a setting's line is one line whatever the help's width.
        let help = command().term_width(0).render_help().to_string();
        for setting in SETTINGS {
            let flag = format!("--{} <{}>", setting.flag(), setting.value_name);
            assert!(help.contains(&flag), "{flag} missing from --help:\n{help}");
            let tail = format!(
                "[env: {}] [default: {}]",
                setting.env(),
                setting.default_text()
            );
            assert!(help.contains(&tail), "{tail} missing from --help:\n{help}");
        }
        assert!(help.contains("[default: 1000000]"), "{help}");
        assert!(help.contains("[default: 127.0.0.1:8080]"), "{help}");
    }

    /// The shipped example is the defaults as `--print-config` prints them, so it lists
    /// every setting and cannot drift.
    #[test]
    fn the_example_file_is_the_printed_defaults() {
        let printed = Config::default().to_toml();
        assert!(
            printed == include_str!("../actionhub.example.toml"),
            "actionhub.example.toml is stale; regenerate it with \
             `env -i target/release/actionhub --print-config > actionhub.example.toml`"
        );
        let table: toml::Table = printed.parse().unwrap();
        assert_eq!(table.len(), SETTINGS.len());
        let reread: Config = toml::from_str(&printed).unwrap();
        assert_eq!(reread.to_toml(), printed);
    }

    #[test]
    fn printed_settings_read_back_as_the_same_configuration() {
        let config = parse(
            &[
                "--retention-age=90m",
                "--fsync=never",
                "--allowed-origins=https://a.example",
                "--allowed-origins=https://b.example",
                "--data-dir=/var/lib/hub",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            config.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        let printed = config.to_toml();
        let reread: Config = toml::from_str(&printed).unwrap();
        assert_eq!(reread.to_toml(), printed);
        assert_eq!(reread.retention_age, Duration::from_secs(90 * 60));
    }

    #[test]
    fn secrets_are_never_printed() {
        let config = parse(
            &["--jwt-secrets", "0123456789abcdef0123456789abcdef"],
            &[("ACTIONHUB_API_KEYS", "k-hunter2=publish+subscribe,k2=admin")],
        )
        .unwrap();
        assert_eq!(config.api_keys.len(), 2);
        let printed = config.to_toml();
        let debug = format!("{config:?}");
        for text in [&printed, &debug] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("0123456789abcdef"), "{text}");
        }
        assert!(printed.contains("# api_keys is set; secrets are not printed"));
        assert!(printed.contains("# jwt_secrets is set; secrets are not printed"));
        let table: toml::Table = printed.parse().unwrap();
        assert!(!table.contains_key("api_keys") && !table.contains_key("jwt_secrets"));
    }

    #[test]
    fn a_refused_credential_is_named_but_not_quoted() {
        let err = parse(&["--api-keys", "hunter2=root"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--api-keys:"), "{err}");
        assert!(err.contains("root") && !err.contains("hunter2"), "{err}");
        let err = parse(&[], &[("ACTIONHUB_JWT_SECRETS", "short-secret")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("ACTIONHUB_JWT_SECRETS:"), "{err}");
        assert!(
            err.contains("32 bytes") && !err.contains("short-secret"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = parse(&[], &[("ACTIONHUB_RETENTION_EVENTS", "many")]).unwrap_err();
        assert!(
            err.to_string().starts_with("ACTIONHUB_RETENTION_EVENTS:"),
            "{err}"
        );
        let err = parse(&["--fsync", "sometimes"], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--fsync:") && err.contains("interval"),
            "{err}"
        );
        let err = parse(&["--retention-events", "5", "--retention-events", "6"], &[]);
        assert!(matches!(err, Err(ConfigError::Args(_))), "{err:?}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, "retention_event = 5\n");
        let err = Config::from_file(Path::new(&path)).unwrap_err().to_string();
        assert!(err.contains("retention_event"), "{err}");
    }

    #[test]
    fn open_mode_refuses_a_public_address() {
        let config = Config {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
        assert!(err.contains("ACTIONHUB_API_KEYS"), "{err}");
        assert!(Config::default().validate().is_ok());
        let with_keys = Config {
            api_keys: "k=publish".parse().unwrap(),
            ..config
        };
        assert!(!with_keys.is_open_mode());
        assert!(with_keys.validate().is_ok());
        let err = parse(&["--listen", "0.0.0.0:8080"], &[]).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    #[test]
    fn security_settings_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(
            &dir,
            "jwt_secrets = [\"0123456789abcdef0123456789abcdef\"]\n\
             allowed_origins = [\"https://shop.example\"]\n\
             max_json_depth = 16\n\
             publish_rate = 5\n\
             [api_keys]\n\
             backend = \"publish+subscribe\"\n\
             \"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\" = [\"subscribe\"]\n",
        );
        let config = Config::from_file(Path::new(&path)).unwrap();
        assert_eq!(config.api_keys.len(), 2);
        assert_eq!(config.jwt_secrets.len(), 1);
        assert_eq!(config.allowed_origins, ["https://shop.example"]);
        assert_eq!((config.max_json_depth, config.publish_rate), (16, 5));
        assert!(!config.is_open_mode());
        let path = write_file(&dir, "max_json_depth = 16\njwt_secrets = [\"tooshort\"]\n");
        let err = Config::from_file(Path::new(&path)).unwrap_err().to_string();
        assert!(err.contains("line 2: each JWT secret"), "{err}");
        assert!(
            err.contains("32 bytes") && !err.contains("tooshort"),
            "{err}"
        );
    }

    #[test]
    fn sinks_come_from_the_file_and_print_without_their_secret() {
        let dir = tempfile::tempdir().unwrap();
        let sink = "[[sinks]]\nname = \"analytics\"\nurl = \"https://c.example/h\"\n\
                    topics = [\"webchat:all\"]\n\
                    where = { actionMapVersion = [2] }\nbatch_size = 50\n\
                    secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n";
        let path = write_file(&dir, &format!("retention_events = 5\n{sink}"));
        let config = Config::from_file(Path::new(&path)).unwrap();
        assert_eq!(config.sinks.len(), 1);
        let printed = config.to_toml();
        let debug = format!("{config:?}");
        for text in [&printed, &debug] {
            assert!(!text.contains("MfKQ9r8G"), "{text}");
        }
        assert!(printed.contains("[[sinks]]") && printed.contains("batch_size = 50"));
        assert!(printed.contains("# secret is set; secrets are not printed"));
        let bad = [
            (
                "batch_size = 50",
                "batch_size = 0",
                "`batch_size` must be 1 to 1000",
            ),
            (
                "https://c.example/h",
                "file:///etc",
                "`url` must be http or https",
            ),
            ("webchat:all", "webchat:nope", "unknown topic name"),
            ("batch_size = 50", "colour = 1", "unknown field `colour`"),
        ];
        for (from, to, expected) in bad {
            let path = write_file(&dir, &sink.replace(from, to));
            let err = Config::from_file(Path::new(&path)).unwrap_err().to_string();
            assert!(err.contains(expected), "{to}: {err}");
        }
        let twice = write_file(&dir, &format!("{sink}{sink}"));
        let err = parse(&["--config", &twice], &[]).unwrap_err().to_string();
        assert!(err.contains("two [[sinks]] are named"), "{err}");
    }

    #[test]
    fn too_few_bad_frames_is_refused() {
        let config = Config {
            max_bad_frames: 4,
            ..Config::default()
        };
        assert!(config.validate().is_err());
        assert!(parse(&["--max-bad-frames", "4"], &[]).is_err());
    }
}
