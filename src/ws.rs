//! The WebSocket endpoint `/v1/ws`: one task per connection.
//!
//! The task reads client frames, answers them, drains the connection's outbound queue in
//! as few socket writes as it can (every frame waiting is fed, then one flush), runs any
//! `since` replays a chunk at a time between the other work, and pings. It owns the socket;
//! nothing else writes to it. A write that cannot finish never blocks the hub: the fan-out
//! only `try_send`s into the queue, and a connection told to close (slow consumer, shutdown)
//! stops waiting on its socket at once.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State as AxumState;
use axum::response::Response;
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::error::{ErrorCode, HubError};
use crate::event::Event;
use crate::fanout::{selects, Kill, Start};
use crate::hub::{new_sub, Hub};
use crate::ids::{ConnId, Seq};
use crate::protocol::{self, ClientFrame, FrameError, Op, SubscribeRequest};
use crate::retention::Record;

/// WebSocket subprotocol of version 1.
pub const SUBPROTOCOL: &str = "actionhub.v1";

/// Close codes of PROTOCOL.md section 5.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_VIOLATION: u16 = 4000;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const TOO_LARGE: u16 = 4009;
}

/// Replayed records examined per step, and sent per step at most; keeps one replay from
/// starving the connection's live traffic.
const REPLAY_SCAN_BUDGET: usize = 4096;
const REPLAY_CHUNK: usize = 256;
/// Publishes one connection may have waiting for acknowledgement; it stops reading beyond.
const MAX_PENDING_PUBLISHES: usize = 1024;
/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What the router shares with every connection.
#[derive(Clone)]
pub struct WsContext {
    pub hub: Arc<Hub>,
    pub shutdown: CancellationToken,
    pub tracker: tokio_util::task::TaskTracker,
}

/// Axum handler: limits, subprotocol, then hands the socket to a connection task.
pub async fn upgrade(AxumState(ctx): AxumState<WsContext>, ws: WebSocketUpgrade) -> Response {
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
            tracker.spawn(serve(ctx, conn, socket).instrument(span));
            std::future::ready(())
        })
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
}

/// A `since` replay in progress.
struct Replay {
    req: SubscribeRequest,
    /// The last seq examined.
    cursor: Seq,
}

async fn serve(ctx: WsContext, id: ConnId, mut socket: WebSocket) {
    let hub = ctx.hub.clone();
    hub.metrics.connections.inc();
    let connect_id = match await_connect(&hub, &mut socket).await {
        Ok(connect_id) => connect_id,
        Err(ending) => {
            finish(&mut socket, ending).await;
            hub.metrics.connections.dec();
            return;
        }
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
    };
    // The wire id is unique across restarts, unlike the in-process counter in logs.
    let wire_id = uuid::Uuid::new_v4().to_string();
    debug!(%wire_id, "connected");
    let connected = protocol::connected(
        connect_id,
        &wire_id,
        &hub.epoch,
        hub.latest_seq(),
        Hub::open_scope(),
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

/// Waits for the `connect` frame; returns its `id`.
async fn await_connect(hub: &Hub, socket: &mut WebSocket) -> Result<Option<u64>, Ending> {
    let first = match timeout(hub.config.connect_timeout, socket.recv()).await {
        Err(_) => {
            return Err(Ending::Close(
                close::PROTOCOL_VIOLATION,
                "no connect frame in time",
            ))
        }
        Ok(None) | Ok(Some(Err(_))) => return Err(Ending::Gone),
        Ok(Some(Ok(message))) => message,
    };
    let refuse = |id, message: &str| (id, HubError::bad_request(message));
    let (id, error) = match first {
        Message::Text(text) => match protocol::parse_client_frame(&text) {
            Ok(ClientFrame {
                id,
                op: Op::Connect(_),
            }) => return Ok(id),
            Ok(ClientFrame { id, .. }) => refuse(id, "the first frame must be connect"),
            Err(FrameError { id, error }) => (id, error),
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
            Some(Err(e)) => return Err(read_error(e)),
        };
        match message {
            Message::Text(text) => match protocol::parse_client_frame(&text) {
                Ok(frame) => {
                    self.bad_frames = 0;
                    self.on_frame(frame).await
                }
                Err(FrameError { id, error }) => self.bad_frame(id, error).await,
            },
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
                let submitted = self.hub.submit(vec![Event::from_json(event)]).await;
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
            Op::Subscribe(req) => match self.subscribe(id, req).await {
                Ok(()) => Ok(()),
                Err(Ok(error)) => self.reply_error(id, error).await,
                Err(Err(ending)) => Err(ending),
            },
        }
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
            let caught_up = target.0.saturating_sub(last.0) < REPLAY_CHUNK as u64;
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
fn read_error(error: axum::Error) -> Ending {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
    match error.into_inner().downcast::<Error>() {
        Ok(e) if matches!(*e, Error::Capacity(CapacityError::MessageTooLong { .. })) => {
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
