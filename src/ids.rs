//! Named identifier types: customers, visitors, sessions, actions, action maps, the site's
//! user ids, channel user ids, connections, seqs.
//!
//! Ids arrive as strings; this module alone decides what a valid UUID id is (a UUID of
//! version 4 in its hyphenated form) and how it is written back (lower case). A user id is
//! the site's own text, kept as it came (validation bounds its length), and so is a channel
//! user id. It does no IO.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Why a string is not a valid UUIDv4 id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be a UUIDv4 in hyphenated form")]
pub struct BadId;

/// Parses a hyphenated UUID of version 4 (either case).
pub fn parse_uuid_v4(text: &str) -> Result<Uuid, BadId> {
    if text.len() != 36 {
        return Err(BadId);
    }
    let uuid = Uuid::try_parse(text).map_err(|_| BadId)?;
    if uuid.get_version() == Some(uuid::Version::Random) {
        Ok(uuid)
    } else {
        Err(BadId)
    }
}

/// A UUIDv4 as the ids' parser takes it (any case, hyphenated) and writes it.
fn uuid_v4_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uuid".into())))
        .pattern(Some(
            "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        ))
        .into()
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Parses a UUIDv4 in hyphenated form.
            pub fn parse(text: &str) -> Result<Self, BadId> {
                parse_uuid_v4(text).map($name)
            }

            /// A fresh random id.
            pub fn new_random() -> Self {
                $name(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut buf = Uuid::encode_buffer();
                s.serialize_str(self.0.hyphenated().encode_lower(&mut buf))
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                uuid_v4_schema()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

uuid_id!(
    /// One browser identity (a first-party cookie).
    CustomerId
);
uuid_id!(
    /// One web session of a customer.
    SessionId
);
uuid_id!(
    /// One web action shown to a customer.
    ActionId
);
uuid_id!(
    /// The action map that triggered an action.
    ActionMapId
);
uuid_id!(
    /// One visitor: a profile of customers known to be one person, or a customer no profile
    /// holds yet. It is named by the customer it began with (see
    /// [`VisitorId::of_first_customer`]).
    VisitorId
);

impl VisitorId {
    /// The visitor that begins with `customer`, named by its id. A lone customer is a visitor
    /// under its own id, and the profile made for it (when it first links to a user id, or
    /// a merge or a traits change needs one) keeps that id whoever joins or leaves later.
    /// So the two ids coincide only for a visitor's first customer, and code that names a
    /// visitor by a customer says so through this.
    pub fn of_first_customer(customer: CustomerId) -> VisitorId {
        VisitorId(customer.0)
    }

    /// The customer this visitor began with (the inverse of
    /// [`VisitorId::of_first_customer`]). The visitor of a lone customer is that customer;
    /// a profile may have outlived it (an evicted customer leaves its profile), so callers
    /// look the customer up rather than assume it is still held.
    pub fn first_customer(self) -> CustomerId {
        CustomerId(self.0)
    }
}

/// The site's own id for a signed-in user (`userId`), as the site gave it. It wraps the
/// `String` the event arrived with, so naming it costs no allocation; it serializes as that
/// string, and borrows as `str` so maps keyed by it are looked up with a `&str`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl utoipa::PartialSchema for UserId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <String as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for UserId {}

impl UserId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for UserId {
    fn from(text: String) -> UserId {
        UserId(text)
    }
}

impl From<&str> for UserId {
    fn from(text: &str) -> UserId {
        UserId(text.to_owned())
    }
}

// `Hash` and `Eq` are the wrapped string's, as `Borrow` requires.
impl Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A company's id, as the site gave it in an identity event's `company.id` (or a
/// visitor update's). Compared exactly; serializes as that string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CompanyId(String);

impl utoipa::PartialSchema for CompanyId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <String as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for CompanyId {}

impl CompanyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for CompanyId {
    fn from(text: &str) -> CompanyId {
        CompanyId(text.to_owned())
    }
}

// `Hash` and `Eq` are the wrapped string's, as `Borrow` requires.
impl Borrow<str> for CompanyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CompanyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A visitor's id on a communication channel (`channels` of an identity event: WhatsApp,
/// Telegram, ...): the channel's name and the id the channel gives the user, both as the
/// site sent them and compared exactly. One names at most one visitor, as a `userId` does.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ChannelUserId {
    channel: String,
    user: String,
}

impl ChannelUserId {
    pub fn new(channel: &str, user: &str) -> ChannelUserId {
        ChannelUserId {
            channel: channel.to_owned(),
            user: user.to_owned(),
        }
    }

    /// The channel ids a `channels` object holds, in channel name order (the object's own
    /// order). Validation admits only string ids; anything else names no one.
    pub fn all_in(
        channels: &serde_json::Map<String, serde_json::Value>,
    ) -> impl Iterator<Item = ChannelUserId> + '_ {
        channels
            .iter()
            .filter_map(|(channel, user)| Some(ChannelUserId::new(channel, user.as_str()?)))
    }
}

impl fmt::Display for ChannelUserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} id {:?}", self.channel, self.user)
    }
}

