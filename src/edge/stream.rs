//! `GET /v1/events/stream`: the event stream over plain HTTP, for the tools analytics
//! pipelines already run (Vector, Fluent Bit, `curl -N`, an `EventSource`).
//!
//! A stream is a `since` replay that never ends: it reads the retained history after its
//! cursor, up to what the fan-out has delivered (so, like a WebSocket subscriber, it never
//! sees an event before its publish could be acknowledged), keeps what the subscription's
//! topics and `where` select (the one matching rule, [`selects`]), and waits for the
//! fan-out's next pass when it has caught up. It holds no queue of its own: the response
//! body is produced only as fast as the socket takes it, a chunk of the history at a time,
//! so a slow reader costs a cursor, not memory, and never slows anyone. A reader so slow
//! that the history moves past its cursor is cut off; it reconnects from its last seq and
//! is told to `reset`.
//!
//! Two shapes of the same stream: server-sent events (`Accept: text/event-stream`), whose
//! `id` is the seq so that an `EventSource` resumes by itself with `Last-Event-ID`, and
//! NDJSON otherwise, one frame a line. The frames are the WebSocket's `event` frames, the
//! same bytes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::edge::app::{client_ip, App};
use crate::edge::http::list_query;
use crate::edge::limits::ConnectionPermit;
use crate::edge::ws::refuse_connection;
use crate::error::HubError;
use crate::hub::fanout::selects;
use crate::hub::retention::Record;
use crate::hub::Hub;
use crate::ids::Seq;
use crate::ingest::topic::{Filter, TopicSet};

/// A quiet stream sends a heartbeat this often, so that proxies and readers can tell an
/// idle stream from a dead one.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Records examined per read of the history (one short hold of its lock).
const SCAN_BUDGET: usize = 4096;

/// Events written per chunk of the body at most.
const CHUNK_EVENTS: usize = 256;

/// The stream's two shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    ServerSentEvents,
    Ndjson,
}

impl Shape {
    fn of(headers: &HeaderMap) -> Shape {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        match accept.contains("text/event-stream") {
            true => Shape::ServerSentEvents,
            false => Shape::Ndjson,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Shape::ServerSentEvents => "text/event-stream",
            Shape::Ndjson => "application/x-ndjson",
        }
    }

    fn event(self, record: &Record, out: &mut Vec<u8>) {
        let frame = record.frame.as_str();
        match self {
            Shape::ServerSentEvents => {
                let head = format!("id: {}\nevent: {}\ndata: ", record.seq.0, record.keys.topic);
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(frame.as_bytes());
                out.extend_from_slice(b"\n\n");
            }
            Shape::Ndjson => {
                out.extend_from_slice(frame.as_bytes());
                out.push(b'\n');
            }
        }
    }

    /// Told before any event when the stream cannot resume where it was asked to: it goes
    /// on live after `seq`.
    fn reset(self, epoch: &str, seq: Seq) -> Bytes {
        Bytes::from(match self {
            Shape::ServerSentEvents => {
                let data = json!({ "epoch": epoch, "seq": seq.0 });
                format!("event: reset\ndata: {data}\n\n")
            }
            Shape::Ndjson => {
                format!(
                    "{}\n",
                    json!({ "type": "reset", "epoch": epoch, "seq": seq.0 })
                )
            }
        })
    }

    fn heartbeat(self) -> Bytes {
        Bytes::from_static(match self {
            Shape::ServerSentEvents => b": heartbeat\n\n",
            Shape::Ndjson => b"{\"type\":\"heartbeat\"}\n",
        })
    }
}

