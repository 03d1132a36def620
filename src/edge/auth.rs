//! Who is asking, and what they may do (PROTOCOL.md section 6).
//!
//! This module owns credentials and the rules that follow from them: API keys with scopes
//! (kept only as SHA-256 digests, compared in constant time, never logged), browser tokens
//! (HS256 JWTs bound to one customer, verified with every configured secret and minted with
//! the first), the origin allow-list, and the [`Principal`] a connection or request acts
//! as. Every op and endpoint asks its principal here, through [`Principal::require`],
//! [`Principal::limit_filter`] and [`Principal::check_publish`], and nowhere else. No IO.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::error::{ErrorCode, HubError};
use crate::ids::{CustomerId, SessionId, UserId};
use crate::ingest::event::Event;
use crate::ingest::topic::Filter;
use crate::ingest::validate::is_user_id;

/// Shortest JWT secret accepted, in bytes: HS256 wants a key at least as long as its hash.
pub const MIN_SECRET_BYTES: usize = 32;
/// What a token's claims must be.
const CLAIMS_NEEDED: &str = "it needs `sub` (a customerId) and `exp` (seconds)";
/// Default and longest lifetime of a minted token, in seconds.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 3600;
pub const MAX_TOKEN_TTL_SECS: u64 = 86_400;

/// One permission an API key may carry. Scopes do not imply one another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Publish events, mint tokens, update visitor attributes.
    Publish,
    /// Subscribe to any customer, and every HTTP read.
    Subscribe,
    /// Visitor deletes, exports, anonymization, merges.
    Admin,
}

impl Scope {
    const ALL: [Scope; 3] = [Scope::Publish, Scope::Subscribe, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Subscribe => "subscribe",
            Scope::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text.trim())
            .ok_or_else(|| format!("unknown scope {text:?}; scopes are publish, subscribe, admin"))
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Scopes {
        Scopes(Scope::ALL.iter().fold(0, |bits, s| bits | s.bit()))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect()
    }

    /// `publish+subscribe`, or a list of names.
    fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, String> {
        let mut scopes = Scopes::default();
        for name in names {
            scopes = scopes.with(Scope::parse(name)?);
        }
        if scopes == Scopes::default() {
            return Err("an API key needs at least one scope".into());
        }
        Ok(scopes)
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// The configured API keys, each kept only as its SHA-256 digest.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<KeyEntry>);

#[derive(Clone)]
struct KeyEntry {
    digest: [u8; 32],
    scopes: Scopes,
}

/// A key written as `sha256:<64 hex digits>` is already hashed, so a config file need not
/// hold the key itself.
const HASHED_PREFIX: &str = "sha256:";

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn parse_key(key: &str) -> Result<[u8; 32], String> {
    let key = key.trim();
    if key.is_empty() {
        return Err("an API key may not be empty".into());
    }
    let Some(hex) = key.strip_prefix(HASHED_PREFIX) else {
        return Ok(digest(key));
    };
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| "a hashed API key is `sha256:` and 64 hex digits".into())
}

impl ApiKeys {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn push(&mut self, key: &str, scopes: Scopes) -> Result<(), String> {
        self.0.push(KeyEntry {
            digest: parse_key(key)?,
            scopes,
        });
        Ok(())
    }

    /// The scopes of `key`, if it is one of ours. Every entry is compared, in constant
    /// time, so the answer's timing says nothing about which entry (or how much) matched.
    fn lookup(&self, key: &str) -> Option<Scopes> {
        let presented = digest(key);
        let mut found = None;
        for entry in &self.0 {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(entry.scopes);
            }
        }
        found
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys, redacted)", self.0.len())
    }
}

/// The environment form: `key1=publish+subscribe,key2=admin`.
impl FromStr for ApiKeys {
    type Err = String;

    fn from_str(text: &str) -> Result<ApiKeys, String> {
        let mut keys = ApiKeys::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, scopes) = item
                .rsplit_once('=')
                .ok_or("each API key is written `key=scope+scope`")?;
            keys.push(key, Scopes::parse(scopes.split('+'))?)?;
        }
        Ok(keys)
    }
}

