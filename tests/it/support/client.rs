//! The WebSocket client: v1 frames as JSON, requests matched to their replies by `id`, and
//! bounded reads.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::{ClientRequestBuilder, Message};
use tokio_tungstenite::WebSocketStream;

use super::frames::{assert_error, assert_type, seq_of};
use super::{bounded, QUIET, WAIT};

/// One WebSocket connection to the hub.
///
/// Frames that arrive while [`Client::request`] waits for its reply are kept, in order, and
/// handed out by the next [`Client::recv`], so a test never loses an event to a reply.
pub(crate) struct Client {
    ws: WebSocketStream<TcpStream>,
    /// Frames read ahead while waiting for a reply.
    pending: VecDeque<Value>,
    /// The last `id` used, so every request gets a fresh one.
    last_id: u64,
    /// The subprotocol the hub chose in the handshake, if any.
    pub(crate) subprotocol: Option<String>,
    /// The `connected` frame, once `connect` has been answered.
    pub(crate) connected: Value,
}

impl Client {
    /// Opens a WebSocket to `/v1/ws`, offering `subprotocols`. `recv_buffer` shrinks the
    /// kernel receive buffer so a client that does not read backs up the hub quickly.
    pub(crate) async fn open(
        addr: SocketAddr,
        subprotocols: &[&str],
        recv_buffer: Option<u32>,
    ) -> Client {
        let uri: Uri = format!("ws://{addr}/v1/ws").parse().expect("uri");
        let mut request = ClientRequestBuilder::new(uri);
        for protocol in subprotocols {
            request = request.with_sub_protocol(*protocol);
        }
        let handshake = async {
            let socket = TcpSocket::new_v4()?;
            if let Some(size) = recv_buffer {
                socket.set_recv_buffer_size(size)?;
            }
            let stream = socket.connect(addr).await?;
            let (ws, response) = tokio_tungstenite::client_async(request, stream)
                .await
                .map_err(std::io::Error::other)?;
            let subprotocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|value| value.to_str().expect("ascii header").to_owned());
            std::io::Result::Ok((ws, subprotocol))
        };
        let (ws, subprotocol) = bounded(WAIT, "the WebSocket handshake", handshake)
            .await
            .expect("WebSocket handshake");
        Client::over(ws, subprotocol)
    }

    /// A client on a WebSocket whose handshake has just completed.
    fn over(ws: WebSocketStream<TcpStream>, subprotocol: Option<String>) -> Client {
        Client {
            ws,
            pending: VecDeque::new(),
            last_id: 0,
            subprotocol,
            connected: Value::Null,
        }
    }

    /// Opens a WebSocket to `/v1/ws` without a subprotocol and completes `connect`;
    /// `recv_buffer` as for [`Client::open`].
    pub(crate) async fn connected_to(addr: SocketAddr, recv_buffer: Option<u32>) -> Client {
        let mut client = Client::open(addr, &[], recv_buffer).await;
        client.connect().await;
        client
    }

    /// Opens a WebSocket with extra upgrade `headers`; a refused handshake is
    /// `Err((status, body))`.
    pub(crate) async fn try_open(
        addr: SocketAddr,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, String)> {
        let uri: Uri = format!("ws://{addr}/v1/ws").parse().expect("uri");
        let mut request = ClientRequestBuilder::new(uri);
        for (name, value) in headers {
            request = request.with_header(*name, *value);
        }
        let handshake = async {
            let stream = TcpStream::connect(addr).await.expect("TCP connect");
            tokio_tungstenite::client_async(request, stream).await
        };
        match bounded(WAIT, "the WebSocket handshake", handshake).await {
            Ok((ws, _)) => Ok(Client::over(ws, None)),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.body().clone().unwrap_or_default();
                Err((status, String::from_utf8_lossy(&body).into_owned()))
            }
            Err(other) => panic!("WebSocket handshake failed: {other}"),
        }
    }

    /// Sends `connect` with `fields` (such as `apiKey` or `token`) and returns the reply,
    /// whatever it is; keeps it when it is `connected`.
    pub(crate) async fn connect_with(&mut self, fields: Value) -> Value {
        let mut frame = json!({"op": "connect"});
        if let Value::Object(fields) = fields {
            frame.as_object_mut().expect("object").extend(fields);
        }
        let reply = self.request(frame).await;
        if reply["type"] == json!("connected") {
            self.connected = reply.clone();
        }
        reply
    }

    /// Sends `connect` and checks the `connected` reply, which it keeps and returns.
    pub(crate) async fn connect(&mut self) -> Value {
        let reply = self
            .request(json!({"op": "connect", "client": {"name": "actionhub-it", "version": "1"}}))
            .await;
        assert_type(&reply, "connected");
        self.connected = reply.clone();
        reply
    }

    /// The epoch from `connected`.
    pub(crate) fn epoch(&self) -> String {
        self.connected["epoch"]
            .as_str()
            .expect("connected has an epoch")
            .to_owned()
    }

    /// Sends one frame as JSON text, exactly as given.
    pub(crate) async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        self.send_message(Message::Text(text.to_owned().into()))
            .await;
    }

    pub(crate) async fn send_message(&mut self, message: Message) {
        bounded(WAIT, "a frame to be sent", self.ws.send(message))
            .await
            .expect("frame sent");
    }

    /// Sends `frame` with a fresh `id` and returns the frame that echoes it. Frames that
    /// arrive first are kept for [`Client::recv`].
    pub(crate) async fn request(&mut self, mut frame: Value) -> Value {
        self.last_id += 1;
        let id = self.last_id;
        frame["id"] = json!(id);
        self.send(frame).await;
        self.reply_to(id).await
    }

    /// The frame that echoes `id`, within [`WAIT`]. Frames that arrive first are kept for
    /// [`Client::recv`]; the hub may send an event before or after the reply.
    pub(crate) async fn reply_to(&mut self, id: u64) -> Value {
        let mut read_ahead = Vec::new();
        let reply = loop {
            match self.try_read_frame(WAIT).await {
                Some(next) if next["id"] == json!(id) => break next,
                Some(next) => read_ahead.push(next),
                None => panic!("no reply echoing id {id} within {WAIT:?}; got {read_ahead:?}"),
            }
        };
        self.pending.extend(read_ahead);
        reply
    }

    /// Subscribes and checks the `subscribed` reply, which it returns.
    pub(crate) async fn subscribe(&mut self, sub: Value, mut body: Value) -> Value {
        body["op"] = json!("subscribe");
        body["sub"] = sub.clone();
        let reply = self.request(body).await;
        assert_type(&reply, "subscribed");
        assert_eq!(reply["sub"], sub, "subscribed echoes the sub id: {reply}");
        reply
    }

    /// Subscribes `sub` to `topics` with an optional `where`.
    pub(crate) async fn subscribe_to(
        &mut self,
        sub: &str,
        topics: &[&str],
        filter: Option<Value>,
    ) -> Value {
        let mut body = json!({"topics": topics});
        if let Some(filter) = filter {
            body["where"] = filter;
        }
        self.subscribe(json!(sub), body).await
    }

    /// Publishes `event` and returns the reply, whatever it is.
    pub(crate) async fn publish(&mut self, event: Value) -> Value {
        self.request(json!({"op": "publish", "event": event})).await
    }

    /// Publishes `event`, which must be accepted as new, and returns its seq.
    pub(crate) async fn publish_ok(&mut self, event: Value) -> u64 {
        let reply = self.publish(event.clone()).await;
        assert_type(&reply, "published");
        assert_eq!(
            reply["duplicate"],
            json!(false),
            "not a duplicate: {event} -> {reply}"
        );
        seq_of(&reply)
    }

    /// Publishes `event`, which must be refused with `code`, and returns the error frame.
    pub(crate) async fn publish_refused(
        &mut self,
        event: Value,
        code: &str,
        field: Option<&str>,
    ) -> Value {
        let reply = self.publish(event.clone()).await;
        assert_error(&reply, code, field);
        reply
    }

    /// The next frame from the hub (read-ahead first), within [`WAIT`].
    pub(crate) async fn recv(&mut self) -> Value {
        match self.pending.pop_front() {
            Some(frame) => frame,
            None => self.read_frame().await,
        }
    }

    /// The next frame, waiting up to `limit` for it: for what the hub builds at length
    /// (a snapshot of 100,000 actions on a loaded 2-core machine takes more than [`WAIT`]).
    pub(crate) async fn recv_within(&mut self, limit: Duration) -> Value {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        match self.try_read_frame(limit).await {
            Some(frame) => frame,
            None => panic!("timed out after {limit:?} waiting for a frame"),
        }
    }

    /// The next frame, which must be of `kind`.
    pub(crate) async fn expect_type(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_type(&frame, kind);
        frame
    }

    /// The next frame, which must be an `event`.
    pub(crate) async fn next_event(&mut self) -> Value {
        self.expect_type("event").await
    }

    /// The next `count` event frames.
    pub(crate) async fn events(&mut self, count: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(count);
        for _ in 0..count {
            events.push(self.next_event().await);
        }
        events
    }

    /// The seqs of the next `count` event frames, in the order they arrive.
    pub(crate) async fn event_seqs(&mut self, count: usize) -> Vec<u64> {
        self.events(count).await.iter().map(seq_of).collect()
    }

    /// Asserts that no frame arrives within [`QUIET`].
    pub(crate) async fn expect_no_frame(&mut self) {
        if let Some(frame) = self.pending.pop_front() {
            panic!("expected no frame, got {frame}");
        }
        if let Some(frame) = self.try_read_frame(QUIET).await {
            panic!("expected no frame, got {frame}");
        }
    }

    /// Reads until the hub closes the connection and asserts the close code. Text frames
    /// before the Close (such as the error that explains it) are skipped.
    pub(crate) async fn closed_with(&mut self, code: u16) {
        let close = bounded(WAIT, "a Close frame", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => panic!("connection failed before a Close {code}: {err}"),
                    None => panic!("connection ended without a Close frame (wanted {code})"),
                }
            }
        })
        .await;
        let got = close.map(|frame| u16::from(frame.code));
        assert_eq!(got, Some(code), "close code");
        // Reading on sends our Close reply and completes the closing handshake, as a
        // well-behaved client does, so a hub that waits for it is not held up.
        bounded(WAIT, "the connection to end after Close", async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Reads one text frame as JSON within [`WAIT`]; panics on timeout, Close or garbage.
    async fn read_frame(&mut self) -> Value {
        match self.try_read_frame(WAIT).await {
            Some(frame) => frame,
            None => panic!("timed out after {WAIT:?} waiting for a frame"),
        }
    }

    /// Reads one text frame as JSON, or `None` if none arrives within `limit`.
    async fn try_read_frame(&mut self, limit: Duration) -> Option<Value> {
        let text = self.try_read_text(limit).await?;
        let frame: Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("hub sent a frame that is not JSON ({err}): {text}"));
        assert!(
            frame.is_object(),
            "every hub frame is a JSON object: {frame}"
        );
        Some(frame)
    }

    /// Reads one text frame, skipping WebSocket Pings and Pongs, or `None` if none arrives
    /// within `limit`. Anything else (Close, binary, a broken connection) panics.
    async fn try_read_text(&mut self, limit: Duration) -> Option<String> {
        let next_text = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(other)) => panic!("expected a text frame, got {other:?}"),
                    Some(Err(err)) => panic!("connection failed: {err}"),
                    None => panic!("connection ended"),
                }
            }
        };
        tokio::time::timeout(limit, next_text).await.ok()
    }

    /// The next WebSocket message of any kind, Pings included, within [`WAIT`].
    pub(crate) async fn next_raw(&mut self) -> Message {
        bounded(WAIT, "a WebSocket message", self.ws.next())
            .await
            .expect("connection open")
            .expect("message read")
    }

    /// The WebSocket itself, for tests that write raw bytes or read without the harness.
    pub(crate) fn ws(&mut self) -> &mut WebSocketStream<TcpStream> {
        &mut self.ws
    }

    /// Reads the next raw text frame, for comparing bytes across receivers.
    pub(crate) async fn recv_text(&mut self) -> String {
        assert!(self.pending.is_empty(), "raw read with frames read ahead");
        match self.try_read_text(WAIT).await {
            Some(text) => text,
            None => panic!("timed out after {WAIT:?} waiting for a frame"),
        }
    }
}
