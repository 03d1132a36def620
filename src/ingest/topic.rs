//! Topics, topic patterns and `where` filters (PROTOCOL.md section 4).
//!
//! There are few topics (29), so a topic is a small index and a set of topics is a bitmask:
//! a subscription's patterns are expanded once, at subscribe time, and matching an event's
//! topic is one AND. Filters match against an event's [`EventKeys`], which the sequencer
//! computes once per event. Pure logic: no IO, no state.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::ids::{ActionId, ActionMapId, CustomerId, SegmentId, SessionId, UserId};
use crate::ingest::lifecycle::{ActionState, MediaType};

/// The visitor family's names, in topic order.
pub const VISITOR_NAMES: [&str; 9] = [
    "identify", "signin", "signout", "userinfo", "page", "track", "update", "exit", "merged",
];

/// Topic index layout: webchat states, then contentoffer states, then visitor, then session,
/// then segment (29 of the set's 32 bits).
const WEBCHAT_BASE: u8 = 0;
const CONTENT_OFFER_BASE: u8 = 10;
const VISITOR_BASE: u8 = 16;
const SESSION_BASE: u8 = 25;
const SEGMENT_BASE: u8 = 27;
const TOPIC_COUNT: u8 = 29;

/// A concrete topic, `<family>:<name>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(u8);

static TOPIC_NAMES: [&str; TOPIC_COUNT as usize] = [
    "webchat:qualified",
    "webchat:offered",
    "webchat:accepted",
    "webchat:rejected",
    "webchat:ignored",
    "webchat:timedout",
    "webchat:errored",
    "webchat:started",
    "webchat:engaged",
    "webchat:ended",
    "contentoffer:qualified",
    "contentoffer:offered",
    "contentoffer:accepted",
    "contentoffer:rejected",
    "contentoffer:ignored",
    "contentoffer:errored",
    "visitor:identify",
    "visitor:signin",
    "visitor:signout",
    "visitor:userinfo",
    "visitor:page",
    "visitor:track",
    "visitor:update",
    "visitor:exit",
    "visitor:merged",
    "session:started",
    "session:ended",
    "segment:entered",
    "segment:left",
];

impl Topic {
    pub const SESSION_STARTED: Topic = Topic(SESSION_BASE);
    pub const SESSION_ENDED: Topic = Topic(SESSION_BASE + 1);
    pub const VISITOR_MERGED: Topic = Topic(VISITOR_BASE + 8);
    pub const SEGMENT_ENTERED: Topic = Topic(SEGMENT_BASE);
    pub const SEGMENT_LEFT: Topic = Topic(SEGMENT_BASE + 1);

    /// The topic of a lifecycle event. `state` must belong to `media`.
    pub fn lifecycle(media: MediaType, state: ActionState) -> Topic {
        let (base, states) = match media {
            MediaType::Webchat => (WEBCHAT_BASE, media.states()),
            MediaType::ContentOffer => (CONTENT_OFFER_BASE, media.states()),
        };
        let offset = states
            .iter()
            .position(|s| *s == state)
            .expect("state checked against its media type before a topic is made");
        Topic(base + offset as u8)
    }

    /// The topic of a visitor event, by its index in [`VISITOR_NAMES`].
    pub fn visitor(index: usize) -> Topic {
        assert!(index < VISITOR_NAMES.len());
        Topic(VISITOR_BASE + index as u8)
    }

    pub fn as_str(self) -> &'static str {
        TOPIC_NAMES[self.0 as usize]
    }

    /// Every topic.
    pub fn all() -> impl Iterator<Item = Topic> {
        (0..TOPIC_COUNT).map(Topic)
    }

    fn family(self) -> &'static str {
        self.as_str().split_once(':').map_or("", |(f, _)| f)
    }

    fn name(self) -> &'static str {
        self.as_str().split_once(':').map_or("", |(_, n)| n)
    }

    fn bit(self) -> u32 {
        1 << self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.as_str())
    }
}

/// A set of topics, the expansion of one or more patterns.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct TopicSet(u32);

