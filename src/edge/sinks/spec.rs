//! What a sink is: its definition as the config file's `[[sinks]]` table or the body of
//! `POST /v1/sinks` gives it, checked into a [`SinkSpec`], and its signing [`Secret`].
//!
//! Pure: parsing and signing, no IO. Every refusal names the field at fault, in the
//! file's snake_case or the API's camelCase as the source spells it.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::ingest::topic::{Filter, TopicSet};

/// Events in one request at most, and by default.
pub const MAX_BATCH_SIZE: usize = 1000;
const DEFAULT_BATCH_SIZE: usize = 100;
/// How long the first event of a batch waits for more by default.
const DEFAULT_LINGER_MS: u64 = 1000;
/// Longest linger accepted: a batch older than this would look like a stuck sink.
const MAX_LINGER_MS: u64 = 60_000;
/// The prefix of a Standard Webhooks secret.
const SECRET_PREFIX: &str = "whsec_";

/// A `[[sinks]]` table of the config file, as written. [`SinkSpec::from_config`] checks it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub name: String,
    pub url: String,
    pub topics: Vec<String>,
    /// The `where` of a subscription, as a TOML table (`where = { actionMapId = [..] }`)
    /// or as JSON text.
    #[serde(rename = "where", default, deserialize_with = "where_from_toml")]
    pub filter: Option<Value>,
    #[serde(default)]
    pub batch_size: Option<u64>,
    #[serde(default)]
    pub linger_ms: Option<u64>,
    pub secret: Secret,
}

/// A TOML table reads as the JSON object it spells; a string is read as JSON text.
fn where_from_toml<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    let value = toml::Value::deserialize(d)?;
    let json = match value {
        toml::Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| serde::de::Error::custom(format!("`where` is not JSON: {e}")))?,
        other => serde_json::to_value(other).map_err(serde::de::Error::custom)?,
    };
    Ok(Some(json))
}

/// Secrets are never printed: `Config`'s `Debug` shows a sink without its secret.
impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("topics", &self.topics)
            .field("where", &self.filter)
            .field("batch_size", &self.batch_size)
            .field("linger_ms", &self.linger_ms)
            .field("secret", &self.secret)
            .finish()
    }
}

impl SinkConfig {
    /// The table as `--print-config` writes it: its secret left out.
    pub fn to_toml(&self) -> String {
        let mut table = toml::Table::new();
        table.insert("name".into(), self.name.clone().into());
        table.insert("url".into(), self.url.clone().into());
        let topics = self.topics.iter().cloned().map(toml::Value::from).collect();
        table.insert("topics".into(), toml::Value::Array(topics));
        if let Some(filter) = &self.filter {
            table.insert("where".into(), filter.to_string().into());
        }
        for (key, value) in [
            ("batch_size", self.batch_size),
            ("linger_ms", self.linger_ms),
        ] {
            if let Some(n) = value {
                table.insert(
                    key.into(),
                    toml::Value::Integer(n.min(i64::MAX as u64) as i64),
                );
            }
        }
        let body = toml::to_string(&table).unwrap_or_default();
        format!("\n[[sinks]]\n{body}# secret is set; secrets are not printed\n")
    }
}

/// A Standard Webhooks signing secret: the key bytes that `whsec_<base64>` spells.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl Secret {
    /// A new random secret of 32 bytes.
    pub fn generate() -> Secret {
        let mut key = vec![0; 32];
        getrandom::fill(&mut key).expect("the operating system's random source");
        Secret(key)
    }

    /// Reads `whsec_<base64>`; the message never quotes the text.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let key = text
            .strip_prefix(SECRET_PREFIX)
            .and_then(|b64| BASE64.decode(b64).ok())
            .ok_or("a sink's secret must be `whsec_` followed by base64")?;
        if !(24..=64).contains(&key.len()) {
            return Err("a sink's secret must hold 24 to 64 bytes (32 is usual)".into());
        }
        Ok(Secret(key))
    }

    /// The secret as a receiver configures it: `whsec_<base64>`.
    pub fn text(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.0))
    }

    /// The `webhook-signature` header of Standard Webhooks: `v1,` and the base64
    /// HMAC-SHA256 of `id.timestamp.body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        Secret::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

/// A checked sink definition.
#[derive(Clone, Debug)]
pub struct SinkSpec {
    /// Stable across restarts: it keys the sink's file in the data directory and its
    /// metrics.
    pub name: String,
    pub url: reqwest::Url,
    /// The patterns as given, for the views; `topic_set` is what matching uses.
    pub topics: Vec<String>,
    pub topic_set: TopicSet,
    /// The `where` object as given (none: every event of the topics).
    pub filter_json: Option<Value>,
    pub filter: Filter,
    pub batch_size: usize,
    pub linger: Duration,
    pub secret: Secret,
}

