//! The harness every test uses: a hub on a loopback port 0, a WebSocket client that speaks
//! the v1 frames, an HTTP client, and builders for valid events with fresh UUIDv4s.
//!
//! Every wait is bounded ([`WAIT`] for something that must arrive, [`QUIET`] for asserting
//! that nothing does), so a broken hub fails a test instead of hanging it. Helpers panic
//! with the offending frame in the message, which keeps the tests themselves short.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use actionhub::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::{ClientRequestBuilder, Message};
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

/// Longest wait for something the hub must send or do.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// Longest wait for a graceful shutdown. Generous: it only guards against a hang, and a
/// hub may give lingering connections a drain deadline of its own.
pub(crate) const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);
/// How long "nothing more arrives" is watched for.
pub(crate) const QUIET: Duration = Duration::from_millis(300);
/// The subprotocol of PROTOCOL.md section 5.
pub(crate) const SUBPROTOCOL: &str = "actionhub.v1";

/// Awaits `future` for at most `limit`, panicking with `what` when it takes longer.
pub(crate) async fn bounded<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// A well-formed UUID of version 1: not the v4 the protocol asks for.
pub(crate) const NOT_V4_UUID: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";

/// A fresh UUIDv4 as the hub writes it (lower-case, hyphenated).
pub(crate) fn uuid() -> String {
    Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------------------------------------
// The hub

/// A running hub with its own data directory, which lives as long as the hub (and across
/// [`Hub::restart`]).
pub(crate) struct Hub {
    running: Option<actionhub::server::Running>,
    addr: SocketAddr,
    /// Kept so a restart runs the same configuration on the same data.
    config: Config,
    data_dir: tempfile::TempDir,
}

impl Hub {
    /// A hub with the default (ephemeral) configuration.
    pub(crate) async fn start() -> Hub {
        Hub::start_with(|_| {}).await
    }

    /// A hub whose configuration `tweak` adjusts first.
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut Config)) -> Hub {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::ephemeral(data_dir.path());
        tweak(&mut config);
        Hub::launch(config, data_dir).await
    }

    /// A hub on `data_dir` (made where a test needs it, such as on a small file system).
    pub(crate) async fn start_in(
        data_dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut Config),
    ) -> Hub {
        let mut config = Config::ephemeral(data_dir.path());
        tweak(&mut config);
        Hub::launch(config, data_dir).await
    }

    async fn launch(config: Config, data_dir: tempfile::TempDir) -> Hub {
        let starting = actionhub::server::start(config.clone());
        let running = bounded(WAIT, "the hub to start", starting)
            .await
            .expect("hub starts");
        let addr = running.addr();
        assert!(addr.ip().is_loopback(), "tests bind loopback only: {addr}");
        Hub {
            running: Some(running),
            addr,
            config,
            data_dir,
        }
    }

    /// Shuts down gracefully and starts again on the same data directory (on a new port).
    pub(crate) async fn restart(mut self) -> Hub {
        self.stop().await;
        Hub::launch(self.config, self.data_dir).await
    }

    /// Graceful shutdown, bounded.
    pub(crate) async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        let running = self.running.take().expect("hub still running");
        bounded(SHUTDOWN_WAIT, "the hub to shut down", running.shutdown())
            .await
            .expect("hub shuts down cleanly");
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A WebSocket that has completed `connect`.
    pub(crate) async fn client(&self) -> Client {
        let mut client = self.raw_client().await;
        client.connect().await;
        client
    }

    /// A WebSocket right after the upgrade, before any frame.
    pub(crate) async fn raw_client(&self) -> Client {
        Client::open(self.addr, &[], None).await
    }

    pub(crate) fn http(&self) -> Http {
        Http::new(self.addr)
    }

    /// A WebSocket opened with extra upgrade `headers`, before any frame; a refused
    /// handshake is `Err((status, body))`.
    pub(crate) async fn client_with_headers(
        &self,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, String)> {
        Client::try_open(self.addr, headers).await
    }

    /// An HTTP client that sends `headers` (such as `X-API-Key`) on every request.
    pub(crate) fn http_with(&self, headers: &[(&str, &str)]) -> Http {
        Http::with_headers(self.addr, headers)
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket client

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
        Client {
            ws,
            pending: VecDeque::new(),
            last_id: 0,
            subprotocol,
            connected: Value::Null,
        }
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
            Ok((ws, _)) => Ok(Client {
                ws,
                pending: VecDeque::new(),
                last_id: 0,
                subprotocol: None,
                connected: Value::Null,
            }),
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

// ---------------------------------------------------------------------------------------------
// Frame assertions

/// Asserts `frame` has `"type": kind`.
pub(crate) fn assert_type(frame: &Value, kind: &str) {
    assert_eq!(
        frame["type"],
        json!(kind),
        "expected a {kind} frame, got {frame}"
    );
}

/// Asserts `frame` is an error with `code` and, when given, `details.field == field`.
pub(crate) fn assert_error(frame: &Value, code: &str, field: Option<&str>) {
    assert_type(frame, "error");
    assert_eq!(frame["code"], json!(code), "error code: {frame}");
    assert!(
        frame["message"].is_string(),
        "an error has a message: {frame}"
    );
    if let Some(field) = field {
        assert_eq!(
            frame["details"]["field"],
            json!(field),
            "details.field: {frame}"
        );
    }
}

/// The `seq` of a reply or event frame.
pub(crate) fn seq_of(frame: &Value) -> u64 {
    frame["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("frame has a numeric seq: {frame}"))
}

/// Asserts an `event` frame carries `seq` and `topic`, outside and inside, and a timestamp
/// in RFC 3339 with milliseconds, UTC. Returns the inner event.
pub(crate) fn assert_event(frame: &Value, seq: u64, topic: &str) -> Value {
    assert_type(frame, "event");
    assert_eq!(frame["seq"], json!(seq), "event seq: {frame}");
    assert_eq!(frame["topic"], json!(topic), "event topic: {frame}");
    let event = &frame["event"];
    assert_eq!(event["seq"], json!(seq), "inner seq: {frame}");
    assert_eq!(event["topic"], json!(topic), "inner topic: {frame}");
    assert_timestamp(&event["timestamp"]);
    event.clone()
}

/// Asserts `value` looks like `2026-01-02T03:04:05.678Z`.
pub(crate) fn assert_timestamp(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is a string: {value}"));
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 24
        && bytes[4] == b'-'
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && bytes[23] == b'Z'
        && bytes[20..23].iter().all(u8::is_ascii_digit);
    assert!(shape_ok, "RFC 3339 UTC timestamp with milliseconds: {text}");
}

/// The topics of a list of event frames.
pub(crate) fn topics(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|frame| frame["topic"].as_str().unwrap_or("<none>").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Event builders

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

// ---------------------------------------------------------------------------------------------
// HTTP

/// A plain-HTTP client for the hub's `/v1` API and probes.
pub(crate) struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    pub(crate) fn new(addr: SocketAddr) -> Http {
        Http::with_headers(addr, &[])
    }

    fn with_headers(addr: SocketAddr, headers: &[(&str, &str)]) -> Http {
        let mut defaults = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            defaults.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                reqwest::header::HeaderValue::from_str(value).expect("header value"),
            );
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(WAIT)
            .default_headers(defaults)
            .build()
            .expect("HTTP client");
        Http {
            base: format!("http://{addr}"),
            client,
        }
    }

    /// GET `path` (with its query), answering (status, JSON body).
    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.json(self.client.get(self.url(path))).await
    }

    /// GET `path` with `query` pairs, URL-encoded.
    pub(crate) async fn get_query(&self, path: &str, query: &[(&str, String)]) -> (u16, Value) {
        self.json(self.client.get(self.url(path)).query(query))
            .await
    }

    /// POST `body` as JSON to `path`.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    /// PUT `body` as JSON to `path`.
    pub(crate) async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let request = self
            .client
            .put(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        self.json(request).await
    }

    /// DELETE `path`.
    pub(crate) async fn delete(&self, path: &str) -> (u16, Value) {
        self.json(self.client.delete(self.url(path))).await
    }

    /// POST raw bytes labelled as JSON.
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let request = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        self.json(request).await
    }

    /// GET `path`, answering (status, content type, text body).
    pub(crate) async fn get_text(&self, path: &str) -> (u16, String, String) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("HTTP GET");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let body = response.text().await.expect("HTTP body");
        (status, content_type, body)
    }

    /// Publishes `body` (one event or an array) and returns the `results` of a 200 answer.
    pub(crate) async fn publish(&self, body: &Value) -> Vec<Value> {
        let (status, answer) = self.post("/v1/events", body).await;
        assert_eq!(status, 200, "POST /v1/events: {answer}");
        answer["results"]
            .as_array()
            .unwrap_or_else(|| panic!("results is a list: {answer}"))
            .clone()
    }

    /// Sends `method` to `path` with extra `headers`, answering the raw response.
    pub(crate) async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("HTTP request")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("HTTP body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("HTTP {status} body is not JSON ({err}): {text}"));
        (status, body)
    }
}

/// Asserts an HTTP answer is the JSON error shape with `status` and `code`.
pub(crate) fn assert_http_error(answer: &(u16, Value), status: u16, code: &str) {
    let (got_status, body) = answer;
    assert_eq!(*got_status, status, "HTTP status: {body}");
    assert_eq!(body["error"]["code"], json!(code), "error code: {body}");
    assert!(
        body["error"]["message"].is_string(),
        "error message: {body}"
    );
}
