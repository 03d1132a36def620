//! The seam between the generator and a server's wire protocol.
//!
//! Everything the generator knows about a protocol sits behind [`Target`] (how to open a
//! publisher or a subscriber and how a publish is framed) and [`Decoder`] (what a received
//! frame means). The rest of the tool (connection setup, pacing, counting, reporting)
//! is protocol-blind: `hub` and `nats` are the two implementations.
//!
//! Two protocol differences show through as capabilities rather than special cases: a
//! server without per-publish acknowledgements offers a *barrier* (a frame the server
//! answers once everything sent before it is processed, which acknowledges all of those
//! publishes), and a server without sequence numbers asks for *order stamps* (each
//! publisher numbers its events per customer, and order is checked per publisher).

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::workload::{CustomerIndex, LifecycleEvent};

/// One WebSocket connection to the server.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// What a subscriber connection asks to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Every event of one customer.
    Customer(CustomerIndex),
    /// Every event (a firehose consumer).
    Everything,
}

/// A place in the server's numbered history: after event `seq` of history `epoch`. A
/// subscriber keeps its own (the newest seq it saw, or its subscription's start) and
/// resumes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) epoch: String,
    pub(crate) seq: u64,
}

/// What one received frame meant to the generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// An event delivered to a subscriber.
    Delivery(Delivery),
    /// A publish was accepted. `duplicate` publishes are not fanned out. `seq` is the
    /// event's place in the server's order (for a duplicate, the seq of the event it
    /// repeats), when the server numbers events.
    Ack {
        id: u64,
        duplicate: bool,
        seq: Option<u64>,
    },
    /// The server refused something; `id` names the publish when the server echoed it.
    Refused {
        id: Option<u64>,
        code: String,
        message: String,
    },
    /// The server answered a barrier frame (see [`Target::barrier_frame`]): every
    /// publish sent before that barrier is acknowledged. Barriers are answered in order.
    BarrierPassed,
    /// A frame the protocol obliges the client to send back at once (NATS: `PONG` to
    /// the server's `PING`, or the server closes the connection as stale).
    Reply(Message),
    /// Anything else (replies the generator does not wait for).
    Other,
}

/// The facts of one delivered event that the generator checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// The event's customer, when it is one of this run's customers.
    pub(crate) customer: Option<CustomerIndex>,
    /// The server's sequence number, or the publisher's per-customer counter when the
    /// events carry order stamps (order is checked on it).
    pub(crate) seq: Option<u64>,
    /// The publisher that stamped the event, when the events carry order stamps: `seq`
    /// then only orders the events of one (customer, publisher) pair.
    pub(crate) publisher: Option<u32>,
    /// The send time the generator stamped on the event; `None` for events the server
    /// made itself (e.g. `session:started`), which count apart and have no latency.
    pub(crate) sent_at_micros: Option<u64>,
}

/// A server protocol the generator can drive.
pub(crate) trait Target: Send + Sync + 'static {
    /// Reads one connection's frames; a protocol may keep state between frames.
    type Decoder: Decoder;

    /// The handshake request for a connection to `addr` (path, subprotocol, headers).
    fn request(&self, addr: SocketAddr) -> anyhow::Result<Request>;

    /// Makes a fresh WebSocket ready to publish (e.g. the hub's `connect` exchange).
    fn open_publisher(&self, ws: &mut Ws) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Makes a fresh WebSocket a subscriber; returns once live events will be delivered,
    /// with where the subscription starts when the server numbers its history (so that
    /// it can be resumed, see [`Target::resume_subscriber`]).
    fn open_subscriber(
        &self,
        ws: &mut Ws,
        interest: Interest,
    ) -> impl Future<Output = anyhow::Result<Option<Position>>> + Send;

    /// Makes a fresh WebSocket the subscriber the server closed as too slow, continuing
    /// after `from`, as a client that must lose nothing does. Only called for a
    /// subscription [`Target::open_subscriber`] gave a position for.
    fn resume_subscriber(
        &self,
        ws: &mut Ws,
        interest: Interest,
        from: &Position,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The frame that publishes `event`; its acknowledgement will carry `id`.
    fn publish_frame(&self, id: u64, event: &LifecycleEvent) -> anyhow::Result<Message>;

    /// A decoder for one connection's received frames.
    fn decoder(&self) -> Self::Decoder;

    /// For a protocol that does not acknowledge each publish: a frame the server answers
    /// ([`Incoming::BarrierPassed`]) after processing everything sent before it. The
    /// publisher sends one every `--ping-every` publishes, so its in-flight window stays
    /// bounded. `None` (the default): every publish is acknowledged by its id.
    fn barrier_frame(&self) -> Option<Message> {
        None
    }

    /// Whether publishers must stamp events with their index and a per-customer counter,
    /// because the server assigns no sequence numbers of its own.
    fn wants_order_stamps(&self) -> bool {
        false
    }
}

/// Turns received frames into [`Incoming`] facts.
pub(crate) trait Decoder: Send + 'static {
    /// Appends what `message` means to `out` (a frame may hold several facts, or none).
    /// An error means the frame could not be understood; the caller counts it and goes on.
    fn decode(&mut self, message: &Message, out: &mut Vec<Incoming>) -> anyhow::Result<()>;
}

/// A WebSocket handshake request for `ws://addr{path}`, offering `subprotocol`.
pub(crate) fn ws_request(
    addr: SocketAddr,
    path: &str,
    subprotocol: Option<&'static str>,
) -> anyhow::Result<Request> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    if let Some(subprotocol) = subprotocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(subprotocol),
        );
    }
    Ok(request)
}