impl TopicSet {
    pub fn contains(self, topic: Topic) -> bool {
        self.0 & topic.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Topic> {
        Topic::all().filter(move |t| self.contains(*t))
    }

    /// Parses one pattern: `family:name`, either side `all`, or a bare `all`.
    pub fn parse_pattern(pattern: &str) -> Result<TopicSet, String> {
        let (family, name) = match pattern.split_once(':') {
            Some(parts) => parts,
            None if pattern == "all" => ("all", "all"),
            None => {
                return Err(format!(
                    "topic pattern {pattern:?} is not `family:name` or `all`"
                ))
            }
        };
        let known_family = family == "all" || Topic::all().any(|t| t.family() == family);
        if !known_family {
            return Err(format!(
                "unknown topic family {family:?} in {pattern:?}; families are webchat, \
                 contentoffer, visitor, session, segment"
            ));
        }
        let set = Topic::all()
            .filter(|t| family == "all" || t.family() == family)
            .filter(|t| name == "all" || t.name() == name)
            .fold(0, |bits, t| bits | t.bit());
        if set == 0 {
            return Err(format!("unknown topic name {name:?} in {pattern:?}"));
        }
        Ok(TopicSet(set))
    }

    /// Parses a non-empty list of patterns into their union.
    pub fn parse_patterns<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<TopicSet, String> {
        let mut bits = 0;
        let mut any = false;
        for pattern in patterns {
            bits |= TopicSet::parse_pattern(pattern)?.0;
            any = true;
        }
        if !any {
            return Err("`topics` must name at least one pattern".into());
        }
        Ok(TopicSet(bits))
    }
}

/// What a filter can look at in an event, computed once when the event is accepted.
#[derive(Clone, Debug)]
pub struct EventKeys {
    pub topic: Topic,
    pub customer: CustomerId,
    /// Further customers an event is about (`visitor:merged` names all it merged).
    pub other_customers: Option<Arc<[CustomerId]>>,
    pub session: Option<SessionId>,
    pub action: Option<ActionId>,
    pub action_map: Option<ActionMapId>,
    pub action_map_version: Option<u32>,
    /// The segment a `segment:*` event is about.
    pub segment: Option<SegmentId>,
}

impl EventKeys {
    /// The keys of an erased event: a nil customer, no topic anyone can subscribe to
    /// through a customer filter.
    pub fn erased() -> EventKeys {
        EventKeys {
            topic: Topic::SESSION_ENDED,
            customer: CustomerId(uuid::Uuid::nil()),
            other_customers: None,
            session: None,
            action: None,
            action_map: None,
            action_map_version: None,
            segment: None,
        }
    }

    /// Every customer the event is about, the primary one first.
    pub fn customers(&self) -> impl Iterator<Item = CustomerId> + '_ {
        std::iter::once(self.customer)
            .chain(self.other_customers.iter().flat_map(|c| c.iter().copied()))
    }
}

/// A `where` filter: field -> allowed values, AND across fields, OR within a list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub customer_ids: Option<Vec<CustomerId>>,
    pub session_ids: Option<Vec<SessionId>>,
    pub action_ids: Option<Vec<ActionId>>,
    pub action_map_ids: Option<Vec<ActionMapId>>,
    pub action_map_versions: Option<Vec<u32>>,
    pub user_ids: Option<Vec<UserId>>,
    pub segment_ids: Option<Vec<SegmentId>>,
}

fn allows<T: PartialEq>(allowed: &Option<Vec<T>>, value: Option<T>) -> bool {
    match allowed {
        None => true,
        Some(list) => value.is_some_and(|v| list.contains(&v)),
    }
}