/// `GET /v1/events/stream?topics=&where=&since=&epoch=` (scope `subscribe`, checked by the
/// router's middleware like every read).
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "events",
    params(
        ("since" = Option<u64>, Query, description = "Replay after this seq; needs `epoch`"),
        ("epoch" = Option<String>, Query, description = "The epoch `since` is of"),
        ("topics" = Option<String>, Query,
            description = "Topic patterns, comma separated; `all` by default"),
        ("where" = Option<String>, Query, description = "A filter, as JSON text"),
        ("Last-Event-ID" = Option<u64>, Header,
            description = "An SSE reader's last seq, to resume after"),
    ),
    responses(
        (status = 200, description = "Event frames as they come, never ending: NDJSON, or \
            server-sent events when the request accepts text/event-stream \
            (docs/protocol.md, The HTTP event stream)",
            content(
                (String = "application/x-ndjson"),
                (String = "text/event-stream"),
            )),
        crate::edge::openapi::ReadRefusals,
        (status = 429, description = "Too many open connections",
            body = crate::edge::openapi::ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get_stream(
    State(ctx): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, HubError> {
    let Query(params) =
        query.map_err(|e| HubError::bad_request(format!("bad query string: {e}")))?;
    let epoch_param = params.get("epoch").cloned();
    let since_given = params.contains_key("since");
    let q = list_query(Ok(Query(params)), &["since", "topics", "where", "epoch"])?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    HubError::bad_request("`Last-Event-ID` must be a seq (a non-negative integer)")
                })
        })
        .transpose()?;
    if since_given && epoch_param.is_none() {
        return Err(HubError::bad_request(
            "`since` needs `epoch`: a seq means something only in its epoch",
        ));
    }
    let permit = match ctx.connections.admit(client_ip(&ctx, peer, &headers)) {
        Ok(permit) => permit,
        Err(limit) => return Ok(refuse_connection(&ctx.hub, limit)),
    };
    let hub = ctx.hub.clone();
    let shape = Shape::of(&headers);
    // The header wins over `since`: an EventSource reconnects with its first URL.
    let resume = last_event_id.map(Seq).or(since_given.then_some(q.since));
    let live = hub.fanout().watermark();
    let (cursor, preamble) = match resume {
        None => (live, None),
        Some(since) => match epoch_param.as_deref() {
            Some(epoch) if hub.can_resume(since, epoch) => (since, None),
            _ => (live, Some(shape.reset(hub.epoch(), live))),
        },
    };
    let tail = Tail {
        hub: hub.clone(),
        topics: q.topics,
        filter: q.filter,
        cursor,
        shape,
        shutdown: ctx.shutdown.clone(),
        next_heartbeat: Instant::now() + HEARTBEAT,
        _permit: permit,
    };
    let first = futures_util::stream::iter(preamble.map(Ok::<_, Infallible>));
    let rest = futures_util::stream::unfold(tail, |mut tail| async move {
        let chunk = tail.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), tail))
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(first, rest));
    let epoch = HeaderValue::from_str(hub.epoch()).unwrap_or(HeaderValue::from_static(""));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(shape.content_type()),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Asks buffering proxies (nginx) to pass each event on as it comes.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
            (header::HeaderName::from_static("actionhub-epoch"), epoch),
        ],
        body,
    )
        .into_response())
}

/// One stream's place in the history.
struct Tail {
    hub: Arc<Hub>,
    topics: TopicSet,
    filter: Filter,
    /// The last seq examined: the stream goes on after it.
    cursor: Seq,
    shape: Shape,
    shutdown: CancellationToken,
    next_heartbeat: Instant,
    /// The stream counts as one of the hub's connections while it lasts.
    _permit: ConnectionPermit,
}

impl Tail {
    /// The next bytes of the body: events, or a heartbeat after a quiet spell. None ends
    /// the stream: the hub is shutting down, or the reader fell behind the history.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        let hub = self.hub.clone();
        loop {
            // Registered before the watermark is read, so a pass that lands in between
            // still wakes this stream.
            let delivered = pin!(hub.fanout().delivered());
            let target = hub.fanout().watermark();
            if target > self.cursor {
                let (topics, filter) = (self.topics, &self.filter);
                let keep = |r: &Record| selects(topics, filter, r, hub.state());
                let cursor = self.cursor;
                let scanned = hub.with_history(|history| {
                    history
                        .covers(cursor)
                        .then(|| history.scan(cursor, target, SCAN_BUDGET, CHUNK_EVENTS, keep))
                });
                let (records, last) = scanned?;
                // Nothing examined means nothing is retained up to the target (seqs skip
                // after an unclean restart): the stream has caught up with it.
                self.cursor = if last == cursor { target } else { last };
                if records.is_empty() {
                    continue;
                }
                let mut out = Vec::new();
                for record in &records {
                    self.shape.event(record, &mut out);
                }
                self.next_heartbeat = Instant::now() + HEARTBEAT;
                return Some(Bytes::from(out));
            }
            tokio::select! {
                () = delivered => {}
                () = sleep_until(self.next_heartbeat) => {
                    self.next_heartbeat = Instant::now() + HEARTBEAT;
                    return Some(self.shape.heartbeat());
                }
                () = self.shutdown.cancelled() => return None,
            }
        }
    }
}
