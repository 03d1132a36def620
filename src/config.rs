//! Configuration: defaults, an optional TOML file, `ACTIONHUB_*` environment variables and
//! command-line flags, in rising order of precedence.
//!
//! This module owns every tunable and its default. It does no IO beyond reading the config
//! file, and it refuses combinations that would be unsafe (open mode on a public address)
//! before anything binds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::edge::auth::{ApiKeys, JwtSecrets};

/// Every setting of a running hub, after defaults, file, environment and flags are merged.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP and WebSocket listener binds to.
    pub listen: SocketAddr,
    /// Directory for the write-ahead log and snapshots.
    pub data_dir: PathBuf,
    /// `text` for people, `json` for log shippers.
    pub log_format: LogFormat,
    /// Retained history, by count: serves `since` replay and `GET /v1/events`.
    pub retention_events: usize,
    /// Retained history, by age; also how long ended actions stay in snapshots.
    #[serde(with = "humantime_serde_compat")]
    pub retention_age: Duration,
    /// Outbound frames one connection may have queued before it is closed as slow (4008).
    pub queue_capacity: usize,
    /// Largest client frame accepted, in bytes (larger closes with 4009).
    pub max_frame_bytes: usize,
    /// Largest HTTP request body, in bytes (larger is 413 `too_large`).
    pub max_body_bytes: usize,
    /// Most events in one `POST /v1/events` batch.
    pub max_batch_events: usize,
    /// Bad frames in a row before a connection is closed with 4000 (never fewer than 5).
    pub max_bad_frames: u32,
    /// How long a new WebSocket has to send `connect`.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Interval of WebSocket-level pings; a peer silent for two intervals is dropped.
    #[serde(with = "humantime_serde_compat")]
    pub ping_interval: Duration,
    /// A session with no event for this long is ended with reason `idle`.
    #[serde(with = "humantime_serde_compat")]
    pub session_idle_timeout: Duration,
    /// A customer not seen for this long is forgotten, with its actions; a visitor profile
    /// goes with its last customer (their events stay in the history as retention says).
    #[serde(with = "humantime_serde_compat")]
    pub visitor_idle_age: Duration,
    /// Whether the hub moves a session's still-`offered` actions to `ignored` when it ends.
    pub auto_ignore_on_session_end: bool,
    /// Most subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// When a logged event is made durable (README, "Durability").
    pub fsync: FsyncPolicy,
    /// Longest time between syncs under `fsync = "interval"`.
    #[serde(with = "humantime_serde_compat")]
    pub fsync_interval: Duration,
    /// A snapshot of the state is written at least this often (when anything changed).
    #[serde(with = "humantime_serde_compat")]
    pub snapshot_interval: Duration,
    /// ... and after this many events since the last one.
    pub snapshot_every_events: u64,
    /// Size at which a write-ahead log segment is closed and a new one started.
    pub wal_segment_bytes: u64,
    /// API keys and their scopes, kept only hashed. With neither keys nor secrets the hub
    /// runs in open development mode.
    pub api_keys: ApiKeys,
    /// HS256 secrets of browser tokens: the first signs, every one verifies (rotation).
    pub jwt_secrets: JwtSecrets,
    /// Clock skew forgiven on a token's `exp` and `nbf`.
    #[serde(with = "humantime_serde_compat")]
    pub jwt_leeway: Duration,
    /// Origins that browser (token) connections and CORS requests may come from. Empty:
    /// any origin for tokens, and no CORS headers.
    pub allowed_origins: Vec<String>,
    /// Most open WebSocket connections; more are refused at the upgrade with 503.
    pub max_connections: usize,
    /// Most open WebSocket connections from one client address; more get 429.
    pub max_connections_per_ip: usize,
    /// Take the client address from the last `X-Forwarded-For` entry (behind a proxy).
    pub trust_forwarded_for: bool,
    /// Publishes a second one token connection may make, on average.
    pub publish_rate: u32,
    /// Publishes a token connection may make at once before the rate applies.
    pub publish_burst: u32,
    /// Deepest nesting of arrays and objects in a frame or request body.
    pub max_json_depth: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            log_format: LogFormat::Text,
            retention_events: 1_000_000,
            retention_age: Duration::from_secs(24 * 3600),
            queue_capacity: 8192,
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            max_batch_events: 1000,
            max_bad_frames: 10,
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            session_idle_timeout: Duration::from_secs(30 * 60),
            visitor_idle_age: Duration::from_secs(30 * 24 * 3600),
            auto_ignore_on_session_end: true,
            max_subscriptions_per_connection: 256,
            fsync: FsyncPolicy::Interval,
            fsync_interval: Duration::from_millis(100),
            snapshot_interval: Duration::from_secs(60),
            snapshot_every_events: 1_000_000,
            wal_segment_bytes: 64 * 1024 * 1024,
            api_keys: ApiKeys::default(),
            jwt_secrets: JwtSecrets::default(),
            jwt_leeway: Duration::from_secs(30),
            allowed_origins: Vec::new(),
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            trust_forwarded_for: false,
            publish_rate: 50,
            publish_burst: 100,
            max_json_depth: 32,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// When an appended event is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Before the publish is acknowledged or the event delivered (group commit).
    Always,
    /// At most `fsync_interval` after the event was acknowledged.
    Interval,
    /// When the operating system writes it back.
    Never,
}