/// In TOML: a table `key = "publish+subscribe"` (or `key = ["publish", "subscribe"]`), or
/// a list of `"key=publish+subscribe"` strings.
impl<'de> Deserialize<'de> for ApiKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ApiKeys, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum ScopeList {
            Joined(String),
            List(Vec<String>),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Table(BTreeMap<String, ScopeList>),
            List(Vec<String>),
        }
        let parsed = match Form::deserialize(d)? {
            Form::List(items) => items.join(",").parse(),
            Form::Table(table) => {
                let mut keys = ApiKeys::default();
                table
                    .iter()
                    .try_for_each(|(key, scopes)| {
                        let scopes = match scopes {
                            ScopeList::Joined(s) => Scopes::parse(s.split('+')),
                            ScopeList::List(l) => Scopes::parse(l.iter().map(String::as_str)),
                        }?;
                        keys.push(key, scopes)
                    })
                    .map(|()| keys)
            }
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

/// The configured JWT secrets: the first signs, every one verifies.
#[derive(Clone, Default)]
pub struct JwtSecrets(Vec<String>);

impl JwtSecrets {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn check(self) -> Result<JwtSecrets, String> {
        if self.0.iter().any(|s| s.len() < MIN_SECRET_BYTES) {
            return Err(format!(
                "each JWT secret must be at least {MIN_SECRET_BYTES} bytes long"
            ));
        }
        Ok(self)
    }
}

impl fmt::Debug for JwtSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwtSecrets({} secrets, redacted)", self.0.len())
    }
}

/// The environment form: `current,previous`.
impl FromStr for JwtSecrets {
    type Err = String;

    fn from_str(text: &str) -> Result<JwtSecrets, String> {
        JwtSecrets(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
        .check()
    }
}

/// In TOML: a list of secrets, or one comma-separated string.
impl<'de> Deserialize<'de> for JwtSecrets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JwtSecrets, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Joined(String),
            List(Vec<String>),
        }
        match Form::deserialize(d)? {
            Form::Joined(text) => text.parse(),
            Form::List(list) => JwtSecrets(list).check(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// Normalizes an origin for comparison: trimmed, lower-case, no trailing slash.
pub fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Why a credential was refused. Every kind but `Origin` is `unauthorized` (close 4001).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("credentials are required: an API key (X-API-Key or `apiKey`) or a token")]
    Missing,
    #[error("give one credential, not both a token and an API key")]
    Both,
    #[error("the API key is not valid")]
    BadKey,
    #[error("the token is not valid: {0}")]
    BadToken(&'static str),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("this hub has no JWT secret configured, so it takes no tokens")]
    NoSecrets,
    #[error("browser tokens are not accepted from this origin")]
    Origin,
}

impl From<AuthError> for HubError {
    fn from(e: AuthError) -> HubError {
        let code = match e {
            AuthError::Origin => ErrorCode::Forbidden,
            _ => ErrorCode::Unauthorized,
        };
        HubError::new(code, e.to_string())
    }
}

/// What a verified browser token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    pub customer: CustomerId,
    /// When present, publishes must carry this session.
    pub session: Option<SessionId>,
    /// The site's user id the token vouches for (claim `uid`): the only one its
    /// connection may link the customer to. None: it may link none.
    pub user: Option<UserId>,
    /// Seconds since the Unix epoch, leeway included: the token is good until then.
    pub expires_at: u64,
}

/// Who a connection or request acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No credentials configured: everything allowed (loopback only).
    Open,
    /// A server-side API key with its scopes.
    ApiKey { scopes: Scopes },
    /// A browser token: publish and subscribe, limited to one customer.
    Token(TokenGrant),
}

fn forbidden(message: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::Forbidden, message)
}

/// A `forbidden` refusal naming the event field at fault in `details.field`, as
/// `invalid_event` refusals do.
fn forbidden_field(field: &str, message: impl Into<String>) -> HubError {
    HubError {
        details: Some(json!({ "field": field })),
        ..forbidden(message)
    }
}

impl Principal {
    /// The `scope` object of the `connected` frame.
    pub fn scope_json(&self) -> Value {
        match self {
            Principal::Open => json!({ "kind": "open", "scopes": Scopes::all().names() }),
            Principal::ApiKey { scopes } => json!({ "kind": "apiKey", "scopes": scopes.names() }),
            Principal::Token(grant) => {
                let mut scope = json!({
                    "kind": "token",
                    "scopes": ["publish", "subscribe"],
                    "customerId": grant.customer.to_string(),
                    "expiresAt": rfc3339(grant.expires_at),
                });
                if let Some(session) = grant.session {
                    scope["sessionId"] = session.to_string().into();
                }
                if let Some(user) = &grant.user {
                    scope["userId"] = user.as_str().into();
                }
                scope
            }
        }
    }

