//! The NATS driver: the same workload against nats-server's WebSocket listener, speaking
//! the plain-text NATS client protocol inside WebSocket frames, for a side-by-side run.
//!
//! - Subjects are `wa.<customerId>.<mediaType>.<state>`; a customer subscriber subscribes
//!   `wa.<customerId>.>`, a firehose subscriber `wa.>`. The payload is the very event JSON
//!   the hub gets, plus the publisher's order stamp (`data.publisher`, `data.counter`).
//! - Core NATS acknowledges no publish, so a publisher sends `PING` after every
//!   `--ping-every` publishes; the server answers `PONG` only after processing what came
//!   before it, so each `PONG` acknowledges those publishes (a barrier, see `target`).
//! - NATS numbers nothing, so order is checked on the publisher's per-customer counter:
//!   NATS keeps the messages of one publishing connection in order, and no more.
//! - The server may put several protocol messages in one WebSocket frame, or split one
//!   across frames: received frames are parsed as one byte stream per connection.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::Message;

use crate::target::{ws_request, Decoder, Delivery, Incoming, Interest, Position, Target, Ws};
use crate::workload::{Customers, LifecycleEvent};

/// Sent first on every connection: no `+OK` per message (`verbose`), no headers, and no
/// echo of a connection's own publishes (publishers subscribe to nothing anyway).
const CONNECT: &str = concat!(
    r#"CONNECT {"verbose":false,"pedantic":false,"headers":false,"echo":false,"#,
    r#""protocol":1,"lang":"rust","version":"0.1.0","name":"actionhub-loadgen"}"#,
    "\r\n"
);

/// The subscription id of a subscriber's one subscription.
const SID: &str = "1";

/// Bytes of unparsed input a connection may hold: well above one message (NATS's
/// default max_payload is 1 MiB); more means the stream is not NATS.
const MAX_PENDING: usize = 4 << 20;

/// Drives nats-server over WebSocket.
#[derive(Debug)]
pub(crate) struct Nats {
    /// Maps delivered customerIds back to the run's customer indexes.
    customers: Arc<Customers>,
}

impl Nats {
    pub(crate) fn new(customers: Arc<Customers>) -> Self {
        Nats { customers }
    }

    /// Sends `protocol` followed by a `PING`, and waits for the `PONG`: the server
    /// processes a connection's input in order, so everything before it has taken effect.
    async fn exchange(&self, ws: &mut Ws, protocol: String, what: &str) -> anyhow::Result<()> {
        ws.send(Message::binary(protocol + "PING\r\n"))
            .await
            .with_context(|| format!("sending {what}"))?;
        let mut decoder = self.decoder();
        let mut incoming = Vec::new();
        while let Some(message) = ws.next().await {
            let message = message.with_context(|| format!("waiting for the reply to {what}"))?;
            if let Message::Close(close) = &message {
                bail!("the server closed the connection during {what}: {close:?}");
            }
            incoming.clear();
            decoder
                .decode(&message, &mut incoming)
                .with_context(|| format!("unreadable reply to {what}"))?;
            for item in incoming.drain(..) {
                match item {
                    Incoming::BarrierPassed => return Ok(()),
                    Incoming::Refused { message, .. } => {
                        bail!("the server refused {what}: {message}")
                    }
                    Incoming::Reply(reply) => ws.send(reply).await?,
                    _ => {}
                }
            }
        }
        bail!("the connection ended while waiting for the reply to {what}")
    }
}

impl Target for Nats {
    type Decoder = NatsDecoder;

    fn request(&self, addr: SocketAddr) -> anyhow::Result<Request> {
        ws_request(addr, "/", None)
    }

    async fn open_publisher(&self, ws: &mut Ws) -> anyhow::Result<()> {
        self.exchange(ws, CONNECT.to_owned(), "CONNECT").await
    }

