//! The actionhub driver: PROTOCOL.md version 1 as a black-box client speaks it.
//!
//! `/v1/ws` with subprotocol `actionhub.v1`; `connect` first, then `subscribe` or
//! pipelined `publish` frames with numeric ids. Frames from the hub are read with only
//! the fields the generator needs, borrowing from the frame where it can.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::Message;

use crate::target::{ws_request, Decoder, Delivery, Incoming, Interest, Position, Target, Ws};
use crate::workload::{Customers, LifecycleEvent};

/// The hub's WebSocket path and subprotocol.
const WS_PATH: &str = "/v1/ws";
const SUBPROTOCOL: &str = "actionhub.v1";

/// Ids of the set-up frames. Their replies are awaited before anything else is sent, so
/// publish ids may reuse the numbers.
const CONNECT_ID: u64 = 0;
const SUBSCRIBE_ID: u64 = 1;

/// Drives actionhub.
#[derive(Debug)]
pub(crate) struct Hub {
    /// Maps delivered customerIds back to the run's customer indexes.
    customers: Arc<Customers>,
    /// Sent in `connect` when the hub is not in open mode.
    api_key: Option<String>,
}

impl Hub {
    pub(crate) fn new(customers: Arc<Customers>, api_key: Option<String>) -> Self {
        Hub { customers, api_key }
    }

    /// The `connect` exchange every connection starts with; answers the hub's epoch.
    pub(crate) async fn connect(&self, ws: &mut Ws) -> anyhow::Result<String> {
        let mut frame = json!({"op": "connect", "id": CONNECT_ID});
        if let Some(key) = &self.api_key {
            frame["apiKey"] = json!(key);
        }
        let reply = exchange(ws, frame, CONNECT_ID, "connected").await?;
        reply
            .epoch
            .ok_or_else(|| anyhow!("`connected` without `epoch`"))
    }

    /// Subscribes a connected `ws` to `interest` (subscription id `s`), resuming after
    /// `resume` when given.
    pub(crate) async fn subscribe(
        &self,
        ws: &mut Ws,
        interest: Interest,
        resume: Option<Resume<'_>>,
    ) -> anyhow::Result<Subscribed> {
        let mut frame =
            json!({"op": "subscribe", "id": SUBSCRIBE_ID, "sub": "s", "topics": ["all"]});
        if let Interest::Customer(index) = interest {
            let customer_id = self.customers.get(index).id.to_string();
            frame["where"] = json!({ "customerId": [customer_id] });
        }
        if let Some(resume) = resume {
            frame["since"] = json!(resume.since);
            frame["epoch"] = json!(resume.epoch);
        }
        let reply = exchange(ws, frame, SUBSCRIBE_ID, "subscribed").await?;
        Ok(Subscribed {
            seq: reply
                .seq
                .ok_or_else(|| anyhow!("`subscribed` without `seq`"))?,
            recovered: reply.recovered,
        })
    }
}

/// Where a resuming subscription continues: after seq `since` of history `epoch`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resume<'a> {
    pub(crate) since: u64,
    pub(crate) epoch: &'a str,
}

/// The `subscribed` reply: the subscription's position and, for a resume, whether the
/// hub could replay everything after `since`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subscribed {
    pub(crate) seq: u64,
    pub(crate) recovered: Option<bool>,
}

/// The fields of a set-up reply its caller may keep.
struct Reply {
    seq: Option<u64>,
    epoch: Option<String>,
    recovered: Option<bool>,
}

impl Target for Hub {
    type Decoder = HubDecoder;

    fn request(&self, addr: SocketAddr) -> anyhow::Result<Request> {
        ws_request(addr, WS_PATH, Some(SUBPROTOCOL))
    }

    async fn open_publisher(&self, ws: &mut Ws) -> anyhow::Result<()> {
        self.connect(ws).await.map(drop)
    }

    async fn open_subscriber(
        &self,
        ws: &mut Ws,
        interest: Interest,
    ) -> anyhow::Result<Option<Position>> {
        let epoch = self.connect(ws).await?;
        let subscribed = self.subscribe(ws, interest, None).await?;
        Ok(Some(Position {
            epoch,
            seq: subscribed.seq,
        }))
    }

    async fn resume_subscriber(
        &self,
        ws: &mut Ws,
        interest: Interest,
        from: &Position,
    ) -> anyhow::Result<()> {
        self.connect(ws).await?;
        let resume = Resume {
            since: from.seq,
            epoch: &from.epoch,
        };
        // A hub that could not replay everything after `since` says so (`recovered:
        // false`); what it could not replay is then counted lost, as it is.
        self.subscribe(ws, interest, Some(resume)).await.map(drop)
    }

    fn publish_frame(&self, id: u64, event: &LifecycleEvent) -> anyhow::Result<Message> {
        let frame = PublishFrame {
            op: "publish",
            id,
            event,
        };
        Ok(Message::text(serde_json::to_string(&frame)?))
    }

    fn decoder(&self) -> HubDecoder {
        HubDecoder {
            customers: Arc::clone(&self.customers),
        }
    }
}

/// `{"op":"publish","id":N,"event":{...}}`.
#[derive(Serialize)]
struct PublishFrame<'a> {
    op: &'static str,
    id: u64,
    event: &'a LifecycleEvent,
}

