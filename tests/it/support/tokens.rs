//! Browser tokens (HS256 JWTs) as a site's backend mints them, for hubs configured with a
//! secret.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// Seconds since the Unix epoch, the unit of a token's `exp`.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `claims` signed with `secret`.
pub(crate) fn sign(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A token for `customer`, valid for an hour, signed with `secret`.
pub(crate) fn token(secret: &str, customer: &str) -> String {
    sign(secret, json!({"sub": customer, "exp": unix_now() + 3600}))
}