/// Command-line flags. Each also reads an `ACTIONHUB_*` environment variable; each
/// overrides the config file, which overrides the built-in default.
#[derive(Debug, Parser)]
#[command(
    name = "actionhub",
    version,
    about = "A realtime web-action event hub."
)]
pub struct Cli {
    /// TOML file with any of the settings below (snake_case keys, e.g. `retention_events`).
    #[arg(long, env = "ACTIONHUB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]. Open mode (no keys configured)
    /// refuses any address that is not loopback.
    #[arg(long, env = "ACTIONHUB_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory for the log and snapshots [default: ./data].
    #[arg(long, env = "ACTIONHUB_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log line format [default: text].
    #[arg(long, env = "ACTIONHUB_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Events kept in the replayable history [default: 1000000].
    #[arg(long, env = "ACTIONHUB_RETENTION_EVENTS", value_name = "N")]
    pub retention_events: Option<usize>,
    /// Age of the oldest event kept, e.g. `24h`, `90m` [default: 24h].
    #[arg(long, env = "ACTIONHUB_RETENTION_AGE", value_parser = humantime::parse_duration)]
    pub retention_age: Option<Duration>,
    /// Outbound frames queued per connection before it is closed as slow (4008) [default: 8192].
    #[arg(long, env = "ACTIONHUB_QUEUE_CAPACITY", value_name = "N")]
    pub queue_capacity: Option<usize>,
    /// Largest client WebSocket frame in bytes; larger closes with 4009 [default: 65536].
    #[arg(long, env = "ACTIONHUB_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Largest HTTP body in bytes [default: 1048576].
    #[arg(long, env = "ACTIONHUB_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most events in one HTTP batch [default: 1000].
    #[arg(long, env = "ACTIONHUB_MAX_BATCH_EVENTS", value_name = "N")]
    pub max_batch_events: Option<usize>,
    /// Bad frames in a row before a close with 4000; at least 5 [default: 10].
    #[arg(long, env = "ACTIONHUB_MAX_BAD_FRAMES", value_name = "N")]
    pub max_bad_frames: Option<u32>,
    /// Time a new WebSocket has to send `connect` [default: 10s].
    #[arg(long, env = "ACTIONHUB_CONNECT_TIMEOUT", value_parser = humantime::parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// WebSocket ping interval [default: 30s].
    #[arg(long, env = "ACTIONHUB_PING_INTERVAL", value_parser = humantime::parse_duration)]
    pub ping_interval: Option<Duration>,
    /// Idle time after which a session ends with reason `idle` [default: 30m].
    #[arg(long, env = "ACTIONHUB_SESSION_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub session_idle_timeout: Option<Duration>,
    /// Idle time after which a customer (and a profile with its last customer) is
    /// forgotten [default: 30days].
    #[arg(long, env = "ACTIONHUB_VISITOR_IDLE_AGE", value_parser = humantime::parse_duration)]
    pub visitor_idle_age: Option<Duration>,
    /// Move a session's still-offered actions to `ignored` when it ends [default: true].
    #[arg(
        long,
        env = "ACTIONHUB_AUTO_IGNORE_ON_SESSION_END",
        value_name = "BOOL"
    )]
    pub auto_ignore_on_session_end: Option<bool>,
    /// Most subscriptions per connection [default: 256].
    #[arg(
        long,
        env = "ACTIONHUB_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        value_name = "N"
    )]
    pub max_subscriptions_per_connection: Option<usize>,
    /// When logged events are synced: always, interval, never [default: interval].
    #[arg(long, env = "ACTIONHUB_FSYNC", value_enum)]
    pub fsync: Option<FsyncPolicy>,
    /// Longest time between syncs under `--fsync interval` [default: 100ms].
    #[arg(long, env = "ACTIONHUB_FSYNC_INTERVAL", value_parser = humantime::parse_duration)]
    pub fsync_interval: Option<Duration>,
    /// Time between state snapshots [default: 60s].
    #[arg(long, env = "ACTIONHUB_SNAPSHOT_INTERVAL", value_parser = humantime::parse_duration)]
    pub snapshot_interval: Option<Duration>,
    /// Events after which a snapshot is written [default: 1000000].
    #[arg(long, env = "ACTIONHUB_SNAPSHOT_EVERY_EVENTS", value_name = "N")]
    pub snapshot_every_events: Option<u64>,
    /// Size of a write-ahead log segment in bytes [default: 67108864].
    #[arg(long, env = "ACTIONHUB_WAL_SEGMENT_BYTES", value_name = "BYTES")]
    pub wal_segment_bytes: Option<u64>,
    /// API keys and scopes, e.g. `key1=publish+subscribe,key2=admin`; a key may be given
    /// hashed as `sha256:<hex>`. Prefer the environment or the file to the flag.
    #[arg(
        long,
        env = "ACTIONHUB_API_KEYS",
        value_name = "KEYS",
        hide_env_values = true
    )]
    pub api_keys: Option<Secret>,
    /// HS256 secrets of browser tokens, `current,previous`, each at least 32 bytes.
    #[arg(
        long,
        env = "ACTIONHUB_JWT_SECRETS",
        value_name = "SECRETS",
        hide_env_values = true
    )]
    pub jwt_secrets: Option<Secret>,
    /// Clock skew forgiven on token `exp`/`nbf` [default: 30s].
    #[arg(long, env = "ACTIONHUB_JWT_LEEWAY", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Option<Duration>,
    /// Origins allowed for browser tokens and CORS, comma-separated [default: any origin
    /// for tokens, no CORS].
    #[arg(
        long,
        env = "ACTIONHUB_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// Most open WebSocket connections [default: 10000].
    #[arg(long, env = "ACTIONHUB_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most open WebSocket connections per client address [default: 1000].
    #[arg(long, env = "ACTIONHUB_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Trust the last X-Forwarded-For entry as the client address [default: false].
    #[arg(long, env = "ACTIONHUB_TRUST_FORWARDED_FOR", value_name = "BOOL")]
    pub trust_forwarded_for: Option<bool>,
    /// Publishes per second per token connection [default: 50].
    #[arg(long, env = "ACTIONHUB_PUBLISH_RATE", value_name = "N")]
    pub publish_rate: Option<u32>,
    /// Publish burst per token connection [default: 100].
    #[arg(long, env = "ACTIONHUB_PUBLISH_BURST", value_name = "N")]
    pub publish_burst: Option<u32>,
    /// Deepest JSON nesting in a frame or body [default: 32].
    #[arg(long, env = "ACTIONHUB_MAX_JSON_DEPTH", value_name = "N")]
    pub max_json_depth: Option<usize>,
}

