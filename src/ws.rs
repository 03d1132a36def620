//! The WebSocket endpoint `/v1/ws`: one task per connection.
//!
//! The task reads client frames, answers them, drains the connection's outbound queue in
//! as few socket writes as it can (every frame waiting is fed, then one flush), runs any
//! `since` replays a chunk at a time between the other work, and pings. It owns the socket;
//! nothing else writes to it. A write that cannot finish never blocks the hub: the fan-out
//! only `try_send`s into the queue, and a connection told to close (slow consumer, shutdown)
//! stops waiting on its socket at once.
//!
//! Security (PROTOCOL.md section 6) enters at two points: the upgrade, which counts the
//! connection against the connection limits, and `connect`, which turns credentials into
//! the connection's [`Principal`]. Every later op asks that principal (see
//! [`crate::auth`]); a token connection also has a publish token bucket and is closed with
//! 4001 when its token expires unless a `refresh` replaced it.

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State as AxumState};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::auth::{now_secs, rfc3339, Auth, AuthError, Principal, Scope};
use crate::error::{ErrorCode, HubError};
use crate::event::Event;
use crate::fanout::{selects, Kill, Start};
use crate::hub::{new_sub, Hub};
use crate::ids::{ConnId, Seq};
use crate::limits::{too_deep, ConnectionLimits, ConnectionPermit, Limit, TokenBucket};
use crate::protocol::{self, ClientFrame, ConnectRequest, FrameError, Op, SubscribeRequest};
use crate::retention::Record;

/// WebSocket subprotocol of version 1.
pub const SUBPROTOCOL: &str = "actionhub.v1";

/// Close codes of PROTOCOL.md section 5.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_VIOLATION: u16 = 4000;
    pub const UNAUTHORIZED: u16 = 4001;
    pub const FORBIDDEN: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const TOO_LARGE: u16 = 4009;
    pub const RATE_LIMITED: u16 = 4029;
}

/// Replayed records examined per step, and sent per step at most; keeps one replay from
/// starving the connection's live traffic.
const REPLAY_SCAN_BUDGET: usize = 4096;
const REPLAY_CHUNK: usize = 256;
/// Publishes one connection may have waiting for acknowledgement; it stops reading beyond.
const MAX_PENDING_PUBLISHES: usize = 1024;
/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Rate-limited publishes in a row (with no accepted publish between) after which a
/// token connection is closed with 4029: it is not backing off.
pub const RATE_LIMITED_CLOSE_AFTER: u32 = 20;

/// What the router shares with every connection.
#[derive(Clone)]
pub struct WsContext {
    pub hub: Arc<Hub>,
    pub shutdown: CancellationToken,
    pub tracker: tokio_util::task::TaskTracker,
    /// Credentials and origins, from the configuration.
    pub auth: Arc<Auth>,
    /// Open connections, in total and per client address.
    pub connections: Arc<ConnectionLimits>,
}

impl WsContext {
    pub fn new(
        hub: Arc<Hub>,
        shutdown: CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    ) -> WsContext {
        let config = &hub.config;
        WsContext {
            auth: Arc::new(Auth::new(config)),
            connections: Arc::new(ConnectionLimits::new(
                config.max_connections,
                config.max_connections_per_ip,
            )),
            hub,
            shutdown,
            tracker,
        }
    }
}

/// The client's address: the peer, or behind a trusted proxy the last `X-Forwarded-For`
/// entry (the one the proxy itself appended; earlier ones are the client's to forge).
pub fn client_ip(ctx: &WsContext, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let forwarded = || {
        let value = headers.get_all("x-forwarded-for").iter().next_back()?;
        value.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
    };
    match ctx.hub.config.trust_forwarded_for {
        true => forwarded().unwrap_or(peer.ip()),
        false => peer.ip(),
    }
}

/// What the upgrade request said that `connect` needs later.
struct Handshake {
    api_key: Option<String>,
    origin: Option<String>,
    /// Holds the connection's place under the connection limits until it ends.
    _permit: ConnectionPermit,
}