    /// Refuses with `forbidden` unless the principal holds `scope`. A token holds
    /// `publish` and `subscribe` (for its own customer, see the other checks).
    pub fn require(&self, scope: Scope) -> Result<(), HubError> {
        let held = match self {
            Principal::Open => true,
            Principal::ApiKey { scopes } => scopes.contains(scope),
            Principal::Token(_) => matches!(scope, Scope::Publish | Scope::Subscribe),
        };
        if held {
            Ok(())
        } else {
            Err(forbidden(format!(
                "this credential lacks the `{}` scope",
                scope.as_str()
            )))
        }
    }

    /// Checks a subscription's `where` (also used by its snapshot and replay) and, for a
    /// token, confines it to the token's customer: no `customerId` gets `[sub]`, any other
    /// customer is `forbidden`. A `userId` filter stays allowed: it is ANDed with the
    /// customer, so it can only narrow what the token's customer already sees.
    pub fn limit_filter(&self, filter: &mut Filter) -> Result<(), HubError> {
        self.require(Scope::Subscribe)?;
        let Principal::Token(grant) = self else {
            return Ok(());
        };
        match &filter.customer_ids {
            None => filter.customer_ids = Some(vec![grant.customer]),
            Some(ids) if ids.iter().all(|c| *c == grant.customer) => {}
            Some(_) => {
                return Err(forbidden(
                    "a browser token may only subscribe to its own customer",
                ))
            }
        }
        Ok(())
    }

    /// Checks that the principal may publish `event`: the `publish` scope, and for a
    /// token, the token's customer and (when the token names one) session, and that it
    /// claims no identity the token does not vouch for: a `userId` only when it is the
    /// token's `uid`, and no `channels` at all (a browser could otherwise join any
    /// visitor's profile by naming their user or channel id; servers link those with a key).
    pub fn check_publish(&self, event: &Event) -> Result<(), HubError> {
        self.require(Scope::Publish)?;
        let Principal::Token(grant) = self else {
            return Ok(());
        };
        if event.customer_id() != grant.customer {
            return Err(forbidden(
                "a browser token may only publish its own customer's events",
            ));
        }
        if let Some(session) = grant.session {
            if event.session_id() != Some(session) {
                return Err(forbidden(
                    "this browser token is bound to one session; events must carry its sessionId",
                ));
            }
        }
        let Event::Visitor(visitor) = event else {
            return Ok(());
        };
        if let Some(user) = &visitor.user_id {
            match &grant.user {
                Some(uid) if uid == user => {}
                Some(_) => {
                    return Err(forbidden_field(
                        "userId",
                        "`userId` must be the user id this browser token carries (claim `uid`)",
                    ))
                }
                None => return Err(forbidden_field(
                    "userId",
                    "this browser token carries no user id (claim `uid`), so it cannot link one; \
                         mint the token with \"userId\" or link the user from the server",
                )),
            }
        }
        if visitor.channels.is_some() {
            return Err(forbidden_field(
                "channels",
                "a browser token cannot claim channel identities; link them from the server",
            ));
        }
        Ok(())
    }

    pub fn token(&self) -> Option<&TokenGrant> {
        match self {
            Principal::Token(grant) => Some(grant),
            _ => None,
        }
    }
}

/// The JWT claims the hub reads and writes.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    /// The site's user id the token vouches for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// The verifier and signer built from the configuration.
pub struct Auth {
    keys: ApiKeys,
    decoding: Vec<DecodingKey>,
    encoding: Option<EncodingKey>,
    validation: Validation,
    leeway: u64,
    /// Normalized; empty means every origin is allowed.
    origins: Vec<String>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("keys", &self.keys)
            .field("secrets", &self.decoding.len())
            .field("origins", &self.origins)
            .finish()
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since the Unix epoch as RFC 3339, shaped like every other hub timestamp.
pub fn rfc3339(secs: u64) -> String {
    crate::clock::format_millis(secs.min(i64::MAX as u64 / 1000) as i64 * 1000)
}

impl Auth {
    pub fn new(config: &Config) -> Auth {
        let secrets = &config.jwt_secrets.0;
        let leeway = config.jwt_leeway.as_secs();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Auth {
            keys: config.api_keys.clone(),
            decoding: secrets
                .iter()
                .map(|s| DecodingKey::from_secret(s.as_bytes()))
                .collect(),
            encoding: secrets
                .first()
                .map(|s| EncodingKey::from_secret(s.as_bytes())),
            validation,
            leeway,
            origins: config
                .allowed_origins
                .iter()
                .map(|o| normalize_origin(o))
                .collect(),
        }
    }