/// Text that holds credentials: printed redacted, and parsed in [`Config::from_cli`]
/// rather than by clap, whose refusals quote the value (a key).
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(text.to_owned()))
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Merges defaults, the config file named by `cli` (if any), and the flags/environment.
    pub fn from_cli(mut cli: Cli) -> Result<Config, ConfigError> {
        let mut config = match &cli.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(Secret(text)) = cli.api_keys.take() {
            config.api_keys = text.parse().map_err(|e| {
                ConfigError::Invalid(format!("ACTIONHUB_API_KEYS (--api-keys): {e}"))
            })?;
        }
        if let Some(Secret(text)) = cli.jwt_secrets.take() {
            config.jwt_secrets = text.parse().map_err(|e| {
                ConfigError::Invalid(format!("ACTIONHUB_JWT_SECRETS (--jwt-secrets): {e}"))
            })?;
        }
        macro_rules! override_with {
            ($($field:ident),* $(,)?) => {
                $(if let Some(value) = cli.$field { config.$field = value; })*
            };
        }
        override_with!(
            listen,
            data_dir,
            log_format,
            retention_events,
            retention_age,
            queue_capacity,
            max_frame_bytes,
            max_body_bytes,
            max_batch_events,
            max_bad_frames,
            connect_timeout,
            ping_interval,
            session_idle_timeout,
            visitor_idle_age,
            auto_ignore_on_session_end,
            max_subscriptions_per_connection,
            fsync,
            fsync_interval,
            snapshot_interval,
            snapshot_every_events,
            wal_segment_bytes,
            jwt_leeway,
            allowed_origins,
            max_connections,
            max_connections_per_ip,
            trust_forwarded_for,
            publish_rate,
            publish_burst,
            max_json_depth,
        );
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file on top of the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
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

    /// Open development mode: no credentials configured, everything allowed.
    pub fn is_open_mode(&self) -> bool {
        self.api_keys.is_empty() && self.jwt_secrets.is_empty()
    }
}