/// Axum handler: connection limits, frame limits, subprotocol, then hands the socket to a
/// connection task. Credentials are checked at `connect`, since a browser can send its
/// token only in a frame.
pub async fn upgrade(
    AxumState(ctx): AxumState<WsContext>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let permit = match ctx.connections.admit(client_ip(&ctx, peer, &headers)) {
        Ok(permit) => permit,
        Err(limit) => return refuse_connection(&ctx.hub, limit),
    };
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let handshake = Handshake {
        api_key: text(crate::http::API_KEY_HEADER),
        origin: text(header::ORIGIN.as_str()),
        _permit: permit,
    };
    let config = &ctx.hub.config;
    let limit = config.max_frame_bytes;
    ws.protocols([SUBPROTOCOL])
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(64 * 1024)
        .on_upgrade(move |socket| {
            let tracker = ctx.tracker.clone();
            let conn = ctx.hub.next_conn_id();
            let span = tracing::debug_span!("conn", id = conn.0);
            tracker.spawn(serve(ctx, conn, socket, handshake).instrument(span));
            std::future::ready(())
        })
}

/// A connection refused by a connection limit: 503 when the hub is full, 429 when this
/// address holds too many; JSON error shape, with `Retry-After`.
fn refuse_connection(hub: &Hub, limit: Limit) -> Response {
    hub.metrics.limit_hit(limit);
    let error = match limit {
        Limit::ConnectionsPerIp => HubError::new(
            ErrorCode::RateLimited,
            "too many connections from this address",
        ),
        _ => HubError::new(
            ErrorCode::Unavailable,
            "the hub holds all the connections it may",
        ),
    };
    let retry = crate::limits::RETRY_AFTER.as_secs().to_string();
    ([(header::RETRY_AFTER, retry)], error).into_response()
}