    /// Core NATS numbers nothing, so its subscriptions have no position to resume from.
    async fn open_subscriber(
        &self,
        ws: &mut Ws,
        interest: Interest,
    ) -> anyhow::Result<Option<Position>> {
        let subject = match interest {
            Interest::Customer(index) => format!("wa.{}.>", self.customers.get(index).id),
            Interest::Everything => "wa.>".to_owned(),
        };
        let protocol = format!("{CONNECT}SUB {subject} {SID}\r\n");
        self.exchange(ws, protocol, "CONNECT and SUB").await?;
        Ok(None)
    }

    async fn resume_subscriber(
        &self,
        _ws: &mut Ws,
        _interest: Interest,
        _from: &Position,
    ) -> anyhow::Result<()> {
        bail!("core NATS cannot resume a subscription")
    }

    fn publish_frame(&self, _id: u64, event: &LifecycleEvent) -> anyhow::Result<Message> {
        let payload = serde_json::to_vec(event)?;
        let mut frame = Vec::with_capacity(payload.len() + 96);
        write!(
            frame,
            "PUB wa.{}.{}.{} {}\r\n",
            event.customer_id,
            event.action_media_type,
            event.action_state,
            payload.len()
        )?;
        frame.extend_from_slice(&payload);
        frame.extend_from_slice(b"\r\n");
        Ok(Message::binary(frame))
    }

    fn decoder(&self) -> NatsDecoder {
        NatsDecoder {
            customers: Arc::clone(&self.customers),
            pending: Vec::new(),
        }
    }

    fn barrier_frame(&self) -> Option<Message> {
        Some(Message::binary(&b"PING\r\n"[..]))
    }

    fn wants_order_stamps(&self) -> bool {
        true
    }
}

/// Reads one connection's NATS protocol stream out of its WebSocket frames.
#[derive(Debug)]
pub(crate) struct NatsDecoder {
    customers: Arc<Customers>,
    /// The start of a protocol message whose end has not arrived yet.
    pending: Vec<u8>,
}

