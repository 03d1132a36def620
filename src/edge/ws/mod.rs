//! The WebSocket endpoint `/v1/ws`: one task per connection.
//!
//! The handshake is done here (RFC 6455 section 4.2), so that the connection keeps its
//! socket's write half: everything it sends goes through its [`Outbox`], which the
//! pipeline thread writes events into directly (one write per connection per pass) and the
//! task writes its replies into. tungstenite reads and parses the client's frames; its own
//! writes (pongs, pings, close) go through the outbox too, so every frame keeps its place.
//!
//! The task reads client frames, answers them, runs any `since` replays a chunk at a time
//! between the other work, pings, and takes over the writing when the socket is full. A
//! write never blocks the hub: the fan-out only queues into the bounded outbox, and a
//! connection told to close (slow consumer, shutdown) stops waiting on its socket at once.
//!
//! Security (PROTOCOL.md section 6) enters at two points: the upgrade, which counts the
//! connection against the connection limits, and `connect`, which turns credentials into
//! the connection's [`Principal`]. Every later op asks that principal (see
//! [`crate::edge::auth`]); a token connection also has a publish token bucket and is closed with
//! 4001 when its token expires unless a `refresh` replaced it.

mod connection;
mod replay;

use connection::serve;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::ReadHalf;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, Instrument};

use crate::edge::app::{client_ip, App};
use crate::edge::limits::ConnectionPermit;
use crate::edge::outbox::Duplex;
use crate::edge::read_ahead::ReadAhead;
use crate::error::{ErrorCode, HubError};
use crate::hub::Hub;
use crate::ingest::event::ClientContext;
use crate::metrics::Limit;

/// The client's frames, parsed by tungstenite; its writes go to the outbox.
pub(super) type Socket =
    WebSocketStream<Duplex<ReadAhead<ReadHalf<TokioIo<hyper::upgrade::Upgraded>>>>>;

/// WebSocket subprotocol of version 1.
pub const SUBPROTOCOL: &str = "actionhub.v1";

/// What the upgrade request said that `connect` needs later.
pub(super) struct Handshake {
    pub(super) api_key: Option<String>,
    pub(super) origin: Option<String>,
    /// What the upgrade request says of the client, for its page events.
    pub(super) client: ClientContext,
    /// Holds the connection's place under the connection limits until it ends.
    _permit: ConnectionPermit,
}

/// Axum handler: the WebSocket handshake, connection limits, subprotocol, then hands the
/// socket to a connection task. Credentials are checked at `connect`, since a browser can
/// send its token only in a frame.
pub async fn upgrade(
    State(ctx): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let accept = match handshake_accept(headers) {
        Ok(accept) => accept,
        // 426 names the version this endpoint speaks (RFC 6455 section 4.4).
        Err((status, message)) => {
            let version = [(header::SEC_WEBSOCKET_VERSION, "13")];
            return (status, version, message).into_response();
        }
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded",
        )
            .into_response();
    };
    let headers = request.headers();
    let permit = match ctx.connections.admit(client_ip(&ctx, peer, headers)) {
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
        api_key: text(crate::edge::http::API_KEY_HEADER),
        origin: text(header::ORIGIN.as_str()),
        client: crate::edge::client_info::from_headers(ctx.hub.config(), headers),
        _permit: permit,
    };
    let offers_ours = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    let tracker = ctx.tracker.clone();
    let conn = ctx.hub.next_conn_id();
    let span = tracing::debug_span!("conn", id = conn.0);
    tracker.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => serve(ctx, conn, upgraded, handshake).await,
                Err(e) => debug!(error = %e, "the upgrade did not complete"),
            }
        }
        .instrument(span),
    );
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let out = response.headers_mut();
    out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if offers_ours {
        out.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    response
}

/// Checks an upgrade request (RFC 6455 section 4.2.1) and returns the
/// `Sec-WebSocket-Accept` value for its key, or the status and reason to refuse with.
fn handshake_accept(headers: &HeaderMap) -> Result<HeaderValue, (StatusCode, &'static str)> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let upgrade_required = |message| (StatusCode::UPGRADE_REQUIRED, message);
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(upgrade_required("this endpoint takes a WebSocket upgrade"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return Err(upgrade_required("Sec-WebSocket-Version must be 13"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or((StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing"))?;
    let accept = derive_accept_key(key.as_bytes());
    Ok(HeaderValue::from_str(&accept).expect("base64 is a valid header value"))
}

/// A connection refused by a connection limit: 503 when the hub is full, 429 when this
/// address holds too many; JSON error shape, with `Retry-After`.
/// An HTTP event stream is refused alike.
pub(crate) fn refuse_connection(hub: &Hub, limit: Limit) -> Response {
    hub.metrics().limit_hit(limit);
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
    let retry = crate::edge::limits::RETRY_AFTER.as_secs().to_string();
    ([(header::RETRY_AFTER, retry)], error).into_response()
}

/// tungstenite's settings: frame limits from the configuration, a 1 KiB read buffer, and
/// no write buffer (the outbox is the buffer). The read buffer is most of an idle
/// connection's memory; a larger frame grows it while it is read, and a publisher's
/// pipelined frames are read ahead below it (`edge::read_ahead`), so they do not cost a
/// system call every 1 KiB.
pub(super) fn socket_config(hub: &Hub) -> WebSocketConfig {
    let limit = hub.config().max_frame_bytes;
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
}