/// Why a connection's loop ended.
enum Ending {
    /// The peer closed or the socket failed; nothing more to send.
    Gone,
    /// The hub closes with this code and reason.
    Close(u16, &'static str),
}

type PendingReply = Pin<Box<dyn Future<Output = String> + Send>>;

struct Connection {
    hub: Arc<Hub>,
    id: ConnId,
    socket: WebSocket,
    outbound: mpsc::Receiver<Utf8Bytes>,
    kill: Arc<Kill>,
    shutdown: CancellationToken,
    replays: VecDeque<Replay>,
    pending: FuturesOrdered<PendingReply>,
    bad_frames: u32,
    last_heard: Instant,
    auth: Arc<Auth>,
    /// Who this connection acts as; every op asks it.
    principal: Principal,
    /// Publish rate of a token connection.
    bucket: Option<TokenBucket>,
    rate_limited_in_a_row: u32,
    /// Fires when a token connection's token expires.
    expiry: Option<Pin<Box<Sleep>>>,
}

/// A `since` replay in progress.
struct Replay {
    req: SubscribeRequest,
    /// The last seq examined.
    cursor: Seq,
}

async fn serve(ctx: WsContext, id: ConnId, mut socket: WebSocket, handshake: Handshake) {
    let hub = ctx.hub.clone();
    hub.metrics.connections.inc();
    let (connect_id, principal) = match admit(&ctx, &mut socket, &handshake).await {
        Ok(admitted) => admitted,
        Err(ending) => {
            finish(&mut socket, ending).await;
            hub.metrics.connections.dec();
            return;
        }
    };
    let (bucket, expiry) = match principal.token() {
        Some(grant) => (
            Some(TokenBucket::new(
                hub.config.publish_rate,
                hub.config.publish_burst,
            )),
            Some(Box::pin(sleep_until(deadline(grant.expires_at)))),
        ),
        None => (None, None),
    };
    let (tx, outbound) = mpsc::channel(hub.config.queue_capacity);
    let kill = Arc::new(Kill::default());
    hub.fanout.add_connection(id, tx, kill.clone());
    let mut conn = Connection {
        hub: hub.clone(),
        id,
        socket,
        outbound,
        kill,
        shutdown: ctx.shutdown.clone(),
        replays: VecDeque::new(),
        pending: FuturesOrdered::new(),
        bad_frames: 0,
        last_heard: Instant::now(),
        auth: ctx.auth.clone(),
        principal,
        bucket,
        rate_limited_in_a_row: 0,
        expiry,
    };
    // The wire id is unique across restarts, unlike the in-process counter in logs.
    let wire_id = uuid::Uuid::new_v4().to_string();
    debug!(%wire_id, "connected");
    let connected = protocol::connected(
        connect_id,
        &wire_id,
        &hub.epoch,
        hub.latest_seq(),
        conn.principal.scope_json(),
    );
    let ending = match conn.send(connected).await {
        Ok(()) => conn.run().await,
        Err(ending) => ending,
    };
    hub.fanout.remove_connection(id);
    debug!("connection ends");
    finish(&mut conn.socket, ending).await;
    hub.metrics.connections.dec();
}

/// Longest a token's expiry is waited for; a later `exp` (a signer's mistake, or one
/// chosen to overflow the clock) is treated as this far away.
const MAX_TOKEN_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// The tokio instant of a token expiry given in seconds since the Unix epoch.
fn deadline(expires_at: u64) -> Instant {
    let wait = Duration::from_secs(expires_at.saturating_sub(now_secs()));
    Instant::now() + wait.min(MAX_TOKEN_WAIT)
}

/// Waits for `connect` and authenticates it; returns its `id` and the principal. A
/// refused `connect` is answered with its error, and the connection ends with 4001/4003.
async fn admit(
    ctx: &WsContext,
    socket: &mut WebSocket,
    handshake: &Handshake,
) -> Result<(Option<u64>, Principal), Ending> {
    let (id, request) = await_connect(&ctx.hub, socket).await?;
    let (error, code) = match authenticate(&ctx.auth, handshake, &request) {
        Ok(principal) => return Ok((id, principal)),
        Err(refusal) => refusal,
    };
    ctx.hub.metrics.auth_refused.inc();
    debug!(%error, "connect refused");
    let _ = socket
        .send(Message::Text(protocol::error(id, &error).into()))
        .await;
    let reason = match code {
        close::FORBIDDEN => "forbidden",
        _ => "unauthorized",
    };
    Err(Ending::Close(code, reason))
}

/// Completes when the token expires; never on a connection without a token.
async fn token_expiry(expiry: &mut Option<Pin<Box<Sleep>>>) {
    match expiry {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The connection's principal from its credentials: `token` or `apiKey` in `connect`, or
/// the upgrade's `X-API-Key`. A token from a disallowed origin is refused with 4003.
fn authenticate(
    auth: &Auth,
    handshake: &Handshake,
    request: &ConnectRequest,
) -> Result<Principal, (HubError, u16)> {
    let api_key = request.api_key.as_deref().or(handshake.api_key.as_deref());
    let principal = auth
        .authenticate(request.token.as_deref(), api_key)
        .map_err(|e| (HubError::from(e), close::UNAUTHORIZED))?;
    if principal.token().is_some() && !auth.origin_allowed(handshake.origin.as_deref()) {
        return Err((HubError::from(AuthError::Origin), close::FORBIDDEN));
    }
    Ok(principal)
}

/// The refusal of a frame nested deeper than the limit, or None.
fn depth_error(hub: &Hub, text: &str) -> Option<HubError> {
    let max = hub.config.max_json_depth;
    if !too_deep(text.as_bytes(), max) {
        return None;
    }
    hub.metrics.limit_hit(Limit::JsonDepth);
    Some(HubError::bad_request(format!(
        "the frame nests arrays and objects deeper than {max}"
    )))
}

/// Waits for the `connect` frame; returns its `id` and request.
async fn await_connect(
    hub: &Hub,
    socket: &mut WebSocket,
) -> Result<(Option<u64>, ConnectRequest), Ending> {
    let first = match timeout(hub.config.connect_timeout, socket.recv()).await {
        Err(_) => {
            hub.metrics.limit_hit(Limit::ConnectTimeout);
            return Err(Ending::Close(
                close::PROTOCOL_VIOLATION,
                "no connect frame in time",
            ));
        }
        Ok(None) => return Err(Ending::Gone),
        Ok(Some(Err(e))) => return Err(read_error(hub, e)),
        Ok(Some(Ok(message))) => message,
    };
    let refuse = |id, message: &str| (id, HubError::bad_request(message));
    let (id, error) = match first {
        Message::Text(text) => match depth_error(hub, &text) {
            Some(error) => (None, error),
            None => match protocol::parse_client_frame(&text) {
                Ok(ClientFrame {
                    id,
                    op: Op::Connect(request),
                }) => return Ok((id, request)),
                Ok(ClientFrame { id, .. }) => refuse(id, "the first frame must be connect"),
                Err(FrameError { id, error }) => (id, error),
            },
        },
        Message::Close(_) => return Err(Ending::Gone),
        _ => refuse(None, "the first frame must be a text frame with op connect"),
    };
    let _ = socket
        .send(Message::Text(protocol::error(id, &error).into()))
        .await;
    Err(Ending::Close(
        close::PROTOCOL_VIOLATION,
        "the first frame must be connect",
    ))
}

/// Sends a close frame (unless the peer is gone) and waits briefly for the peer's close.
async fn finish(socket: &mut WebSocket, ending: Ending) {
    let Ending::Close(code, reason) = ending else {
        return;
    };
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let handshake = async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = timeout(CLOSE_GRACE, handshake).await;
}

impl Connection {
    async fn run(&mut self) -> Ending {
        let ping_every = self.hub.config.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut batch: Vec<Utf8Bytes> = Vec::with_capacity(64);
        loop {
            let reading = self.pending.len() < MAX_PENDING_PUBLISHES;
            let replaying = !self.replays.is_empty();
            let step = tokio::select! {
                _ = self.shutdown.cancelled() => Err(Ending::Close(close::GOING_AWAY, "the hub is shutting down")),
                code = self.kill.fired() => Err(Ending::Close(code, "slow consumer: resume with since")),
                n = self.outbound.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        // The fan-out dropped this connection (its sender is gone).
                        Err(Ending::Close(close::SLOW_CONSUMER, "slow consumer: resume with since"))
                    } else {
                        let frames = std::mem::take(&mut batch);
                        self.write(frames).await
                    }
                }
                Some(reply) = self.pending.next() => self.send(reply).await,
                message = self.socket.recv(), if reading => self.on_message(message).await,
                _ = std::future::ready(()), if replaying => self.step_replay().await,
                _ = ping.tick() => self.ping(ping_every).await,
                _ = token_expiry(&mut self.expiry) => self.expired().await,
            };
            if let Err(ending) = step {
                return ending;
            }
        }
    }

    /// Writes frames with one flush, racing the kill switch and shutdown so that a peer
    /// that stopped reading cannot hold the task.
    async fn write(&mut self, frames: Vec<Utf8Bytes>) -> Result<(), Ending> {
        let socket = &mut self.socket;
        let io = async {
            for frame in frames {
                socket.feed(Message::Text(frame)).await?;
            }
            socket.flush().await
        };
        tokio::select! {
            result = io => result.map_err(|e| {
                debug!(error = %e, "write failed");
                Ending::Gone
            }),
            code = self.kill.fired() => Err(Ending::Close(code, "slow consumer: resume with since")),
            _ = self.shutdown.cancelled() => Err(Ending::Close(close::GOING_AWAY, "the hub is shutting down")),
        }
    }

    async fn send(&mut self, frame: String) -> Result<(), Ending> {
        self.write(vec![frame.into()]).await
    }

    async fn reply_error(&mut self, id: Option<u64>, error: HubError) -> Result<(), Ending> {
        self.send(protocol::error(id, &error)).await
    }

    /// The token ran out without a `refresh`: say so, then close with 4001.
    async fn expired(&mut self) -> Result<(), Ending> {
        let error = HubError::new(ErrorCode::Unauthorized, "the token has expired");
        self.reply_error(None, error).await?;
        Err(Ending::Close(close::UNAUTHORIZED, "token expired"))
    }

    /// Queues a reply behind the publishes still waiting, so replies keep frame order.
    fn reply_in_order(&mut self, frame: String) {
        self.pending.push_back(Box::pin(std::future::ready(frame)));
    }

    async fn ping(&mut self, every: Duration) -> Result<(), Ending> {
        if self.last_heard.elapsed() > every * 2 {
            debug!("peer silent for two ping intervals");
            return Err(Ending::Gone);
        }
        let socket = &mut self.socket;
        match timeout(every, socket.send(Message::Ping(Default::default()))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Ending::Gone),
        }
    }