impl Decoder for NatsDecoder {
    fn decode(&mut self, message: &Message, out: &mut Vec<Incoming>) -> anyhow::Result<()> {
        let bytes: &[u8] = match message {
            Message::Binary(bytes) => bytes,
            Message::Text(text) => text.as_bytes(),
            // Pings are answered by the WebSocket layer; closes are the caller's business.
            _ => return Ok(()),
        };
        // Most frames hold whole messages: parse them in place, keep only a partial tail.
        let parsed = if self.pending.is_empty() {
            let parsed = parse(bytes, &self.customers, out);
            if let Ok(used) = parsed.consumed {
                self.pending.extend_from_slice(&bytes[used..]);
            }
            parsed
        } else {
            self.pending.extend_from_slice(bytes);
            let parsed = parse(&self.pending, &self.customers, out);
            if let Ok(used) = parsed.consumed {
                self.pending.drain(..used);
            }
            parsed
        };
        if let Err(e) = parsed.consumed {
            // The stream is out of step; nothing after this point can be trusted.
            self.pending.clear();
            return Err(e);
        }
        if self.pending.len() > MAX_PENDING {
            self.pending.clear();
            bail!("more than {MAX_PENDING} bytes without a complete NATS message");
        }
        match parsed.unreadable_payload {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// What one pass over the input gave besides the facts pushed to `out`.
struct Parsed {
    /// Bytes taken up by complete messages; `Err` when the input is not NATS protocol.
    consumed: anyhow::Result<usize>,
    /// The first message payload that was not a generated event (the rest were counted).
    unreadable_payload: Option<anyhow::Error>,
}

/// Parses every complete protocol message at the start of `input`.
fn parse(input: &[u8], customers: &Customers, out: &mut Vec<Incoming>) -> Parsed {
    let mut pos = 0;
    let mut unreadable_payload = None;
    while let Some(line_len) = find_crlf(&input[pos..]) {
        let line = &input[pos..pos + line_len];
        let body_start = pos + line_len + 2;
        let (op, args) = split_op(line);
        let next = if op.eq_ignore_ascii_case(b"MSG") {
            let size = match payload_size(args, 3..=4) {
                Ok(size) => size,
                Err(e) => return failed(e, unreadable_payload),
            };
            let end = body_start + size;
            if input.len() < end + 2 {
                break;
            }
            match read_event(&input[body_start..end], customers) {
                Ok(delivery) => out.push(Incoming::Delivery(delivery)),
                Err(e) => {
                    unreadable_payload.get_or_insert(e);
                }
            }
            end + 2
        } else if op.eq_ignore_ascii_case(b"HMSG") {
            // Headers are off in CONNECT, so none should come; skip one whole if it does.
            let size = match payload_size(args, 4..=5) {
                Ok(size) => size,
                Err(e) => return failed(e, unreadable_payload),
            };
            if input.len() < body_start + size + 2 {
                break;
            }
            out.push(Incoming::Other);
            body_start + size + 2
        } else if op.eq_ignore_ascii_case(b"PING") {
            out.push(Incoming::Reply(Message::binary(&b"PONG\r\n"[..])));
            body_start
        } else if op.eq_ignore_ascii_case(b"PONG") {
            out.push(Incoming::BarrierPassed);
            body_start
        } else if op.eq_ignore_ascii_case(b"-ERR") {
            let text = String::from_utf8_lossy(args).trim_matches('\'').to_owned();
            out.push(Incoming::Refused {
                id: None,
                code: "nats_err".to_owned(),
                message: text,
            });
            body_start
        } else if op.eq_ignore_ascii_case(b"+OK") || op.eq_ignore_ascii_case(b"INFO") {
            out.push(Incoming::Other);
            body_start
        } else {
            let shown = String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
            return failed(anyhow!("not a NATS message: `{shown}`"), unreadable_payload);
        };
        pos = next;
    }
    Parsed {
        consumed: Ok(pos),
        unreadable_payload,
    }
}

fn failed(e: anyhow::Error, unreadable_payload: Option<anyhow::Error>) -> Parsed {
    Parsed {
        consumed: Err(e),
        unreadable_payload,
    }
}

/// The position of the first `\r\n` in `bytes`.
fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|pair| pair == b"\r\n")
}

/// A protocol line's operation name and the rest of the line.
fn split_op(line: &[u8]) -> (&[u8], &[u8]) {
    let line = line.trim_ascii();
    match line.iter().position(|b| b.is_ascii_whitespace()) {
        Some(space) => (&line[..space], line[space..].trim_ascii_start()),
        None => (line, &[]),
    }
}

/// The byte count that ends a `MSG`/`HMSG` line, given how many arguments it may have.
fn payload_size(args: &[u8], arity: std::ops::RangeInclusive<usize>) -> anyhow::Result<usize> {
    let words: Vec<&[u8]> = args
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    if !arity.contains(&words.len()) {
        bail!(
            "a MSG line with {} arguments: `{}`",
            words.len(),
            String::from_utf8_lossy(args)
        );
    }
    let size = words[words.len() - 1];
    std::str::from_utf8(size)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad payload size `{}`", String::from_utf8_lossy(size)))
}

fn read_event(payload: &[u8], customers: &Customers) -> anyhow::Result<Delivery> {
    let event: crate::workload::EventView<'_> =
        serde_json::from_slice(payload).context("a message payload that is not an event")?;
    let data = event.data.unwrap_or(crate::workload::DataView {
        sent_at_micros: None,
        publisher: None,
        counter: None,
    });
    Ok(Delivery {
        customer: event
            .customer_id
            .as_deref()
            .and_then(|id| customers.index_of(id)),
        seq: data.counter,
        publisher: data.publisher,
        sent_at_micros: data.sent_at_micros,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::EventCycle;

    /// A table of one customer, and the NATS target over it.
    fn one_customer() -> (Arc<Customers>, Nats) {
        let customers = Arc::new(Customers::new(1, 0, 0));
        let nats = Nats::new(Arc::clone(&customers));
        (customers, nats)
    }

    fn published(nats: &Nats, customers: &Customers) -> (Vec<u8>, Vec<u8>) {
        let mut cycle =
            EventCycle::new(0, 1, customers.len(), uuid::Uuid::new_v4()).with_order_stamps(0);
        let (_, event) = cycle.next_event(customers);
        let frame = nats.publish_frame(1, &event).unwrap().into_data().to_vec();
        (frame, serde_json::to_vec(&event).unwrap())
    }

    #[test]
    fn publish_frame_is_a_pub_on_the_event_subject() {
        let (customers, nats) = one_customer();
        let (frame, payload) = published(&nats, &customers);
        let expected_line = format!(
            "PUB wa.{}.webchat.offered {}\r\n",
            customers.get(0).id,
            payload.len()
        );
        assert!(frame.starts_with(expected_line.as_bytes()));
        assert!(frame.ends_with(b"\r\n"));
        let value: serde_json::Value =
            serde_json::from_slice(&frame[expected_line.len()..frame.len() - 2]).unwrap();
        assert_eq!(value["data"]["counter"], 1);
        assert_eq!(value["data"]["publisher"], 0);
    }

    /// A server stream: INFO, a delivery, PING, PONG, another delivery, -ERR.
    fn stream(customers: &Customers, payload: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n");
        for reply in ["", " _INBOX.1"] {
            let subject = format!("wa.{}.webchat.offered", customers.get(0).id);
            write!(s, "MSG {subject} 1{reply} {}\r\n", payload.len()).unwrap();
            s.extend_from_slice(payload);
            s.extend_from_slice(b"\r\n");
            if reply.is_empty() {
                s.extend_from_slice(b"PING\r\nPONG\r\n");
            }
        }
        s.extend_from_slice(b"-ERR 'Slow Consumer Detected'\r\n");
        s
    }

    fn expected(customers: &Customers, payload: &[u8]) -> Vec<Incoming> {
        let delivery = Incoming::Delivery(read_event(payload, customers).unwrap());
        vec![
            Incoming::Other,
            delivery.clone(),
            Incoming::Reply(Message::binary(&b"PONG\r\n"[..])),
            Incoming::BarrierPassed,
            delivery,
            Incoming::Refused {
                id: None,
                code: "nats_err".to_owned(),
                message: "Slow Consumer Detected".to_owned(),
            },
        ]
    }

    #[test]
    fn parses_a_stream_whole_or_cut_anywhere_into_frames() {
        let (customers, nats) = one_customer();
        let (_, payload) = published(&nats, &customers);
        let bytes = stream(&customers, &payload);
        let want = expected(&customers, &payload);
        match &want[1] {
            Incoming::Delivery(d) => {
                assert_eq!(
                    (d.customer, d.seq, d.publisher),
                    (Some(0), Some(1), Some(0))
                );
                assert!(d.sent_at_micros.is_some());
            }
            other => panic!("{other:?}"),
        }
        // Every way of cutting the stream in two, and byte by byte.
        for cut in 0..=bytes.len() {
            let mut decoder = nats.decoder();
            let mut out = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                decoder
                    .decode(&Message::binary(part.to_vec()), &mut out)
                    .unwrap();
            }
            assert_eq!(out, want, "cut at {cut}");
            assert!(decoder.pending.is_empty());
        }
        let mut decoder = nats.decoder();
        let mut out = Vec::new();
        for byte in &bytes {
            decoder
                .decode(&Message::binary(vec![*byte]), &mut out)
                .unwrap();
        }
        assert_eq!(out, want);
    }

    #[test]
    fn garbage_is_an_error_and_a_foreign_payload_is_counted_apart() {
        let (_, nats) = one_customer();
        let mut decoder = nats.decoder();
        let mut out = Vec::new();
        assert!(decoder
            .decode(&Message::binary(&b"HTTP/1.1 200 OK\r\n"[..]), &mut out)
            .is_err());
        assert!(decoder.pending.is_empty());
        let foreign = b"MSG wa.x 1 5\r\nhello\r\nPONG\r\n";
        assert!(decoder
            .decode(&Message::binary(&foreign[..]), &mut out)
            .is_err());
        // The payload was skipped, and what followed it still counted.
        assert_eq!(out, vec![Incoming::BarrierPassed]);
    }
}
