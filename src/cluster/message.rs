//! One stream message: a batch of proposals from one node, as JSON.
//!
//! ```json
//! {"origin":"<the proposing process>","proposals":[
//!   {"req":7,"input":{"publish":[{..an event as published..}]}},
//!   {"req":8,"input":{"admin":{"visitor":"<uuid>","change":"anonymize"}}},
//!   {"req":9,"input":"tick"}]}
//! ```
//!
//! A proposer that gave up on requests (see [`super::order`]) says so with a message of no
//! proposals: `{"origin":"..","proposals":[],"skip":[first,last]}`.
//!
//! `origin` and `req` route an outcome back to its waiter, and keep each origin's messages
//! in the order it proposed them ([`super::order`]); what every node decides depends on the
//! inputs, in that order, alone. Events are written as the client published them and read
//! back through the same validation (`Event::from_text`), so a node of another release
//! that refuses one refuses it in its place rather than skipping the message.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{ErrorCode, HubError};
use crate::hub::inputs::{Input, SegmentChange};
use crate::hub::AdminChange;
use crate::ids::VisitorId;
use crate::ingest::event::Event;

/// The opening of a message, up to its first proposal.
pub(super) fn opening(origin: &str) -> Vec<u8> {
    let mut text =
        serde_json::to_vec(&serde_json::json!({ "origin": origin })).expect("a string serializes");
    text.pop(); // the closing brace
    text.extend_from_slice(br#","proposals":["#);
    text
}

/// What closes a message after its last proposal.
pub(super) const CLOSING: &[u8] = b"]}";

/// One proposal as it goes into a message (without the comma between two).
pub(super) fn proposal(req: u64, input: &Input) -> Vec<u8> {
    let wire = WireProposal {
        req,
        input: WireInput::from(input),
    };
    serde_json::to_vec(&wire).expect("inputs serialize to JSON")
}

/// A skip: `origin` gave up on requests `first..=last`.
pub(super) fn skip(origin: &str, first: u64, last: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "origin": origin,
        "proposals": [],
        "skip": [first, last],
    }))
    .expect("a skip serializes")
}

/// A message read back: who proposed it, and its inputs with their request numbers.
pub(super) struct Message {
    pub(super) origin: String,
    pub(super) proposals: Vec<(u64, Input)>,
    /// The requests it covers, first and last (a skip's, for a skip); `None` for a message
    /// that covers none.
    pub(super) reqs: Option<(u64, u64)>,
}

/// Reads a message; `Err` when it is not one (nothing a node wrote, or damaged).
pub(super) fn read(payload: &[u8]) -> Result<Message, serde_json::Error> {
    let wire: WireMessage = serde_json::from_slice(payload)?;
    let reqs = match (wire.proposals.first(), wire.proposals.last()) {
        (Some(first), Some(last)) => Some((first.req, last.req)),
        _ => wire.skip,
    };
    let proposals = wire
        .proposals
        .into_iter()
        .map(|p| (p.req, p.input.into_input()))
        .collect();
    Ok(Message {
        origin: wire.origin,
        proposals,
        reqs,
    })
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    origin: String,
    #[serde(borrow)]
    proposals: Vec<WireProposalIn<'a>>,
    #[serde(default)]
    skip: Option<(u64, u64)>,
}

#[derive(Serialize)]
struct WireProposal<'a> {
    req: u64,
    input: WireInput<'a>,
}