impl Filter {
    /// Parses a `where` object. Unknown fields, empty lists and malformed values are refused.
    pub fn parse(value: &Value) -> Result<Filter, String> {
        let object = value
            .as_object()
            .ok_or("`where` must be an object of field -> list of values")?;
        let mut filter = Filter::default();
        for (field, values) in object {
            let list = values
                .as_array()
                .ok_or_else(|| format!("`where.{field}` must be a list"))?;
            if list.is_empty() {
                return Err(format!(
                    "`where.{field}` is an empty list, which would match nothing"
                ));
            }
            match field.as_str() {
                "customerId" => {
                    filter.customer_ids = Some(parse_ids(field, list, CustomerId::parse)?)
                }
                "sessionId" => filter.session_ids = Some(parse_ids(field, list, SessionId::parse)?),
                "actionId" => filter.action_ids = Some(parse_ids(field, list, ActionId::parse)?),
                "actionMapId" => {
                    filter.action_map_ids = Some(parse_ids(field, list, ActionMapId::parse)?)
                }
                "actionMapVersion" => {
                    let versions = list
                        .iter()
                        .map(|v| {
                            v.as_u64()
                                .filter(|n| (1..=u32::MAX as u64).contains(n))
                                .map(|n| n as u32)
                                .ok_or_else(|| {
                                    format!(
                                        "`where.actionMapVersion` values must be integers from 1 to {}, got {v}",
                                        u32::MAX
                                    )
                                })
                        })
                        .collect::<Result<_, _>>()?;
                    filter.action_map_versions = Some(versions);
                }
                "userId" => {
                    let users = list
                        .iter()
                        .map(|v| {
                            v.as_str()
                                .filter(|s| !s.is_empty())
                                .map(UserId::from)
                                .ok_or_else(|| {
                                    format!(
                                        "`where.userId` values must be non-empty strings, got {v}"
                                    )
                                })
                        })
                        .collect::<Result<_, _>>()?;
                    filter.user_ids = Some(users);
                }
                "segmentId" => {
                    let segments = list
                        .iter()
                        .map(|v| {
                            v.as_str()
                                .and_then(|s| SegmentId::parse(s).ok())
                                .ok_or_else(|| {
                                    format!(
                                        "`where.segmentId` values must be segment ids (seg_<n>), got {v}"
                                    )
                                })
                        })
                        .collect::<Result<_, _>>()?;
                    filter.segment_ids = Some(segments);
                }
                other => {
                    return Err(format!(
                        "unknown `where` field {other:?}; fields are customerId, sessionId, \
                         actionId, actionMapId, actionMapVersion, userId, segmentId"
                    ))
                }
            }
        }
        filter.dedup();
        Ok(filter)
    }

    /// Drops repeated values from each list, keeping the first of each.
    fn dedup(&mut self) {
        fn unique<T: PartialEq + Clone>(list: &mut Option<Vec<T>>) {
            if let Some(list) = list {
                let mut seen: Vec<T> = Vec::with_capacity(list.len());
                list.retain(|v| {
                    let new = !seen.contains(v);
                    if new {
                        seen.push(v.clone());
                    }
                    new
                });
            }
        }
        unique(&mut self.customer_ids);
        unique(&mut self.session_ids);
        unique(&mut self.action_ids);
        unique(&mut self.action_map_ids);
        unique(&mut self.action_map_versions);
        unique(&mut self.user_ids);
        unique(&mut self.segment_ids);
    }

    /// Whether an event with these keys passes. `linked_users` gives the userIds linked to
    /// the event's customer; it is called only when the filter names `userId`.
    pub fn matches(
        &self,
        keys: &EventKeys,
        linked_users: impl FnOnce() -> Option<Arc<[UserId]>>,
    ) -> bool {
        if let Some(customers) = &self.customer_ids {
            if !keys.customers().any(|c| customers.contains(&c)) {
                return false;
            }
        }
        let fields_pass = allows(&self.session_ids, keys.session)
            && allows(&self.action_ids, keys.action)
            && allows(&self.action_map_ids, keys.action_map)
            && allows(&self.action_map_versions, keys.action_map_version)
            && allows(&self.segment_ids, keys.segment);
        if !fields_pass {
            return false;
        }
        match &self.user_ids {
            None => true,
            Some(wanted) => {
                linked_users().is_some_and(|linked| linked.iter().any(|u| wanted.contains(u)))
            }
        }
    }

