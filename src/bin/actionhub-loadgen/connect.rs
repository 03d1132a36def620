//! Opening many connections to one address: source-address spreading past the ephemeral
//! port range, the file-descriptor limit, and set-up with bounded concurrency and a time
//! limit per connection.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, Context};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::target::{Target, Ws};

/// Connections per source address: below the ~28,000 ephemeral ports Linux offers for one
/// (source address, destination) pair, with room left for whatever else runs.
const CONNECTIONS_PER_SOURCE: usize = 25_000;

/// The source address connection `index` of `total` binds to, or `None` to let the
/// kernel choose. Only spreads when it is needed and the hub is on IPv4 loopback, where
/// every 127.0.0.x is local.
pub(crate) fn source_address(index: usize, total: usize, hub: SocketAddr) -> Option<IpAddr> {
    let loopback_v4 = matches!(hub.ip(), IpAddr::V4(ip) if ip.is_loopback());
    if total <= CONNECTIONS_PER_SOURCE || !loopback_v4 {
        return None;
    }
    // 127.0.0.2, 127.0.0.3, ...; 253 sources are over six million connections.
    let host = 2 + index / CONNECTIONS_PER_SOURCE;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host.min(254) as u8)))
}

/// Whether `total` connections need more source addresses than the hub's address allows.
pub(crate) fn too_many_for_one_source(total: usize, hub: SocketAddr) -> bool {
    total > CONNECTIONS_PER_SOURCE && source_address(0, total, hub).is_none()
}

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
pub(crate) fn raise_fd_limit() -> anyhow::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX).context("raising the open-file limit")
}

/// Read buffer of a connection that receives little at a time (a customer subscriber, a
/// publisher reading acks). The WebSocket layer zero-fills its whole read buffer on the
/// first read, so its default 128 KiB would cost the generator 128 KiB per connection.
pub(crate) const SMALL_READ_BUFFER: usize = 16 * 1024;

/// Read buffer of a connection that receives every event (a firehose subscriber).
pub(crate) const LARGE_READ_BUFFER: usize = 128 * 1024;

/// Opens one WebSocket to `hub` from `source` (TCP, then the WebSocket handshake).
pub(crate) async fn dial<T: Target>(
    target: &T,
    hub: SocketAddr,
    source: Option<IpAddr>,
    read_buffer: usize,
) -> anyhow::Result<Ws> {
    let stream = tcp_connect(hub, source).await?;
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(target.request(hub)?, stream, Some(config))
            .await
            .context("WebSocket handshake")?;
    Ok(ws)
}

/// A TCP connection to `hub`, from `source` when given.
async fn tcp_connect(hub: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let socket = match hub {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding to source address {ip}"))?;
    }
    let stream = socket.connect(hub).await.context("TCP connect")?;
    // Small frames must leave at once: latency is part of what is measured.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Runs `open(i)` for every `i` in `indexes`, at most `concurrency` at a time, each
/// within `timeout`; returns the results in index order, or the first failure.
pub(crate) async fn open_all<C, F>(
    indexes: std::ops::Range<usize>,
    concurrency: usize,
    timeout: Duration,
    what: &str,
    open: F,
) -> anyhow::Result<Vec<C>>
where
    F: Fn(usize) -> Fut<C>,
{
    let mut opened: Vec<(usize, C)> = stream::iter(indexes)
        .map(|i| {
            let attempt = open(i);
            async move {
                match tokio::time::timeout(timeout, attempt).await {
                    Ok(Ok(conn)) => Ok((i, conn)),
                    Ok(Err(e)) => Err(e.context(format!("opening {what} {i}"))),
                    Err(_) => Err(anyhow!("opening {what} {i}: no answer within {timeout:?}")),
                }
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    opened.sort_by_key(|(i, _)| *i);
    Ok(opened.into_iter().map(|(_, conn)| conn).collect())
}

/// The future one connection's set-up is.
pub(crate) type Fut<C> = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<C>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_sources_only_past_the_per_source_limit_on_loopback() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(source_address(5, 1000, local), None);
        let ip = |i| source_address(i, 60_000, local);
        assert_eq!(ip(0), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(ip(24_999), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(ip(25_000), Some("127.0.0.3".parse().unwrap()));
        assert_eq!(ip(59_999), Some("127.0.0.4".parse().unwrap()));
        let remote: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        assert_eq!(source_address(30_000, 60_000, remote), None);
        assert!(too_many_for_one_source(60_000, remote));
        assert!(!too_many_for_one_source(60_000, local));
    }

    #[tokio::test]
    async fn connects_from_a_spread_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hub = listener.local_addr().unwrap();
        let source = source_address(30_000, 60_000, hub);
        let _client = tcp_connect(hub, source).await.unwrap();
        let (_server, peer) = listener.accept().await.unwrap();
        assert_eq!(Some(peer.ip()), source);
    }
}
