//! A reader of the HTTP event stream (`GET /v1/events/stream`), in either shape: NDJSON
//! lines or server-sent events. Every read is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::{bounded, QUIET, WAIT};

/// One server-sent event: its `id`, `event` and `data` fields (a comment has none).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Sse {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) data: Option<String>,
}

impl Sse {
    /// The data as JSON.
    pub(crate) fn json(&self) -> Value {
        let data = self
            .data
            .as_deref()
            .unwrap_or_else(|| panic!("no data: {self:?}"));
        serde_json::from_str(data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}"))
    }
}

/// An open stream response and the bytes read but not yet consumed.
pub(crate) struct EventStream {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    response: reqwest::Response,
    buffer: Vec<u8>,
    ended: bool,
}

impl EventStream {
    /// GETs `path_and_query` on the hub at `addr` with `headers`; no overall timeout (the
    /// stream does not end), each read is bounded instead.
    pub(crate) async fn open(
        addr: SocketAddr,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> EventStream {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(WAIT)
            .build()
            .expect("HTTP client");
        let mut request = client.get(format!("http://{addr}{path_and_query}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = bounded(WAIT, "the stream's headers", request.send())
            .await
            .expect("HTTP request");
        EventStream {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            response,
            buffer: Vec::new(),
            ended: false,
        }
    }

    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }

    /// The bytes up to the next `separator` (taken off the buffer, separator dropped),
    /// reading within `limit`; None when the stream ended or nothing came in time.
    async fn until(&mut self, separator: &[u8], limit: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(at) = self
                .buffer
                .windows(separator.len())
                .position(|w| w == separator)
            {
                let item: Vec<u8> = self.buffer.drain(..at + separator.len()).take(at).collect();
                return Some(String::from_utf8(item).expect("the stream is UTF-8"));
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }

    /// The next NDJSON line as JSON; panics when none comes within [`WAIT`].
    pub(crate) async fn next_line(&mut self) -> Value {
        let line = self
            .until(b"\n", WAIT)
            .await
            .unwrap_or_else(|| panic!("no NDJSON line within {WAIT:?}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("line is not JSON ({e}): {line}"))
    }

    /// The next server-sent event (comments skipped); panics when none comes within
    /// [`WAIT`].
    pub(crate) async fn next_sse(&mut self) -> Sse {
        loop {
            let block = self
                .until(b"\n\n", WAIT)
                .await
                .unwrap_or_else(|| panic!("no server-sent event within {WAIT:?}"));
            let mut sse = Sse::default();
            for line in block.lines() {
                let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                match field {
                    "id" => sse.id = Some(value.to_owned()),
                    "event" => sse.event = Some(value.to_owned()),
                    "data" => sse.data = Some(value.to_owned()),
                    _ => {}
                }
            }
            if sse != Sse::default() {
                return sse;
            }
        }
    }

    /// Asserts nothing more arrives for [`QUIET`] (heartbeats aside, which come every 15 s).
    pub(crate) async fn expect_quiet(&mut self) {
        if let Some(item) = self.until(b"\n", QUIET).await {
            panic!("expected nothing more, got {item:?}");
        }
    }

    /// Every line left until the hub ends the response, as JSON; panics if it does not end
    /// within `limit`.
    pub(crate) async fn lines_to_end(&mut self, limit: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.until(b"\n", left).await {
                Some(line) => lines.push(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("line is not JSON ({e}): {line}")),
                ),
                None if self.ended => return lines,
                None => panic!("the stream did not end within {limit:?}"),
            }
        }
    }

    /// Waits until the hub ends the response; panics if it does not within `limit`.
    pub(crate) async fn expect_end(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.ended {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => panic!("the stream did not end within {limit:?}"),
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }
}