    /// Whether this filter names no field at all.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

fn parse_ids<T>(
    field: &str,
    list: &[Value],
    parse: impl Fn(&str) -> Result<T, crate::ids::BadId>,
) -> Result<Vec<T>, String> {
    list.iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| parse(s).ok())
                .ok_or_else(|| format!("`where.{field}` values must be UUIDv4 strings, got {v}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(patterns: &[&str]) -> Vec<&'static str> {
        TopicSet::parse_patterns(patterns.iter().copied())
            .unwrap()
            .iter()
            .map(Topic::as_str)
            .collect()
    }

    #[test]
    fn topic_table_matches_the_lifecycles() {
        for media in MediaType::ALL {
            for &state in media.states() {
                assert_eq!(
                    Topic::lifecycle(media, state).as_str(),
                    format!("{media}:{state}")
                );
            }
        }
        for (i, name) in VISITOR_NAMES.iter().enumerate() {
            assert_eq!(Topic::visitor(i).as_str(), format!("visitor:{name}"));
        }
        assert_eq!(Topic::SESSION_ENDED.as_str(), "session:ended");
        assert_eq!(Topic::VISITOR_MERGED.as_str(), "visitor:merged");
    }

    #[test]
    fn patterns_expand() {
        assert_eq!(set(&["webchat:offered"]), ["webchat:offered"]);
        assert_eq!(
            set(&["all:offered"]),
            ["webchat:offered", "contentoffer:offered"]
        );
        assert_eq!(
            set(&["all:started"]),
            ["webchat:started", "session:started"]
        );
        assert_eq!(set(&["contentoffer:all"]).len(), 6);
        assert_eq!(set(&["all"]).len(), 29);
        assert_eq!(set(&["all:all"]).len(), 29);
        assert_eq!(set(&["segment:all"]), ["segment:entered", "segment:left"]);
        assert_eq!(
            set(&["session:all", "visitor:merged"]),
            ["visitor:merged", "session:started", "session:ended"]
        );
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "chat:all",
            "webchat:started2",
            "contentoffer:started",
            "visitor:offered",
            "all:nothing",
            "webchat",
            "",
            "webchat:",
            ":offered",
            "ALL",
        ] {
            assert!(TopicSet::parse_pattern(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TopicSet::parse_patterns([]).is_err());
    }

    const C1: &str = "11111111-1111-4111-8111-111111111111";
    const C2: &str = "22222222-2222-4222-8222-222222222222";
    const M1: &str = "33333333-3333-4333-8333-333333333333";

    fn lifecycle_keys(customer: &str) -> EventKeys {
        EventKeys {
            topic: Topic::lifecycle(MediaType::Webchat, ActionState::Offered),
            customer: CustomerId::parse(customer).unwrap(),
            other_customers: None,
            session: Some(SessionId::new_random()),
            action: Some(ActionId::new_random()),
            action_map: Some(ActionMapId::parse(M1).unwrap()),
            action_map_version: Some(3),
            segment: None,
        }
    }

    fn no_users() -> Option<Arc<[UserId]>> {
        None
    }

    #[test]
    fn filters_and_across_fields_or_within_lists() {
        let keys = lifecycle_keys(C1);
        let cases = [
            (json!({}), true),
            (json!({"customerId": [C1]}), true),
            (json!({"customerId": [C2]}), false),
            (json!({"customerId": [C2, C1]}), true),
            (json!({"customerId": [C1], "actionMapVersion": [3]}), true),
            (json!({"customerId": [C1], "actionMapVersion": [4]}), false),
            (
                json!({"actionMapId": [M1], "actionMapVersion": [1, 3]}),
                true,
            ),
            (json!({"userId": ["u1"]}), false),
        ];
        for (filter, expected) in cases {
            let parsed = Filter::parse(&filter).unwrap();
            assert_eq!(parsed.matches(&keys, no_users), expected, "{filter}");
        }
    }

    #[test]
    fn a_missing_field_does_not_match() {
        let mut keys = lifecycle_keys(C1);
        keys.action_map = None;
        keys.action_map_version = None;
        let filter = Filter::parse(&json!({"actionMapId": [M1]})).unwrap();
        assert!(!filter.matches(&keys, no_users));
    }

    #[test]
    fn user_filter_uses_the_linked_users() {
        let keys = lifecycle_keys(C1);
        let filter = Filter::parse(&json!({"userId": ["alice"]})).unwrap();
        let linked: Arc<[UserId]> = Arc::from(vec![UserId::from("bob"), UserId::from("alice")]);
        assert!(filter.matches(&keys, || Some(linked.clone())));
        assert!(!filter.matches(&keys, || Some(Arc::from(vec![UserId::from("bob")]))));
    }

    #[test]
    fn merged_events_match_every_customer_they_name() {
        let mut keys = lifecycle_keys(C1);
        keys.other_customers = Some(Arc::from(vec![CustomerId::parse(C2).unwrap()]));
        let filter = Filter::parse(&json!({"customerId": [C2]})).unwrap();
        assert!(filter.matches(&keys, no_users));
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in [
            json!([]),
            json!({"customerID": [C1]}),
            json!({"customerId": []}),
            json!({"customerId": C1}),
            json!({"customerId": ["not-a-uuid"]}),
            json!({"actionMapVersion": [0]}),
            json!({"actionMapVersion": ["3"]}),
            json!({"userId": [""]}),
            json!({"userId": [5]}),
        ] {
            assert!(Filter::parse(&bad).is_err(), "{bad} accepted");
        }
    }
}