/// How the two sources spell the fields, so that a refusal names the field as written.
#[derive(Clone, Copy)]
enum Spelling {
    File,
    Api,
}

impl Spelling {
    fn batch_size(self) -> &'static str {
        match self {
            Spelling::File => "batch_size",
            Spelling::Api => "batchSize",
        }
    }

    fn linger_ms(self) -> &'static str {
        match self {
            Spelling::File => "linger_ms",
            Spelling::Api => "lingerMs",
        }
    }
}

/// What `POST /v1/sinks` asks for besides the definition: where the sink starts.
#[derive(Clone, Debug, Default)]
pub struct StartAt {
    pub since: Option<u64>,
    pub epoch: Option<String>,
}

/// The fields of `POST /v1/sinks`.
pub const API_FIELDS: &str = "name, url, topics, where, batchSize, lingerMs, since, epoch";

impl SinkSpec {
    /// A `[[sinks]]` table of the config file.
    pub fn from_config(config: &SinkConfig) -> Result<SinkSpec, String> {
        let prefix = |e: String| format!("sink {:?}: {e}", config.name);
        check_name(&config.name).map_err(prefix)?;
        SinkSpec::build(
            Spelling::File,
            config.name.clone(),
            &config.url,
            &config.topics,
            config.filter.clone(),
            config.batch_size,
            config.linger_ms,
            config.secret.clone(),
        )
        .map_err(prefix)
    }

    /// The body of `POST /v1/sinks`; `default_name` names a sink the body leaves unnamed.
    pub fn from_api(
        body: Value,
        default_name: &str,
        secret: Secret,
    ) -> Result<(SinkSpec, StartAt), String> {
        let Value::Object(mut fields) = body else {
            return Err(format!("the body must be an object of {API_FIELDS}"));
        };
        let mut take = |name: &str| fields.remove(name).filter(|v| !v.is_null());
        let name = match take("name") {
            None => default_name.to_owned(),
            Some(Value::String(name)) => {
                check_name(&name)?;
                name
            }
            Some(_) => return Err("`name` must be a string".into()),
        };
        let url = match take("url") {
            Some(Value::String(url)) => url,
            Some(_) => return Err("`url` must be a string".into()),
            None => return Err("`url` is required".into()),
        };
        let topics = match take("topics") {
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(pattern) => Ok(pattern),
                    _ => Err("`topics` must be a list of topic patterns".to_owned()),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err("`topics` must be a list of topic patterns".into()),
            None => return Err("`topics` is required".into()),
        };
        let filter = take("where");
        let count = |field: &str, value: Option<Value>| -> Result<Option<u64>, String> {
            value
                .map(|v| {
                    v.as_u64()
                        .ok_or_else(|| format!("`{field}` must be a non-negative integer"))
                })
                .transpose()
        };
        let batch_size = count("batchSize", take("batchSize"))?;
        let linger_ms = count("lingerMs", take("lingerMs"))?;
        let since = count("since", take("since"))?;
        let epoch = match take("epoch") {
            None => None,
            Some(Value::String(epoch)) => Some(epoch),
            Some(_) => return Err("`epoch` must be a string".into()),
        };
        if let Some(unknown) = fields.keys().next() {
            return Err(format!(
                "unknown field {unknown:?}; the body takes {API_FIELDS}"
            ));
        }
        if since.is_some() && epoch.is_none() {
            return Err("`since` needs `epoch`: a seq means something only in its epoch".into());
        }
        let spec = SinkSpec::build(
            Spelling::Api,
            name,
            &url,
            &topics,
            filter,
            batch_size,
            linger_ms,
            secret,
        )?;
        Ok((spec, StartAt { since, epoch }))
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        spelling: Spelling,
        name: String,
        url: &str,
        topics: &[String],
        filter_json: Option<Value>,
        batch_size: Option<u64>,
        linger_ms: Option<u64>,
        secret: Secret,
    ) -> Result<SinkSpec, String> {
        let url = parse_url(url)?;
        let topic_set = TopicSet::parse_patterns(topics.iter().map(String::as_str).map(str::trim))
            .map_err(|e| format!("`topics`: {e}"))?;
        let filter = match &filter_json {
            None => Filter::default(),
            Some(value) => Filter::parse(value)?,
        };
        let batch_size = match batch_size {
            None => DEFAULT_BATCH_SIZE,
            Some(n) if (1..=MAX_BATCH_SIZE as u64).contains(&n) => n as usize,
            Some(_) => {
                return Err(format!(
                    "`{}` must be 1 to {MAX_BATCH_SIZE}",
                    spelling.batch_size()
                ))
            }
        };
        let linger_ms = match linger_ms {
            None => DEFAULT_LINGER_MS,
            Some(n) if n <= MAX_LINGER_MS => n,
            Some(_) => {
                return Err(format!(
                    "`{}` must be 0 to {MAX_LINGER_MS}",
                    spelling.linger_ms()
                ))
            }
        };
        Ok(SinkSpec {
            name,
            url,
            topics: topics.to_vec(),
            topic_set,
            filter_json,
            filter,
            batch_size,
            linger: Duration::from_millis(linger_ms),
            secret,
        })
    }