#[derive(Deserialize)]
struct WireProposalIn<'a> {
    req: u64,
    #[serde(borrow)]
    input: WireInputIn<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum WireInput<'a> {
    Publish(Vec<&'a Event>),
    Admin {
        visitor: VisitorId,
        change: WireChange<'a>,
    },
    Merge {
        source: VisitorId,
        target: VisitorId,
    },
    Tick,
    Segment(&'a SegmentChange),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum WireInputIn<'a> {
    #[serde(borrow)]
    Publish(Vec<&'a RawValue>),
    Admin {
        visitor: VisitorId,
        change: WireChangeIn,
    },
    Merge {
        source: VisitorId,
        target: VisitorId,
    },
    Tick,
    Segment(SegmentChange),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum WireChange<'a> {
    Traits(&'a Map<String, Value>),
    Update {
        traits: &'a Map<String, Value>,
        company: &'a Map<String, Value>,
    },
    Anonymize,
    Delete,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum WireChangeIn {
    Traits(Map<String, Value>),
    Update {
        traits: Map<String, Value>,
        company: Map<String, Value>,
    },
    Anonymize,
    Delete,
}

impl<'a> From<&'a Input> for WireInput<'a> {
    fn from(input: &'a Input) -> Self {
        match input {
            // Only valid events are proposed (a refusal stays with its node).
            Input::Publish(events) => WireInput::Publish(events.iter().flatten().collect()),
            Input::Admin { visitor, change } => WireInput::Admin {
                visitor: *visitor,
                change: match change {
                    // A change without a company is written as releases before companies
                    // wrote it, so they read it still.
                    AdminChange::UpdateTraits {
                        traits,
                        company: None,
                    } => WireChange::Traits(traits),
                    AdminChange::UpdateTraits {
                        traits,
                        company: Some(company),
                    } => WireChange::Update { traits, company },
                    AdminChange::Anonymize => WireChange::Anonymize,
                    AdminChange::Delete => WireChange::Delete,
                },
            },
            Input::Merge { source, target } => WireInput::Merge {
                source: *source,
                target: *target,
            },
            Input::Tick => WireInput::Tick,
            Input::Segment(change) => WireInput::Segment(change),
        }
    }
}

impl WireInputIn<'_> {
    fn into_input(self) -> Input {
        match self {
            WireInputIn::Publish(events) => Input::Publish(
                events
                    .into_iter()
                    .map(|event| Event::from_text(event.get()).map_err(from_another_release))
                    .collect(),
            ),
            WireInputIn::Admin { visitor, change } => Input::Admin {
                visitor,
                change: match change {
                    WireChangeIn::Traits(traits) => AdminChange::UpdateTraits {
                        traits,
                        company: None,
                    },
                    WireChangeIn::Update { traits, company } => AdminChange::UpdateTraits {
                        traits,
                        company: Some(company),
                    },
                    WireChangeIn::Anonymize => AdminChange::Anonymize,
                    WireChangeIn::Delete => AdminChange::Delete,
                },
            },
            WireInputIn::Merge { source, target } => Input::Merge { source, target },
            WireInputIn::Tick => Input::Tick,
            WireInputIn::Segment(change) => Input::Segment(change),
        }
    }
}

/// An event its proposer accepted that this node's validation refuses: only a node of
/// another release can have proposed it. Every node of this release refuses it the same
/// way, so they still agree.
fn from_another_release(refused: HubError) -> HubError {
    HubError::new(
        ErrorCode::InvalidEvent,
        format!(
            "{} (accepted by the node that received it, refused by this release)",
            refused.message
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(origin: &str, proposals: &[(u64, Input)]) -> Vec<u8> {
        let mut text = opening(origin);
        for (i, (req, input)) in proposals.iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            text.extend(proposal(*req, input));
        }
        text.extend_from_slice(CLOSING);
        text
    }

    #[test]
    fn a_message_reads_back_as_the_inputs_written() {
        let customer = uuid::Uuid::new_v4();
        let visitor_id = VisitorId(customer);
        let event = Event::from_text(&format!(
            r#"{{"type":"page","customerId":"{customer}","sessionId":"{}","page":{{"url":"https://a.example/x?q=1"}},"eventId":"e-1"}}"#,
            uuid::Uuid::new_v4()
        ))
        .unwrap();
        let mut traits = Map::new();
        traits.insert("plan".into(), "premium".into());
        let mut company = Map::new();
        company.insert("id".into(), "acme".into());
        let inputs = vec![
            (1, Input::Publish(vec![Ok(event.clone())])),
            (
                2,
                Input::Admin {
                    visitor: visitor_id,
                    change: AdminChange::UpdateTraits {
                        traits: traits.clone(),
                        company: Some(company.clone()),
                    },
                },
            ),
            (
                3,
                Input::Admin {
                    visitor: visitor_id,
                    change: AdminChange::Delete,
                },
            ),
            (
                4,
                Input::Merge {
                    source: visitor_id,
                    target: visitor_id,
                },
            ),
            (5, Input::Tick),
        ];
        let message = read(&write("node \"a\"", &inputs)).unwrap();
        assert_eq!(message.origin, "node \"a\"");
        let reqs: Vec<u64> = message.proposals.iter().map(|(req, _)| *req).collect();
        assert_eq!(reqs, [1, 2, 3, 4, 5]);
        assert_eq!(message.reqs, Some((1, 5)));
        let inputs: Vec<Input> = message.proposals.into_iter().map(|(_, i)| i).collect();
        match &inputs[..] {
            [Input::Publish(events), Input::Admin {
                visitor,
                change:
                    AdminChange::UpdateTraits {
                        traits: read_traits,
                        company: Some(read_company),
                    },
            }, Input::Admin {
                change: AdminChange::Delete,
                ..
            }, Input::Merge { source, target }, Input::Tick] => {
                assert_eq!(events.len(), 1);
                assert_eq!(events[0].as_ref().unwrap(), &event);
                assert_eq!(*visitor, visitor_id);
                assert_eq!(read_traits, &traits);
                assert_eq!(read_company, &company);
                assert_eq!((*source, *target), (visitor_id, visitor_id));
            }
            other => panic!("read back as {other:?}"),
        }
    }

    #[test]
    fn refused_events_are_not_proposed() {
        let refused = Err(HubError::bad_request("no"));
        let text = proposal(1, &Input::Publish(vec![refused]));
        assert_eq!(
            String::from_utf8(text).unwrap(),
            r#"{"req":1,"input":{"publish":[]}}"#
        );
    }

    #[test]
    fn what_no_node_wrote_is_not_a_message() {
        assert!(read(b"{\"hello\":1}").is_err());
        assert!(read(b"\xff").is_err());
    }

    #[test]
    fn a_skip_reads_back_as_no_inputs_over_its_requests() {
        let message = read(&skip("n/1", 7, 9)).unwrap();
        assert_eq!(message.origin, "n/1");
        assert!(message.proposals.is_empty());
        assert_eq!(message.reqs, Some((7, 9)));
    }
}