/// The position of an accepted event in the hub's one history. Strictly increasing; 0 means
/// "before the first event".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl utoipa::PartialSchema for Seq {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <u64 as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Seq {}

impl Seq {
    /// The seq that follows this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A segment, numbered by the hub in the order segments are created (the number comes from
/// the state, so every node of a cluster gives the same segment the same id). Written
/// `seg_<n>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct SegmentId(pub u64);

impl SegmentId {
    /// Parses `seg_<n>` as [`SegmentId`]'s `Display` writes it.
    pub fn parse(text: &str) -> Result<SegmentId, BadId> {
        let digits = text.strip_prefix("seg_").ok_or(BadId)?;
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(BadId);
        }
        digits.parse().map(SegmentId).map_err(|_| BadId)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seg_{}", self.0)
    }
}

/// `seg_<n>`, as [`SegmentId::parse`] takes it.
impl utoipa::PartialSchema for SegmentId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^seg_[1-9][0-9]*$"))
            .into()
    }
}

impl utoipa::ToSchema for SegmentId {}

impl Serialize for SegmentId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SegmentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        SegmentId::parse(&text).map_err(|_| {
            serde::de::Error::custom(format!("{text:?} is not a segment id (seg_<n>)"))
        })
    }
}

/// One WebSocket connection, for logs and for the fan-out index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_hyphenated_v4() {
        let v4 = "9f1c2a4e-3b7d-4c1e-8a2b-0123456789ab";
        assert!(CustomerId::parse(v4).is_ok());
        assert!(CustomerId::parse(&v4.to_uppercase()).is_ok());
        // Version 1 and the simple (unhyphenated) form are refused.
        assert!(CustomerId::parse("9f1c2a4e-3b7d-1c1e-8a2b-0123456789ab").is_err());
        assert!(CustomerId::parse("9f1c2a4e3b7d4c1e8a2b0123456789ab").is_err());
        assert!(CustomerId::parse("").is_err());
    }

    #[test]
    fn a_user_id_is_its_string_on_the_wire_and_in_a_map() {
        let id = UserId::from("u-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"u-1\"");
        assert_eq!(serde_json::from_str::<UserId>("\"u-1\"").unwrap(), id);
        let map = std::collections::HashMap::from([(id.clone(), 1)]);
        assert_eq!(map.get("u-1"), Some(&1));
        assert_eq!(id.to_string(), "u-1");
    }

    #[test]
    fn a_visitor_takes_the_id_of_its_first_customer() {
        let customer = CustomerId::new_random();
        let visitor = VisitorId::of_first_customer(customer);
        assert_eq!(visitor.to_string(), customer.to_string());
        assert_eq!(visitor.first_customer(), customer);
    }

    #[test]
    fn serializes_lower_case() {
        let id = ActionId::parse("9F1C2A4E-3B7D-4C1E-8A2B-0123456789AB").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"9f1c2a4e-3b7d-4c1e-8a2b-0123456789ab\""
        );
    }
}