/// Durations in the TOML file are written like the flags: `"30s"`, `"24h"`, `"500ms"`.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, "retention_events = 5\nping_interval = \"5s\"\n").unwrap();
        let cli = Cli::parse_from([
            "actionhub",
            "--config",
            path.to_str().unwrap(),
            "--retention-events",
            "7",
        ]);
        let config = Config::from_cli(cli).unwrap();
        assert_eq!(config.retention_events, 7);
        assert_eq!(config.ping_interval, Duration::from_secs(5));
        assert_eq!(config.max_frame_bytes, 64 * 1024);
    }

    #[test]
    fn durability_settings_come_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "fsync = \"always\"\nfsync_interval = \"5ms\"\nsnapshot_every_events = 10\n",
        )
        .unwrap();
        let from_file = Config::from_file(&path).unwrap();
        assert_eq!(from_file.fsync, FsyncPolicy::Always);
        assert_eq!(from_file.fsync_interval, Duration::from_millis(5));
        assert_eq!(from_file.snapshot_every_events, 10);
        let cli = Cli::parse_from([
            "actionhub",
            "--config",
            path.to_str().unwrap(),
            "--fsync",
            "never",
            "--snapshot-interval",
            "2s",
        ]);
        let config = Config::from_cli(cli).unwrap();
        assert_eq!(config.fsync, FsyncPolicy::Never);
        assert_eq!(config.snapshot_interval, Duration::from_secs(2));
        assert_eq!(Config::default().fsync, FsyncPolicy::Interval);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, "retention_event = 5\n").unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
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
    }

    #[test]
    fn security_settings_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "jwt_secrets = [\"0123456789abcdef0123456789abcdef\"]\n\
             allowed_origins = [\"https://shop.example\"]\n\
             max_json_depth = 16\n\
             publish_rate = 5\n\
             [api_keys]\n\
             backend = \"publish+subscribe\"\n",
        )
        .unwrap();
        let config = Config::from_file(&path).unwrap();
        assert_eq!(config.api_keys.len(), 1);
        assert_eq!(config.jwt_secrets.len(), 1);
        assert_eq!(config.allowed_origins, ["https://shop.example"]);
        assert_eq!((config.max_json_depth, config.publish_rate), (16, 5));
        assert!(!config.is_open_mode());
        std::fs::write(&path, "jwt_secrets = [\"short\"]\n").unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("32 bytes"), "{err}");
    }

    #[test]
    fn credentials_come_from_the_environment_form() {
        let cli = Cli::parse_from([
            "actionhub",
            "--api-keys",
            "k1=publish+subscribe,k2=admin",
            "--jwt-secrets",
            "0123456789abcdef0123456789abcdef,fedcba9876543210fedcba9876543210",
            "--allowed-origins",
            "https://a.example,https://b.example",
        ]);
        let config = Config::from_cli(cli).unwrap();
        assert_eq!(config.api_keys.len(), 2);
        assert!(!config.jwt_secrets.is_empty());
        assert_eq!(config.allowed_origins.len(), 2);
        assert!(!format!("{config:?}").contains("k1"));
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
        let cli = Cli::parse_from(["actionhub", "--api-keys", "hunter2=root"]);
        let err = Config::from_cli(cli).unwrap_err().to_string();
        assert!(err.contains("root") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn too_few_bad_frames_is_refused() {
        let config = Config {
            max_bad_frames: 4,
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }
}
