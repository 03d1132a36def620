//! One task per connection: `connect`, then frames in and replies, events, pings and
//! close codes out, all through the connection's outbox.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::time::{sleep_until, timeout, Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::replay::{replay_room, snapshot_built, Replay, Snapshot, SNAPSHOT_FRAMES_QUEUED};
use super::{socket_config, Handshake, Socket};
use crate::edge::app::App;
use crate::edge::auth::{now_secs, rfc3339, Auth, AuthError, Principal, Scope};
use crate::edge::limits::{too_deep, TokenBucket};
use crate::edge::outbox::{Duplex, Outbox, Trouble};
use crate::edge::read_ahead::ReadAhead;
use crate::edge::views;
use crate::error::{ErrorCode, HubError};
use crate::hub::fanout::Start;
use crate::hub::{new_sub, Hub};
use crate::ids::ConnId;
use crate::ingest::event::ClientContext;
use crate::ingest::protocol::{
    self, close, ClientFrame, ConnectRequest, FrameError, Op, SubscribeRequest,
};
use crate::ingest::wire::WireFrame;
use crate::metrics::Limit;

/// Publishes one connection may have waiting for acknowledgement; it stops reading beyond.
const MAX_PENDING_PUBLISHES: usize = 1024;
/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a connection's queue may take to leave at shutdown before the rest is dropped
/// and the close frame sent; with [`CLOSE_GRACE`], well within the server's drain deadline.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);
/// Rate-limited publishes in a row (with no accepted publish between) after which a
/// token connection is closed with 4029: it is not backing off.
pub(super) const RATE_LIMITED_CLOSE_AFTER: u32 = 20;
/// Why a connection's loop ended.
pub(super) enum Ending {
    /// The peer closed or the socket failed; nothing more to send.
    Gone,
    /// The hub closes with this code and reason.
    Close(u16, &'static str),
}
type PendingReply = Pin<Box<dyn Future<Output = String> + Send>>;
pub(super) struct Connection {
    pub(super) hub: Arc<Hub>,
    pub(super) id: ConnId,
    pub(super) socket: Socket,
    /// Everything this connection sends, in order; shared with the fan-out.
    pub(super) outbox: Arc<Outbox>,
    pub(super) shutdown: CancellationToken,
    pub(super) replays: VecDeque<Replay>,
    pub(super) pending: FuturesOrdered<PendingReply>,
    pub(super) bad_frames: u32,
    /// The last sign of life from the peer: a frame from it, or its reading what was
    /// queued for it (a busy reader's pong waits behind its queue).
    pub(super) last_heard: Instant,
    /// The outbox's [`Outbox::drained`] count when the last ping looked at it.
    pub(super) drained_seen: u64,
    pub(super) auth: Arc<Auth>,
    /// Who this connection acts as; every op asks it.
    pub(super) principal: Principal,
    /// Publish rate of a token connection.
    pub(super) bucket: Option<TokenBucket>,
    pub(super) rate_limited_in_a_row: u32,
    /// Fires when a token connection's token expires.
    pub(super) expiry: Option<Pin<Box<Sleep>>>,
    /// What the upgrade request said of the client, put into its page events.
    pub(super) client: ClientContext,
}
pub(super) async fn serve(
    ctx: App,
    id: ConnId,
    upgraded: hyper::upgrade::Upgraded,
    handshake: Handshake,
) {
    let hub = ctx.hub.clone();
    let (read, write) = tokio::io::split(TokioIo::new(upgraded));
    let outbox = Outbox::new(Box::new(write), hub.config().queue_capacity)
        .counting_writes(hub.metrics().frames_per_write.clone());
    let outbox = Arc::new(outbox);
    let duplex = Duplex {
        read: ReadAhead::new(read),
        outbox: outbox.clone(),
    };
    let mut socket =
        WebSocketStream::from_raw_socket(duplex, Role::Server, Some(socket_config(&hub))).await;
    hub.metrics().connections.inc();
    // Boxed, like the rarer futures in `Connection::run`, to keep the task small.
    let (connect_id, principal) =
        match Box::pin(admit(&ctx, &mut socket, &outbox, &handshake)).await {
            Ok(admitted) => admitted,
            Err(ending) => {
                Box::pin(finish(&mut socket, &outbox, ending)).await;
                hub.metrics().connections.dec();
                return;
            }
        };
    let (bucket, expiry) = match principal.token() {
        Some(grant) => (
            Some(TokenBucket::new(
                hub.config().publish_rate,
                hub.config().publish_burst,
            )),
            Some(Box::pin(sleep_until(deadline(grant.expires_at)))),
        ),
        None => (None, None),
    };
    // The wire id is unique across restarts, unlike the in-process counter in logs.
    let wire_id = uuid::Uuid::new_v4().to_string();
    debug!(%wire_id, "connected");
    let connected = protocol::connected(
        connect_id,
        &wire_id,
        hub.epoch(),
        hub.latest_seq(),
        principal.scope_json(),
        hub.node(),
    );
    // Queued before the fan-out knows the connection, so it is the first frame.
    let _ = outbox.send([WireFrame::text(&connected).wire().clone()]);
    hub.fanout().add_connection(
        id,
        outbox.clone(),
        principal.token().map(|grant| grant.customer),
    );
    let mut conn = Connection {
        hub: hub.clone(),
        id,
        socket,
        outbox,
        shutdown: ctx.shutdown.clone(),
        replays: VecDeque::new(),
        pending: FuturesOrdered::new(),
        bad_frames: 0,
        last_heard: Instant::now(),
        drained_seen: 0,
        auth: ctx.auth.clone(),
        principal,
        bucket,
        rate_limited_in_a_row: 0,
        expiry,
        client: handshake.client.clone(),
    };
    let ending = conn.run().await;
    hub.fanout().remove_connection(id);
    debug!("connection ends");
    Box::pin(finish(&mut conn.socket, &conn.outbox, ending)).await;
    hub.metrics().connections.dec();
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
    ctx: &App,
    socket: &mut Socket,
    outbox: &Outbox,
    handshake: &Handshake,
) -> Result<(Option<u64>, Principal), Ending> {
    let (id, request) = await_connect(&ctx.hub, socket, outbox).await?;
    let (error, code) = match authenticate(&ctx.auth, handshake, &request) {
        Ok(principal) => return Ok((id, principal)),
        Err(refusal) => refusal,
    };
    ctx.hub.metrics().auth_refused.inc();
    debug!(%error, "connect refused");
    let _ = outbox.send([WireFrame::text(&protocol::error(id, &error)).wire().clone()]);
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
    let max = hub.config().max_json_depth;
    if !too_deep(text.as_bytes(), max) {
        return None;
    }
    hub.metrics().limit_hit(Limit::JsonDepth);
    Some(HubError::bad_request(format!(
        "the frame nests arrays and objects deeper than {max}"
    )))
}
/// Waits for the `connect` frame; returns its `id` and request.
async fn await_connect(
    hub: &Hub,
    socket: &mut Socket,
    outbox: &Outbox,
) -> Result<(Option<u64>, ConnectRequest), Ending> {
    let first = match timeout(hub.config().connect_timeout, socket.next()).await {
        Err(_) => {
            hub.metrics().limit_hit(Limit::ConnectTimeout);
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
    let _ = outbox.send([WireFrame::text(&protocol::error(id, &error)).wire().clone()]);
    Err(Ending::Close(
        close::PROTOCOL_VIOLATION,
        "the first frame must be connect",
    ))
}
/// Sends a close frame (unless the peer is gone) and waits briefly for the peer's close.
/// A close does not wait long behind the queue: a slow consumer's queued frames are
/// dropped at once, and at shutdown whatever has not left within [`SHUTDOWN_FLUSH`]. The
/// events among them are retained; the client resumes with `since`.
async fn finish(socket: &mut Socket, outbox: &Outbox, ending: Ending) {
    let Ending::Close(code, reason) = ending else {
        return;
    };
    match code {
        close::SLOW_CONSUMER => outbox.discard(),
        close::GOING_AWAY => {
            let _ = timeout(SHUTDOWN_FLUSH, poll_fn(|cx| outbox.poll_write(cx))).await;
            outbox.discard();
        }
        _ => {}
    }
    let frame = CloseFrame {
        code: code.into(),
        reason: reason.into(),
    };
    let handshake = async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = timeout(CLOSE_GRACE, handshake).await;
}
impl Connection {
    async fn run(&mut self) -> Ending {
        let ping_every = self.hub.config().ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let capacity = self.hub.config().queue_capacity;
        let (replay_room, snapshot_room) = (
            replay_room(capacity),
            capacity.saturating_sub(SNAPSHOT_FRAMES_QUEUED).max(1),
        );
        loop {
            let reading = self.pending.len() < MAX_PENDING_PUBLISHES;
            let front = self.replays.front();
            let building = front.is_some_and(Replay::building);
            let replaying = front.is_some() && !building;
            let room = match front.and_then(|r| r.snapshot.as_ref()) {
                Some(Snapshot::Ready(_)) => snapshot_room,
                _ => replay_room,
            };
            let outbox = &self.outbox;
            // The futures of handling a frame and of a ping are boxed: they live only while
            // they run, and every idle connection's task would otherwise carry room for
            // them (about 1 KiB).
            let step = tokio::select! {
                _ = self.shutdown.cancelled() => Err(Ending::Close(close::GOING_AWAY, "the hub is shutting down")),
                trouble = poll_fn(|cx| outbox.poll_trouble(cx)) => Err(match trouble {
                    Trouble::Kill(code) => Ending::Close(code, "slow consumer: resume with since"),
                    Trouble::Failed => Ending::Gone,
                }),
                Some(reply) = self.pending.next() => self.send_replies(reply),
                message = self.socket.next(), if reading => Box::pin(self.on_message(message)).await,
                _ = poll_fn(|cx| outbox.poll_room(cx, room)), if replaying => self.step_replay(),
                built = snapshot_built(&mut self.replays), if building => self.snapshot_ready(built),
                _ = ping.tick() => self.ping(ping_every),
                _ = token_expiry(&mut self.expiry) => self.expired(),
            };
            if let Err(ending) = step {
                return ending;
            }
        }
    }

    /// Queues frames and writes what the socket takes now. Never waits: a full socket is
    /// the main loop's to drain, and an outbox past its bound is a slow consumer.
    pub(super) fn write(
        &mut self,
        frames: impl IntoIterator<Item = WireFrame>,
    ) -> Result<(), Ending> {
        match self
            .outbox
            .send(frames.into_iter().map(|f| f.wire().clone()))
        {
            Ok(()) => Ok(()),
            Err(crate::edge::outbox::Refused::Full) => Err(Ending::Close(
                close::SLOW_CONSUMER,
                "slow consumer: resume with since",
            )),
            // Told to close, or the socket failed: the main loop's next poll says which.
            Err(crate::edge::outbox::Refused::Gone) => Ok(()),
        }
    }

    /// Sends `first` and every other reply already done, in one write: a pass of the
    /// pipeline completes a publisher's pipelined publishes together.
    fn send_replies(&mut self, first: String) -> Result<(), Ending> {
        let mut replies = vec![WireFrame::text(&first)];
        while let Some(Some(reply)) = self.pending.next().now_or_never() {
            replies.push(WireFrame::text(&reply));
        }
        self.write(replies)
    }

    fn send(&mut self, frame: String) -> Result<(), Ending> {
        self.write([WireFrame::text(&frame)])
    }

    fn reply_error(&mut self, id: Option<u64>, error: HubError) -> Result<(), Ending> {
        self.send(protocol::error(id, &error))
    }

    /// The token ran out without a `refresh`: say so, then close with 4001.
    fn expired(&mut self) -> Result<(), Ending> {
        let error = HubError::new(ErrorCode::Unauthorized, "the token has expired");
        self.reply_error(None, error)?;
        Err(Ending::Close(close::UNAUTHORIZED, "token expired"))
    }

    /// Queues a reply behind the publishes still waiting, so replies keep frame order.
    fn reply_in_order(&mut self, frame: String) {
        self.pending.push_back(Box::pin(std::future::ready(frame)));
    }

    /// Queues a ping, or ends a connection that has shown no sign of life for two
    /// intervals. The ping is never waited for: the loop goes on reading, writing and
    /// watching for shutdown while it waits behind the queue.
    fn ping(&mut self, every: Duration) -> Result<(), Ending> {
        let drained = self.outbox.drained();
        if drained != self.drained_seen {
            self.drained_seen = drained;
            self.last_heard = Instant::now();
        }
        if self.last_heard.elapsed() > every * 2 {
            debug!("peer silent for two ping intervals");
            return Err(Ending::Gone);
        }
        // The outbox takes every frame at once (it never answers `WouldBlock`), so the
        // sink is always ready and this only queues.
        match self
            .socket
            .start_send_unpin(Message::Ping(Default::default()))
        {
            Ok(()) => {
                self.outbox.flush();
                Ok(())
            }
            Err(_) => Err(Ending::Gone),
        }
    }

    async fn on_message(
        &mut self,
        message: Option<Result<Message, tungstenite::Error>>,
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
                    return self.bad_frame(None, error);
                }
                match protocol::parse_client_frame(&text) {
                    Ok(frame) => {
                        self.bad_frames = 0;
                        self.on_frame(frame).await
                    }
                    Err(FrameError { id, error }) => self.bad_frame(id, error),
                }
            }
            Message::Binary(_) => {
                self.bad_frame(None, HubError::bad_request("frames must be text (JSON)"))
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
            Message::Close(_) => Err(Ending::Gone),
        }
    }

    fn bad_frame(&mut self, id: Option<u64>, error: HubError) -> Result<(), Ending> {
        self.bad_frames += 1;
        self.reply_error(id, error)?;
        if self.bad_frames >= self.hub.config().max_bad_frames {
            // A client's misbehaviour, at debug so that a hostile one cannot flood the
            // log; the close code tells the client, and its error replies count it.
            debug!(
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
            Op::Connect(_) => self.reply_error(id, HubError::bad_request("already connected")),
            Op::Ping => self.send(protocol::pong(id)),
            Op::Publish { event } => {
                if let Err(error) = self.principal.require(Scope::Publish) {
                    self.reply_in_order(protocol::error(id, &error));
                    return Ok(());
                }
                if !self.bucket.as_mut().is_none_or(TokenBucket::take) {
                    return self.rate_limited(id);
                }
                self.rate_limited_in_a_row = 0;
                let (principal, client) = (&self.principal, &self.client);
                let event = event.and_then(|mut e| {
                    principal.check_publish(&e)?;
                    crate::edge::client_info::stamp(&mut e, client)?;
                    Ok(e)
                });
                // Waiting for room in the pipeline is rare; its future is boxed, so that
                // every connection's task does not carry room for it.
                let submitted = match self.hub.try_submit(vec![event]) {
                    Ok(submitted) => submitted,
                    Err(events) => Box::pin(self.hub.submit(events)).await,
                };
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
                if self.hub.fanout().unsubscribe(self.id, &sub) {
                    self.replays.retain(|r| r.req.sub != sub);
                    self.send(protocol::unsubscribed(id, &sub))
                } else {
                    let error = HubError::not_found("no such subscription on this connection");
                    self.reply_error(id, error)
                }
            }
            Op::Subscribe(mut req) => {
                if let Err(error) = self.principal.limit_filter(&mut req.filter) {
                    return self.reply_error(id, error);
                }
                match self.subscribe(id, req) {
                    Ok(()) => Ok(()),
                    Err(error) => {
                        if error.code == ErrorCode::RateLimited {
                            self.hub.metrics().limit_hit(Limit::Subscriptions);
                        }
                        self.reply_error(id, error)
                    }
                }
            }
            Op::Refresh { token } => match self.refresh(&token) {
                Ok(expires_at) => self.send(protocol::refreshed(id, &expires_at)),
                Err(error) => self.reply_error(id, error),
            },
        }
    }

    /// A publish over the token bucket: `rate_limited`, or 4029 for a client that keeps
    /// publishing into an empty bucket.
    fn rate_limited(&mut self, id: Option<u64>) -> Result<(), Ending> {
        self.hub.metrics().limit_hit(Limit::PublishRate);
        self.rate_limited_in_a_row += 1;
        if self.rate_limited_in_a_row >= RATE_LIMITED_CLOSE_AFTER {
            // At debug, like bad frames: `limits_hit{limit="publish_rate"}` counts it.
            debug!("closing a token connection that keeps publishing over its rate");
            return Err(Ending::Close(close::RATE_LIMITED, "publish rate exceeded"));
        }
        let error = HubError::new(
            ErrorCode::RateLimited,
            format!(
                "more than {} publishes a second; slow down",
                self.hub.config().publish_rate
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

    /// Registers a subscription and sends `subscribed`, then its snapshot or replay. The
    /// fan-out queues `subscribed` (and the snapshot) as it files the subscription, so no
    /// live event of the subscription comes before them.
    fn subscribe(&mut self, id: Option<u64>, req: SubscribeRequest) -> Result<(), HubError> {
        let hub = self.hub.clone();
        let max_subs = hub.config().max_subscriptions_per_connection;
        let recovered = req
            .since
            .as_ref()
            .map(|(since, epoch)| hub.can_resume(*since, epoch));
        let subscribed =
            |start| WireFrame::text(&protocol::subscribed(id, &req.sub, start, recovered));
        if let (Some(true), Some((since, _))) = (recovered, &req.since) {
            let since = *since;
            hub.fanout().subscribe(
                self.id,
                new_sub(&req),
                Start::Paused(since),
                max_subs,
                |_| vec![subscribed(since)],
            )?;
            self.outbox.flush();
            self.replays.push_back(Replay {
                req,
                cursor: since,
                snapshot: None,
            });
            return Ok(());
        }
        if req.snapshot {
            let subscribed = |start| protocol::subscribed(id, &req.sub, start, recovered);
            let (at, built) =
                hub.subscribe_with_snapshot(self.id, &req, subscribed, views::snapshot_frames)?;
            self.outbox.flush();
            self.replays.push_back(Replay {
                req,
                cursor: at,
                snapshot: Some(Snapshot::Building(built)),
            });
            return Ok(());
        } else {
            hub.fanout()
                .subscribe(self.id, new_sub(&req), Start::Now, max_subs, |start| {
                    vec![subscribed(start)]
                })?;
        }
        self.outbox.flush();
        Ok(())
    }
}
/// Maps a read error to how the connection ends: an oversized frame closes with 4009.
fn read_error(hub: &Hub, error: tungstenite::Error) -> Ending {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
    match error {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => {
            hub.metrics().limit_hit(Limit::FrameSize);
            Ending::Close(close::TOO_LARGE, "frame too large")
        }
        e => {
            debug!(error = %e, "read failed");
            Ending::Gone
        }
    }
}