/// Sends `frame` and waits for the reply that echoes `id`: `expect` is success, an
/// `error` frame or a closed connection is a failure that says why.
async fn exchange(
    ws: &mut Ws,
    frame: serde_json::Value,
    id: u64,
    expect: &str,
) -> anyhow::Result<Reply> {
    let op = frame["op"].as_str().unwrap_or("frame").to_owned();
    ws.send(Message::text(frame.to_string()))
        .await
        .with_context(|| format!("sending {op}"))?;
    while let Some(message) = ws.next().await {
        let message = message.with_context(|| format!("waiting for the reply to {op}"))?;
        let text = match &message {
            Message::Text(text) => text.as_str(),
            Message::Close(close) => bail!("the hub closed the connection during {op}: {close:?}"),
            _ => continue,
        };
        let reply: HubFrame<'_> =
            serde_json::from_str(text).with_context(|| format!("unreadable reply to {op}"))?;
        if reply.id != Some(id) {
            continue;
        }
        return match reply.kind.as_ref() {
            kind if kind == expect => Ok(Reply {
                seq: reply.seq,
                epoch: reply.epoch.map(Cow::into_owned),
                recovered: reply.recovered,
            }),
            "error" => Err(anyhow!(
                "the hub refused {op}: {} ({})",
                reply.code.as_deref().unwrap_or("?"),
                reply.message.as_deref().unwrap_or("")
            )),
            other => Err(anyhow!(
                "expected `{expect}` in reply to {op}, got `{other}`"
            )),
        };
    }
    bail!("the connection ended while waiting for the reply to {op}")
}

/// The fields of a hub frame the generator reads; everything else is skipped unparsed.
#[derive(Deserialize)]
struct HubFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    id: Option<u64>,
    seq: Option<u64>,
    duplicate: Option<bool>,
    #[serde(borrow)]
    event: Option<crate::workload::EventView<'a>>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    epoch: Option<Cow<'a, str>>,
    recovered: Option<bool>,
}

/// Reads hub frames: one JSON object per text frame, so no state between frames.
#[derive(Debug)]
pub(crate) struct HubDecoder {
    customers: Arc<Customers>,
}

impl Decoder for HubDecoder {
    fn decode(&mut self, message: &Message, out: &mut Vec<Incoming>) -> anyhow::Result<()> {
        let text = match message {
            Message::Text(text) => text.as_str(),
            Message::Binary(_) => bail!("the hub sent a binary frame"),
            // Pings are answered by the WebSocket layer; closes are the caller's business.
            _ => return Ok(()),
        };
        let frame: HubFrame<'_> = serde_json::from_str(text)?;
        let incoming = match frame.kind.as_ref() {
            "event" => {
                let event = frame
                    .event
                    .ok_or_else(|| anyhow!("event frame without `event`"))?;
                Incoming::Delivery(Delivery {
                    customer: event
                        .customer_id
                        .as_deref()
                        .and_then(|id| self.customers.index_of(id)),
                    seq: frame.seq,
                    publisher: None,
                    sent_at_micros: event.data.and_then(|d| d.sent_at_micros),
                })
            }
            "published" => Incoming::Ack {
                id: frame
                    .id
                    .ok_or_else(|| anyhow!("published frame without `id`"))?,
                duplicate: frame.duplicate.unwrap_or(false),
                seq: frame.seq,
            },
            "error" => Incoming::Refused {
                id: frame.id,
                code: frame.code.map_or_else(|| "?".to_owned(), Cow::into_owned),
                message: frame.message.map(Cow::into_owned).unwrap_or_default(),
            },
            _ => Incoming::Other,
        };
        out.push(incoming);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(customers: &Arc<Customers>, text: &str) -> Incoming {
        let mut decoder = HubDecoder {
            customers: Arc::clone(customers),
        };
        let mut out = Vec::new();
        decoder.decode(&Message::text(text), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    #[test]
    fn reads_deliveries_acks_and_errors() {
        let customers = Arc::new(Customers::new(2, 0, 0));
        let id = customers.get(1).id;
        let delivery = format!(
            r#"{{"type":"event","seq":42,"topic":"webchat:offered","event":{{"actionId":"x","customerId":"{id}","data":{{"sentAtMicros":17}},"seq":42,"timestamp":"t"}}}}"#
        );
        assert_eq!(
            decode(&customers, &delivery),
            Incoming::Delivery(Delivery {
                customer: Some(1),
                seq: Some(42),
                publisher: None,
                sent_at_micros: Some(17)
            })
        );
        let started = format!(
            r#"{{"type":"event","seq":7,"topic":"session:started","event":{{"customerId":"{id}","sessionId":"s"}}}}"#
        );
        assert_eq!(
            decode(&customers, &started),
            Incoming::Delivery(Delivery {
                customer: Some(1),
                seq: Some(7),
                publisher: None,
                sent_at_micros: None
            })
        );
        assert_eq!(
            decode(
                &customers,
                r#"{"type":"published","id":9,"seq":3,"duplicate":false}"#
            ),
            Incoming::Ack {
                id: 9,
                duplicate: false,
                seq: Some(3)
            }
        );
        assert_eq!(
            decode(
                &customers,
                r#"{"type":"error","id":5,"code":"invalid_transition","message":"no \"way\""}"#
            ),
            Incoming::Refused {
                id: Some(5),
                code: "invalid_transition".to_owned(),
                message: "no \"way\"".to_owned()
            }
        );
    }

    #[test]
    fn publish_frame_is_a_publish_op_with_the_event() {
        let customers = Arc::new(Customers::new(1, 0, 0));
        let hub = Hub::new(Arc::clone(&customers), None);
        let mut cycle = crate::workload::EventCycle::new(0, 1, 1, uuid::Uuid::new_v4());
        let (_, event) = cycle.next_event(&customers);
        let frame = hub.publish_frame(7, &event).unwrap();
        let value: serde_json::Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        assert_eq!(value["op"], "publish");
        assert_eq!(value["id"], 7);
        assert_eq!(value["event"]["actionState"], "offered");
        assert!(value["event"]["data"]["sentAtMicros"].as_u64().is_some());
    }
}
