//! Builders for valid events with fresh UUIDv4s, and small edits that make them invalid.

use serde_json::{json, Value};
use uuid::Uuid;

/// A well-formed UUID of version 1: not the v4 the protocol asks for.
pub(crate) const NOT_V4_UUID: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";

/// A fresh UUIDv4 as the hub writes it (lower-case, hyphenated).
pub(crate) fn uuid() -> String {
    Uuid::new_v4().to_string()
}

/// Small edits on JSON objects, so table rows can say "the valid event, but ...".
pub(crate) trait JsonExt {
    /// The object with `key` set to `value`.
    fn with(self, key: &str, value: Value) -> Value;
    /// The object without `key`.
    fn without(self, key: &str) -> Value;
}

impl JsonExt for Value {
    fn with(mut self, key: &str, value: Value) -> Value {
        self[key] = value;
        self
    }

    fn without(mut self, key: &str) -> Value {
        self.as_object_mut().expect("an object").remove(key);
        self
    }
}

/// A customer with a current session, for building visitor events.
#[derive(Clone, Debug)]
pub(crate) struct Visitor {
    pub(crate) customer_id: String,
    pub(crate) session_id: String,
}

impl Visitor {
    pub(crate) fn new() -> Visitor {
        Visitor {
            customer_id: uuid(),
            session_id: uuid(),
        }
    }

    /// Moves this visitor to a fresh session (the next events carry it).
    pub(crate) fn new_session(&mut self) -> String {
        self.session_id = uuid();
        self.session_id.clone()
    }

    /// A valid visitor event of `kind` in the current session, with the fields its type
    /// requires (`userId` for identify/signin/userinfo is `user`).
    pub(crate) fn event(&self, kind: &str, user: &str) -> Value {
        let mut event = json!({
            "type": kind,
            "customerId": self.customer_id,
            "sessionId": self.session_id,
        });
        match kind {
            "identify" | "signin" | "userinfo" => event["userId"] = json!(user),
            "page" => event["page"] = json!({"url": "https://shop.example/p", "title": "P"}),
            "track" => event["name"] = json!("clicked"),
            _ => {}
        }
        event
    }

    /// A page view in the current session.
    pub(crate) fn page(&self) -> Value {
        self.event("page", "")
    }

    /// A new action of `media` for this visitor, in the current session.
    pub(crate) fn action(&self, media: &str) -> Action {
        Action {
            action_id: uuid(),
            media: media.to_owned(),
            map_id: uuid(),
            map_version: 1,
            customer_id: self.customer_id.clone(),
            session_id: self.session_id.clone(),
        }
    }
}

/// One action: the fields that identify it, from which its lifecycle events are built.
#[derive(Clone, Debug)]
pub(crate) struct Action {
    pub(crate) action_id: String,
    pub(crate) media: String,
    pub(crate) map_id: String,
    pub(crate) map_version: u64,
    pub(crate) customer_id: String,
    pub(crate) session_id: String,
}

impl Action {
    /// An action of `media` for a new customer and session.
    pub(crate) fn new(media: &str) -> Action {
        Visitor::new().action(media)
    }

    /// The same action triggered by map `map_id` at `version`.
    pub(crate) fn on_map(mut self, map_id: &str, version: u64) -> Action {
        self.map_id = map_id.to_owned();
        self.map_version = version;
        self
    }

    /// A valid lifecycle event reporting `state`.
    pub(crate) fn event(&self, state: &str) -> Value {
        json!({
            "actionId": self.action_id,
            "actionState": state,
            "actionMediaType": self.media,
            "actionMapId": self.map_id,
            "actionMapVersion": self.map_version,
            "customerId": self.customer_id,
            "sessionId": self.session_id,
        })
    }

    /// The topic of this action in `state`.
    pub(crate) fn topic(&self, state: &str) -> String {
        format!("{}:{}", self.media, state)
    }
}