    async fn on_message(
        &mut self,
        message: Option<Result<Message, axum::Error>>,
    ) -> Result<(), Ending> {
        self.last_heard = Instant::now();
        let message = match message {
            None => return Err(Ending::Gone),
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(read_error(&self.hub, e)),
        };
        match message {
            Message::Text(text) => {
                if let Some(error) = depth_error(&self.hub, &text) {
                    return self.bad_frame(None, error).await;
                }
                match protocol::parse_client_frame(&text) {
                    Ok(frame) => {
                        self.bad_frames = 0;
                        self.on_frame(frame).await
                    }
                    Err(FrameError { id, error }) => self.bad_frame(id, error).await,
                }
            }
            Message::Binary(_) => {
                self.bad_frame(None, HubError::bad_request("frames must be text (JSON)"))
                    .await
            }
            Message::Ping(_) | Message::Pong(_) => Ok(()),
            Message::Close(_) => Err(Ending::Gone),
        }
    }

    async fn bad_frame(&mut self, id: Option<u64>, error: HubError) -> Result<(), Ending> {
        self.bad_frames += 1;
        self.reply_error(id, error).await?;
        if self.bad_frames >= self.hub.config.max_bad_frames {
            warn!(
                bad_frames = self.bad_frames,
                "closing a connection that keeps sending bad frames"
            );
            return Err(Ending::Close(
                close::PROTOCOL_VIOLATION,
                "too many bad frames in a row",
            ));
        }
        Ok(())
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Result<(), Ending> {
        let id = frame.id;
        match frame.op {
            Op::Connect(_) => {
                self.reply_error(id, HubError::bad_request("already connected"))
                    .await
            }
            Op::Ping => self.send(protocol::pong(id)).await,
            Op::Publish { event } => {
                if let Err(error) = self.principal.require(Scope::Publish) {
                    self.reply_in_order(protocol::error(id, &error));
                    return Ok(());
                }
                if !self.bucket.as_mut().is_none_or(TokenBucket::take) {
                    return self.rate_limited(id);
                }
                self.rate_limited_in_a_row = 0;
                let principal = &self.principal;
                let event = Event::from_json(event).and_then(|e| {
                    principal.check_publish(&e)?;
                    Ok(e)
                });
                let submitted = self.hub.submit(vec![event]).await;
                self.pending.push_back(Box::pin(async move {
                    match submitted.acknowledged().await.pop() {
                        Some(Ok(ack)) => protocol::published(id, ack.seq, ack.duplicate),
                        Some(Err(error)) => protocol::error(id, &error),
                        None => {
                            protocol::error(id, &HubError::new(ErrorCode::Internal, "no result"))
                        }
                    }
                }));
                Ok(())
            }
            Op::Unsubscribe { sub } => {
                if self.hub.fanout.unsubscribe(self.id, &sub) {
                    self.replays.retain(|r| r.req.sub != sub);
                    self.send(protocol::unsubscribed(id, &sub)).await
                } else {
                    let error = HubError::not_found("no such subscription on this connection");
                    self.reply_error(id, error).await
                }
            }
            Op::Subscribe(mut req) => {
                if let Err(error) = self.principal.limit_filter(&mut req.filter) {
                    return self.reply_error(id, error).await;
                }
                match self.subscribe(id, req).await {
                    Ok(()) => Ok(()),
                    Err(Ok(error)) => {
                        if error.code == ErrorCode::RateLimited {
                            self.hub.metrics.limit_hit(Limit::Subscriptions);
                        }
                        self.reply_error(id, error).await
                    }
                    Err(Err(ending)) => Err(ending),
                }
            }
            Op::Refresh { token } => match self.refresh(&token) {
                Ok(expires_at) => self.send(protocol::refreshed(id, &expires_at)).await,
                Err(error) => self.reply_error(id, error).await,
            },
        }
    }

    /// A publish over the token bucket: `rate_limited`, or 4029 for a client that keeps
    /// publishing into an empty bucket.
    fn rate_limited(&mut self, id: Option<u64>) -> Result<(), Ending> {
        self.hub.metrics.limit_hit(Limit::PublishRate);
        self.rate_limited_in_a_row += 1;
        if self.rate_limited_in_a_row >= RATE_LIMITED_CLOSE_AFTER {
            warn!("closing a token connection that keeps publishing over its rate");
            return Err(Ending::Close(close::RATE_LIMITED, "publish rate exceeded"));
        }
        let error = HubError::new(
            ErrorCode::RateLimited,
            format!(
                "more than {} publishes a second; slow down",
                self.hub.config.publish_rate
            ),
        );
        self.reply_in_order(protocol::error(id, &error));
        Ok(())
    }

    /// Replaces the token of a token connection with a fresh one for the same customer.
    /// A refused refresh leaves the current token in force. Returns the new expiry.
    fn refresh(&mut self, token: &str) -> Result<String, HubError> {
        let Some(current) = self.principal.token() else {
            return Err(HubError::bad_request(
                "refresh is for connections made with a token",
            ));
        };
        let fresh = self.auth.token(token)?;
        let Some(grant) = fresh.token() else {
            return Err(AuthError::BadToken("not a browser token").into());
        };
        if grant.customer != current.customer {
            return Err(HubError::new(
                ErrorCode::Forbidden,
                "a refreshed token must be for the same customer",
            ));
        }
        let expires_at = grant.expires_at;
        if let Some(expiry) = self.expiry.as_mut() {
            expiry.as_mut().reset(deadline(expires_at));
        }
        self.principal = fresh;
        Ok(rfc3339(expires_at))
    }

    /// Registers a subscription and sends `subscribed`, then its snapshot or replay.
    /// `Err(Ok(e))`: refused with `e`; `Err(Err(_))`: the connection ends.
    async fn subscribe(
        &mut self,
        id: Option<u64>,
        req: SubscribeRequest,
    ) -> Result<(), Result<HubError, Ending>> {
        let hub = self.hub.clone();
        let max_subs = hub.config.max_subscriptions_per_connection;
        let recovered = req
            .since
            .as_ref()
            .map(|(since, epoch)| *epoch == hub.epoch && hub.retention.read().covers(*since));
        if let (Some(true), Some((since, _))) = (recovered, &req.since) {
            hub.fanout
                .subscribe(self.id, new_sub(&req), Start::Paused, max_subs)
                .map_err(Ok)?;
            let since = *since;
            self.send(protocol::subscribed(id, &req.sub, since, Some(true)))
                .await
                .map_err(Err)?;
            self.replays.push_back(Replay { req, cursor: since });
            return Ok(());
        }
        if req.snapshot {
            let (start, snapshot) = hub.subscribe_with_snapshot(self.id, &req).map_err(Ok)?;
            self.send(protocol::subscribed(id, &req.sub, start, recovered))
                .await
                .map_err(Err)?;
            return self.send(snapshot).await.map_err(Err);
        }
        let start = hub
            .fanout
            .subscribe(self.id, new_sub(&req), Start::Now, max_subs)
            .map_err(Ok)?;
        self.send(protocol::subscribed(id, &req.sub, start, recovered))
            .await
            .map_err(Err)
    }

    /// Sends the next chunk of the oldest replay; when it has caught up with the fan-out,
    /// makes its subscription live.
    async fn step_replay(&mut self) -> Result<(), Ending> {
        let hub = self.hub.clone();
        let Some(replay) = self.replays.front_mut() else {
            return Ok(());
        };
        let (topics, filter) = (replay.req.topics, replay.req.filter.clone());
        let keep = |r: &Record| selects(topics, &filter, r, &hub.state);
        let chunk = {
            let retention = hub.retention.read();
            if !retention.covers(replay.cursor) {
                return Err(Ending::Close(
                    close::SLOW_CONSUMER,
                    "replay fell behind the retained history",
                ));
            }
            let target = hub.fanout.watermark();
            let (records, last) = retention.scan(
                replay.cursor,
                target,
                REPLAY_SCAN_BUDGET,
                REPLAY_CHUNK,
                keep,
            );
            replay.cursor = last;
            let caught_up = retention.count_between(last, target) < REPLAY_CHUNK;
            (records, caught_up)
        };
        let (mut records, caught_up) = chunk;
        let sub = replay.req.sub.clone();
        let once = replay.req.once;
        let fires_once = once && !records.is_empty();
        if caught_up && !fires_once {
            let cursor = replay.cursor;
            let tail = hub.fanout.go_live(self.id, &sub, |watermark| {
                let retention = hub.retention.read();
                retention.covers(cursor).then(|| {
                    retention
                        .scan(cursor, watermark, usize::MAX, usize::MAX, keep)
                        .0
                })
            });
            match tail {
                None => {} // unsubscribed meanwhile
                Some(None) => {
                    return Err(Ending::Close(
                        close::SLOW_CONSUMER,
                        "replay fell behind the retained history",
                    ))
                }
                Some(Some(tail)) => records.extend(tail),
            }
            self.replays.pop_front();
        }
        if fires_once {
            records.truncate(1);
            hub.fanout.unsubscribe(self.id, &sub);
            self.replays.retain(|r| r.req.sub != sub);
        }
        let frames = records.iter().map(|r| r.frame.clone()).collect();
        self.write(frames).await
    }
}

/// Maps a read error to how the connection ends: an oversized frame closes with 4009.
fn read_error(hub: &Hub, error: axum::Error) -> Ending {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
    match error.into_inner().downcast::<Error>() {
        Ok(e) if matches!(*e, Error::Capacity(CapacityError::MessageTooLong { .. })) => {
            hub.metrics.limit_hit(Limit::FrameSize);
            Ending::Close(close::TOO_LARGE, "frame too large")
        }
        Ok(e) => {
            debug!(error = %e, "read failed");
            Ending::Gone
        }
        Err(e) => {
            debug!(error = %e, "read failed");
            Ending::Gone
        }
    }
}
