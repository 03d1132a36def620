//! The state the router shares with every handler and connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::edge::auth::Auth;
use crate::edge::limits::ConnectionLimits;
use crate::edge::sinks::Sinks;
use crate::hub::Hub;

/// What the router shares with every connection.
#[derive(Clone)]
pub struct App {
    pub hub: Arc<Hub>,
    pub shutdown: CancellationToken,
    pub tracker: tokio_util::task::TaskTracker,
    /// Credentials and origins, from the configuration.
    pub auth: Arc<Auth>,
    /// Open connections, in total and per client address.
    pub connections: Arc<ConnectionLimits>,
    /// The webhook sinks, for `/v1/sinks` and the metrics.
    pub sinks: Arc<Sinks>,
}

impl App {
    pub fn new(
        hub: Arc<Hub>,
        shutdown: CancellationToken,
        tracker: tokio_util::task::TaskTracker,
        sinks: Arc<Sinks>,
    ) -> App {
        let config = &hub.config();
        App {
            auth: Arc::new(Auth::new(config)),
            connections: Arc::new(ConnectionLimits::new(
                config.max_connections,
                config.max_connections_per_ip,
            )),
            hub,
            shutdown,
            tracker,
            sinks,
        }
    }
}

/// The client's address: the peer, or behind a trusted proxy the last `X-Forwarded-For`
/// entry (the one the proxy itself appended; earlier ones are the client's to forge).
pub fn client_ip(ctx: &App, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let forwarded = || {
        let value = headers.get_all("x-forwarded-for").iter().next_back()?;
        value.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
    };
    match ctx.hub.config().trust_forwarded_for {
        true => forwarded().unwrap_or(peer.ip()),
        false => peer.ip(),
    }
}
