//! A webhook receiver on 127.0.0.1: it records every request (headers and body), answers
//! as its current [`Mode`] says, and can be stopped and started again on the same port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::WAIT;

/// How the receiver answers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// 200 to everything.
    Accept,
    /// 503 to everything.
    Refuse,
    /// Chosen per request by a seeded generator: `fail_pct` % get 500, `stall_pct` % are
    /// held for `stall` before a 200 (beyond the hub's timeout), the rest 200.
    Flaky {
        fail_pct: u32,
        stall_pct: u32,
        stall: Duration,
    },
}

/// One request as it arrived, and whether it was answered 200 in time to count.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) id: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    /// Answered 200 without a stall: the hub took it as acknowledged.
    pub(crate) accepted: bool,
}

impl Received {
    /// The batch's items.
    pub(crate) fn items(&self) -> Vec<Value> {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("a batch is a JSON array ({e}): {}", self.body))
    }
}

struct Shared {
    mode: Mutex<Mode>,
    rng: Mutex<fastrand::Rng>,
    received: Mutex<Vec<Received>>,
}

pub(crate) struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Stops the current server: it stops listening and closes its connections as soon
    /// as their requests are answered.
    server: Option<tokio_util::sync::CancellationToken>,
}

impl Receiver {
    /// A receiver on a free loopback port.
    pub(crate) async fn start(mode: Mode, seed: u64) -> Receiver {
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            received: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut receiver = Receiver {
            addr,
            shared,
            server: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(self.shared.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let signal = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await;
        });
        self.server = Some(stop);
    }

    /// The URL a sink posts to.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock() = mode;
    }

    /// Drops the listener and every open connection, as a receiver that goes down does.
    pub(crate) fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.cancel();
        }
    }

    /// Listens again on the same port.
    pub(crate) async fn restart(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Every request so far, in arrival order.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.shared.received.lock().clone()
    }

    /// The items of every accepted batch, once per `webhook-id`, in arrival order.
    pub(crate) fn accepted_items(&self) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        self.received()
            .into_iter()
            .filter(|r| r.accepted && seen.insert(r.id.clone()))
            .flat_map(|r| r.items())
            .collect()
    }

    /// The requests in the shape `verify_webhooks.py` reads.
    pub(crate) fn as_json(&self, secret: &str) -> Value {
        let requests: Vec<Value> = self
            .received()
            .iter()
            .map(|r| {
                let headers: serde_json::Map<String, Value> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                json!({ "headers": headers, "body": r.body })
            })
            .collect();
        json!({ "secret": secret, "requests": requests })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mode = *shared.mode.lock();
    let (status, stall) = match mode {
        Mode::Accept => (StatusCode::OK, None),
        Mode::Refuse => (StatusCode::SERVICE_UNAVAILABLE, None),
        Mode::Flaky {
            fail_pct,
            stall_pct,
            stall,
        } => {
            let roll = shared.rng.lock().u32(0..100);
            if roll < fail_pct {
                (StatusCode::INTERNAL_SERVER_ERROR, None)
            } else if roll < fail_pct + stall_pct {
                (StatusCode::OK, Some(stall))
            } else {
                (StatusCode::OK, None)
            }
        }
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let names = [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
    ];
    shared.received.lock().push(Received {
        id: header("webhook-id"),
        headers: names.iter().map(|n| (n.to_string(), header(n))).collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        accepted: status == StatusCode::OK && stall.is_none(),
    });
    if let Some(stall) = stall {
        tokio::time::sleep(stall).await;
    }
    status
}