    /// The definition as `GET /v1/sinks` shows it (camelCase, no secret).
    pub fn view(&self, into: &mut Map<String, Value>) {
        into.insert("name".into(), self.name.clone().into());
        into.insert("url".into(), self.url.as_str().into());
        into.insert("topics".into(), self.topics.clone().into());
        into.insert(
            "where".into(),
            self.filter_json
                .clone()
                .unwrap_or(Value::Object(Map::new())),
        );
        into.insert("batchSize".into(), self.batch_size.into());
        into.insert("lingerMs".into(), (self.linger.as_millis() as u64).into());
    }

    /// The definition as an API sink's file keeps it, secret included; read back by
    /// [`SinkSpec::from_stored`].
    pub fn to_stored(&self) -> Value {
        let mut object = Map::new();
        self.view(&mut object);
        object.insert("secret".into(), self.secret.text().into());
        Value::Object(object)
    }

    /// An API sink's definition as its file keeps it.
    pub fn from_stored(value: &Value) -> Result<SinkSpec, String> {
        let mut fields = value.clone();
        let secret = fields
            .as_object_mut()
            .and_then(|o| o.remove("secret"))
            .and_then(|s| s.as_str().map(Secret::parse))
            .ok_or("no secret")??;
        let name = fields["name"].as_str().unwrap_or_default().to_owned();
        let (spec, _) = SinkSpec::from_api(fields, &name, secret)?;
        Ok(spec)
    }
}

/// A name keys a file name and a metrics label: letters, digits, `-`, `_`, 1 to 64.
fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match ok {
        true => Ok(()),
        false => Err(format!(
            "`name` {name:?} must be 1 to 64 letters, digits, `-` or `_`"
        )),
    }
}

/// Only absolute http and https URLs with a host: a sink posts nowhere else.
fn parse_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("`url` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`url` must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("`url` must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("`url` must not hold credentials: the signature authenticates".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signs_as_standard_webhooks_does() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(secret.text(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(
            Secret::parse(&Secret::generate().text()).map(|s| s.0.len()),
            Ok(32)
        );
    }

    #[test]
    fn bad_definitions_name_their_field() {
        let ok = json!({"url": "https://h.example/x", "topics": ["webchat:all"]});
        let cases = [
            (
                json!({"url": "ftp://h.example/", "topics": ["all"]}),
                "`url` must be http",
            ),
            (
                json!({"url": "https://h.example/", "topics": ["webchat:nope"]}),
                "`topics`",
            ),
            (
                json!({"url": "https://h.example/", "topics": []}),
                "`topics`",
            ),
            (
                ok.clone().with("batchSize", 0),
                "`batchSize` must be 1 to 1000",
            ),
            (ok.clone().with("batchSize", 1001), "`batchSize`"),
            (ok.clone().with("lingerMs", -1), "`lingerMs`"),
            (
                ok.clone().with("where", json!({"colour": ["red"]})),
                "colour",
            ),
            (ok.clone().with("since", 5), "`since` needs `epoch`"),
            (ok.clone().with("secret", "x"), "unknown field \"secret\""),
            (ok.clone().with("name", "a b"), "`name`"),
            (json!({"topics": ["all"]}), "`url` is required"),
        ];
        for (body, expected) in cases {
            let err = SinkSpec::from_api(body.clone(), "n", Secret::generate()).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
        let (spec, _) = SinkSpec::from_api(ok, "n", Secret::generate()).unwrap();
        assert_eq!((spec.name.as_str(), spec.batch_size), ("n", 100));
        let stored = SinkSpec::from_stored(&spec.to_stored()).unwrap();
        assert_eq!(stored.secret, spec.secret);
        assert_eq!(stored.url, spec.url);
    }

    trait With {
        fn with(self, key: &str, value: impl Into<Value>) -> Value;
    }

    impl With for Value {
        fn with(mut self, key: &str, value: impl Into<Value>) -> Value {
            self[key] = value.into();
            self
        }
    }
}