    /// Open development mode: no key and no secret configured.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty() && self.decoding.is_empty()
    }

    /// The principal an API key acts as.
    pub fn api_key(&self, key: &str) -> Result<Principal, AuthError> {
        if self.is_open() {
            return Ok(Principal::Open);
        }
        self.keys
            .lookup(key)
            .map(|scopes| Principal::ApiKey { scopes })
            .ok_or(AuthError::BadKey)
    }

    /// Verifies a browser token with every secret in turn.
    pub fn token(&self, token: &str) -> Result<Principal, AuthError> {
        if self.is_open() {
            return Ok(Principal::Open);
        }
        if self.decoding.is_empty() {
            return Err(AuthError::NoSecrets);
        }
        let mut last = AuthError::BadToken("bad signature");
        for key in &self.decoding {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => return self.grant(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => continue,
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                        ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                            AuthError::BadToken(CLAIMS_NEEDED)
                        }
                        ErrorKind::InvalidAlgorithm => AuthError::BadToken("it must be HS256"),
                        _ => AuthError::BadToken("malformed"),
                    };
                    break;
                }
            }
        }
        Err(last)
    }

    fn grant(&self, claims: Claims) -> Result<Principal, AuthError> {
        let customer = CustomerId::parse(&claims.sub)
            .map_err(|_| AuthError::BadToken("`sub` must be a customerId (UUIDv4)"))?;
        let session = claims
            .sid
            .map(|sid| SessionId::parse(&sid))
            .transpose()
            .map_err(|_| AuthError::BadToken("`sid` must be a sessionId (UUIDv4)"))?;
        let user = claims
            .uid
            .map(|uid| match is_user_id(&uid) {
                true => Ok(UserId::from(uid)),
                false => Err(AuthError::BadToken(
                    "`uid` must be a userId of 1 to 256 characters",
                )),
            })
            .transpose()?;
        Ok(Principal::Token(TokenGrant {
            customer,
            session,
            user,
            expires_at: claims.exp.saturating_add(self.leeway),
        }))
    }

    /// The principal of a request or connection from its credentials: a token, or an API
    /// key (from `connect` or the `X-API-Key` header). Open mode ignores credentials.
    pub fn authenticate(
        &self,
        token: Option<&str>,
        api_key: Option<&str>,
    ) -> Result<Principal, AuthError> {
        if self.is_open() {
            return Ok(Principal::Open);
        }
        match (token, api_key) {
            (Some(_), Some(_)) => Err(AuthError::Both),
            (Some(token), None) => self.token(token),
            (None, Some(key)) => self.api_key(key),
            (None, None) => Err(AuthError::Missing),
        }
    }

    /// Whether a browser (token) connection may come from `origin`. With no allow-list
    /// every origin may; with one, a missing `Origin` header may not.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        self.origins.is_empty()
            || origin.is_some_and(|o| self.origins.contains(&normalize_origin(o)))
    }

    /// The normalized allow-list, for CORS.
    pub fn allowed_origins(&self) -> &[String] {
        &self.origins
    }

    /// Mints a token for `customer` (and `session`, and the site's `user`), valid for
    /// `ttl_secs` from now. Returns the token and its expiry (seconds since the Unix epoch).
    pub fn mint(
        &self,
        customer: CustomerId,
        session: Option<SessionId>,
        user: Option<&UserId>,
        ttl_secs: u64,
    ) -> Result<(String, u64), AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::NoSecrets)?;
        let now = now_secs();
        let claims = Claims {
            sub: customer.to_string(),
            exp: now + ttl_secs,
            nbf: None,
            sid: session.map(|s| s.to_string()),
            uid: user.map(|u| u.as_str().to_owned()),
            iat: Some(now),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|_| AuthError::BadToken("cannot sign"))?;
        Ok((token, claims.exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_A: &str = "secret-a-0123456789-0123456789-0123456789";
    const SECRET_B: &str = "secret-b-0123456789-0123456789-0123456789";

    fn auth(keys: &str, secrets: &str) -> Auth {
        Auth::new(&Config {
            api_keys: keys.parse().unwrap(),
            jwt_secrets: secrets.parse().unwrap(),
            jwt_leeway: std::time::Duration::ZERO,
            ..Config::default()
        })
    }

    fn sign(secret: &str, claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn keys_parse_from_env_and_toml_and_never_print() {
        let keys: ApiKeys = "k1=publish+subscribe, k2=admin".parse().unwrap();
        assert_eq!(
            keys.lookup("k1"),
            Some(
                Scopes::default()
                    .with(Scope::Publish)
                    .with(Scope::Subscribe)
            )
        );
        assert_eq!(
            keys.lookup("k2"),
            Some(Scopes::default().with(Scope::Admin))
        );
        assert_eq!(keys.lookup("k3"), None);
        assert!(!format!("{keys:?}").contains("k1"));
        for bad in ["k1", "k1=", "k1=root", "=publish"] {
            assert!(bad.parse::<ApiKeys>().is_err(), "{bad}");
        }
        #[derive(Deserialize)]
        struct File {
            api_keys: ApiKeys,
        }
        let table: File =
            toml::from_str("[api_keys]\nk1 = \"publish\"\nk2 = [\"subscribe\", \"admin\"]\n")
                .unwrap();
        assert_eq!(table.api_keys.len(), 2);
        assert_eq!(
            table.api_keys.lookup("k2"),
            Some(Scopes::default().with(Scope::Subscribe).with(Scope::Admin))
        );
        let list: File = toml::from_str("api_keys = [\"k1=publish\"]\n").unwrap();
        assert!(list.api_keys.lookup("k1").is_some());
        let hashed = format!("sha256:{}=subscribe", hex(&digest("k9")));
        let keys: ApiKeys = hashed.parse().unwrap();
        assert!(keys.lookup("k9").is_some());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!("short".parse::<JwtSecrets>().is_err());
        assert!(SECRET_A.parse::<JwtSecrets>().is_ok());
    }

    #[test]
    fn every_secret_verifies_and_the_first_signs() {
        let auth = auth("", &format!("{SECRET_A},{SECRET_B}"));
        let customer = CustomerId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
        let exp = now_secs() + 60;
        for secret in [SECRET_A, SECRET_B] {
            let token = sign(secret, json!({"sub": customer.to_string(), "exp": exp}));
            let principal = auth.token(&token).unwrap();
            assert_eq!(principal.token().unwrap().customer, customer);
        }
        let (minted, _) = auth.mint(customer, None, None, 60).unwrap();
        let only_a = super::tests::auth("", SECRET_A);
        assert!(only_a.token(&minted).is_ok());
        let only_b = super::tests::auth("", SECRET_B);
        assert_eq!(
            only_b.token(&minted),
            Err(AuthError::BadToken("bad signature"))
        );
    }

    #[test]
    fn token_refusals() {
        let auth = auth("k=publish", SECRET_A);
        let sub = uuid::Uuid::new_v4().to_string();
        let now = now_secs();
        let cases = [
            (json!({"sub": sub, "exp": now - 10}), AuthError::Expired),
            (
                json!({"sub": sub, "exp": now + 60, "nbf": now + 30}),
                AuthError::NotYetValid,
            ),
            (json!({"sub": sub}), AuthError::BadToken(CLAIMS_NEEDED)),
            (
                json!({"sub": "not-a-uuid", "exp": now + 60}),
                AuthError::BadToken("`sub` must be a customerId (UUIDv4)"),
            ),
            (
                json!({"sub": sub, "exp": now + 60, "sid": "x"}),
                AuthError::BadToken("`sid` must be a sessionId (UUIDv4)"),
            ),
        ];
        for (claims, want) in cases {
            assert_eq!(
                auth.token(&sign(SECRET_A, claims.clone())),
                Err(want),
                "{claims}"
            );
        }
        assert!(matches!(auth.token("garbage"), Err(AuthError::BadToken(_))));
        assert_eq!(auth.authenticate(None, None), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some("t"), Some("k")),
            Err(AuthError::Both)
        );
        assert_eq!(auth.api_key("nope"), Err(AuthError::BadKey));
    }

    #[test]
    fn open_mode_allows_everything() {
        let auth = auth("", "");
        assert!(auth.is_open());
        assert_eq!(auth.authenticate(None, None), Ok(Principal::Open));
        assert_eq!(auth.api_key("anything"), Ok(Principal::Open));
    }

    #[test]
    fn origins_compare_normalized() {
        let auth = Auth::new(&Config {
            allowed_origins: vec!["https://Shop.example/".into()],
            ..Config::default()
        });
        assert!(auth.origin_allowed(Some("https://shop.example")));
        assert!(!auth.origin_allowed(Some("https://evil.example")));
        assert!(!auth.origin_allowed(None));
        assert!(Auth::new(&Config::default()).origin_allowed(None));
    }

    #[test]
    fn a_token_filter_is_confined_to_its_customer() {
        let mine = CustomerId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
        let theirs = CustomerId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
        let token = Principal::Token(TokenGrant {
            customer: mine,
            session: None,
            user: None,
            expires_at: 0,
        });
        let mut filter = Filter::default();
        token.limit_filter(&mut filter).unwrap();
        assert_eq!(filter.customer_ids, Some(vec![mine]));
        let mut filter = Filter {
            customer_ids: Some(vec![mine, theirs]),
            ..Filter::default()
        };
        assert_eq!(
            token.limit_filter(&mut filter).unwrap_err().code,
            ErrorCode::Forbidden
        );
        let reader = Principal::ApiKey {
            scopes: Scopes::default().with(Scope::Publish),
        };
        assert_eq!(
            reader
                .limit_filter(&mut Filter::default())
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn a_token_links_only_the_user_id_it_carries_and_no_channels() {
        let customer = CustomerId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
        let session = uuid::Uuid::new_v4();
        let token = |user: Option<&str>| {
            Principal::Token(TokenGrant {
                customer,
                session: None,
                user: user.map(UserId::from),
                expires_at: 0,
            })
        };
        let event = |fields: &str| {
            let text = format!(r#"{{"customerId":"{customer}","sessionId":"{session}",{fields}}}"#);
            Event::from_text(&text).unwrap()
        };
        let refused_field = |principal: &Principal, event: &Event| {
            let e = principal.check_publish(event).unwrap_err();
            assert_eq!(e.code, ErrorCode::Forbidden, "{e:?}");
            e.details.unwrap()["field"].as_str().unwrap().to_owned()
        };
        let alice = token(Some("alice"));
        for kind in ["identify", "signin", "userinfo"] {
            let own = event(&format!(r#""type":"{kind}","userId":"alice""#));
            let other = event(&format!(r#""type":"{kind}","userId":"bob""#));
            assert_eq!(alice.check_publish(&own), Ok(()), "{kind}");
            assert_eq!(refused_field(&alice, &other), "userId", "{kind}");
            assert_eq!(refused_field(&token(None), &own), "userId", "{kind}");
            assert_eq!(Principal::Open.check_publish(&other), Ok(()), "{kind}");
        }
        let channels = event(r#""type":"identify","userId":"alice","channels":{"whatsapp":"1"}"#);
        assert_eq!(refused_field(&alice, &channels), "channels");
        let page = event(r#""type":"page","page":{"url":"https://example.com/"}"#);
        assert_eq!(token(None).check_publish(&page), Ok(()));
        let signout = event(r#""type":"signout""#);
        assert_eq!(token(None).check_publish(&signout), Ok(()));
    }

    #[test]
    fn a_minted_token_carries_its_user_id() {
        let auth = auth("", SECRET_A);
        let customer = CustomerId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
        let user = UserId::from("user-7");
        let (minted, _) = auth.mint(customer, None, Some(&user), 60).unwrap();
        let Principal::Token(grant) = auth.token(&minted).unwrap() else {
            panic!("a token grants a token principal");
        };
        assert_eq!(grant.user, Some(user));
        let now = now_secs();
        for uid in [String::new(), "x".repeat(257)] {
            let token = sign(
                SECRET_A,
                json!({"sub": customer.to_string(), "exp": now + 60, "uid": uid}),
            );
            assert!(matches!(auth.token(&token), Err(AuthError::BadToken(_))));
        }
    }
}
