//! The HTTP event stream (`GET /v1/events/stream`): NDJSON and server-sent events,
//! filtered like a subscription, resumed with `since`/`Last-Event-ID` without a gap or a
//! duplicate (across a restart too), reset when it cannot resume, and ended by shutdown.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

fn seqs_of(results: &[Value]) -> Vec<u64> {
    results
        .iter()
        .map(|r| r["seq"].as_u64().unwrap_or_else(|| panic!("accepted: {r}")))
        .collect()
}

/// The epoch a hub reports (from a page of its history).
async fn epoch_of(hub: &Hub) -> String {
    let client = hub.client().await;
    client.epoch()
}

#[tokio::test]
async fn ndjson_streams_live_events_as_filtered_frames_in_seq_order() {
    let hub = Hub::start().await;
    let (mine, other) = (Visitor::new(), Visitor::new());
    let query = format!(
        "/v1/events/stream?topics=webchat:all,visitor:page&where={}",
        urlencode(&json!({"customerId": [mine.customer_id]}).to_string())
    );
    let mut stream = EventStream::open(hub.addr(), &query, &[]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), "application/x-ndjson");
    assert_eq!(stream.header("actionhub-epoch"), epoch_of(&hub).await);
    let chat = mine.action("webchat");
    let results = hub
        .http()
        .publish(&json!([
            other.page(),
            mine.page(),
            chat.event("offered"),
            mine.action("contentoffer").event("offered"),
            other.action("webchat").event("offered"),
            chat.event("accepted"),
        ]))
        .await;
    let seqs = seqs_of(&results);
    // Session starts and the content offer are not selected, nor is the other customer.
    let mut got = Vec::new();
    for _ in 0..3 {
        let frame = stream.next_line().await;
        assert_type(&frame, "event");
        assert_eq!(
            frame["event"]["customerId"],
            json!(mine.customer_id),
            "{frame}"
        );
        got.push((
            seq_of(&frame),
            frame["topic"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    assert_eq!(
        got,
        vec![
            (seqs[1], "visitor:page".to_owned()),
            (seqs[2], "webchat:offered".to_owned()),
            (seqs[5], "webchat:accepted".to_owned()),
        ]
    );
    stream.expect_quiet().await;
    // The frames are the WebSocket's: the same as GET /v1/events answers.
    let (_, page) = hub
        .http()
        .get(&format!("/v1/events?since={}&limit=1", seqs[1] - 1))
        .await;
    assert_eq!(page["events"][0]["seq"], json!(seqs[1]), "{page}");
}

#[tokio::test]
async fn sse_resumes_after_last_event_id_across_a_restart_without_gap_or_duplicate() {
    let hub = Hub::start().await;
    let epoch = epoch_of(&hub).await;
    let visitor = Visitor::new();
    let pages = |n: usize| Value::Array((0..n).map(|_| visitor.page()).collect());
    let first = seqs_of(&hub.http().publish(&pages(4)).await);
    let query = format!("/v1/events/stream?topics=visitor:page&since=0&epoch={epoch}");
    let accept = [("accept", "text/event-stream")];
    let mut stream = EventStream::open(hub.addr(), &query, &accept).await;
    assert_eq!(stream.header("content-type"), "text/event-stream");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let sse = stream.next_sse().await;
        assert_eq!(sse.event.as_deref(), Some("visitor:page"));
        let frame = sse.json();
        assert_eq!(sse.id, Some(seq_of(&frame).to_string()), "id is the seq");
        seen.push(seq_of(&frame));
    }
    drop(stream);
    let hub = hub.restart().await;
    let second = seqs_of(&hub.http().publish(&pages(2)).await);
    // An EventSource reconnects with its first URL (since=0) and the last id it saw.
    let last_id = seen.last().expect("two seen").to_string();
    let headers = [
        ("accept", "text/event-stream"),
        ("last-event-id", last_id.as_str()),
    ];
    let mut stream = EventStream::open(hub.addr(), &query, &headers).await;
    for _ in 0..4 {
        seen.push(seq_of(&stream.next_sse().await.json()));
    }
    let all: Vec<u64> = first.iter().chain(&second).copied().collect();
    assert_eq!(seen, all, "every page once, in order");
    stream.expect_quiet().await;
}

#[tokio::test]
async fn a_stream_that_cannot_resume_is_reset_then_live() {
    let hub = Hub::start_with(|c| c.retention_events = 3).await;
    let epoch = epoch_of(&hub).await;
    let visitor = Visitor::new();
    let published = seqs_of(
        &hub.http()
            .publish(&json!([
                visitor.page(),
                visitor.page(),
                visitor.page(),
                visitor.page()
            ]))
            .await,
    );
    let mut head = *published.last().expect("four");
    for query in [
        // Another history.
        "/v1/events/stream?since=1&epoch=00000000000000000000000000000000".to_owned(),
        // No longer retained.
        format!("/v1/events/stream?since=1&epoch={epoch}"),
        // Beyond the latest seq.
        format!("/v1/events/stream?since={}&epoch={epoch}", head + 100),
    ] {
        let mut stream = EventStream::open(hub.addr(), &query, &[]).await;
        assert_eq!(stream.status, 200, "{query}");
        let reset = stream.next_line().await;
        assert_eq!(
            reset,
            json!({"type": "reset", "epoch": epoch, "seq": head}),
            "{query}"
        );
        let seq = seqs_of(&hub.http().publish(&visitor.page()).await)[0];
        assert_eq!(
            seq_of(&stream.next_line().await),
            seq,
            "{query}: live after the reset"
        );
        head = seq;
    }
    // SSE says it as an event.
    let query = format!("/v1/events/stream?since=1&epoch={epoch}");
    let mut stream =
        EventStream::open(hub.addr(), &query, &[("accept", "text/event-stream")]).await;
    let reset = stream.next_sse().await;
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.json()["epoch"], json!(epoch));
}

#[tokio::test]
async fn bad_stream_requests_are_refused_before_streaming() {
    let hub = Hub::start_with(|c| {
        c.api_keys = "k-read=subscribe,k-pub=publish".parse().expect("keys");
    })
    .await;
    let refused = [
        ("/v1/events/stream?since=3", "k-read", 400, "bad_request"),
        (
            "/v1/events/stream?topics=webchat:typo",
            "k-read",
            400,
            "bad_request",
        ),
        (
            "/v1/events/stream?where={\"color\":[1]}",
            "k-read",
            400,
            "bad_request",
        ),
        ("/v1/events/stream?limit=3", "k-read", 400, "bad_request"),
        ("/v1/events/stream", "k-pub", 403, "forbidden"),
        ("/v1/events/stream", "k-none", 401, "unauthorized"),
    ];
    for (query, key, status, code) in refused {
        let http = hub.http_with(&[("x-api-key", key)]);
        let response = http.raw(reqwest::Method::GET, query, &[]).await;
        assert_eq!(response.status().as_u16(), status, "{query} with {key}");
        let body: Value = response.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], json!(code), "{query}: {body}");
    }
    let bad_id = [("x-api-key", "k-read"), ("last-event-id", "x")];
    let stream = EventStream::open(hub.addr(), "/v1/events/stream", &bad_id).await;
    assert_eq!(stream.status, 400);
    let ok = EventStream::open(hub.addr(), "/v1/events/stream", &[("x-api-key", "k-read")]).await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn a_reader_left_behind_by_the_history_is_cut_off_then_reset() {
    // A short history and a reader that reads nothing while far more than the socket
    // buffers hold is published.
    let hub = Hub::start_with(|c| c.retention_events = 100).await;
    let epoch = epoch_of(&hub).await;
    let mut stream =
        EventStream::open(hub.addr(), "/v1/events/stream?topics=visitor:page", &[]).await;
    assert_eq!(stream.status, 200);
    let visitor = Visitor::new();
    let big = "x".repeat(3000);
    let page = || {
        let mut page = visitor.page();
        page["page"]["title"] = json!(big);
        page
    };
    for _ in 0..40 {
        let batch = Value::Array((0..250).map(|_| page()).collect());
        hub.http().publish(&batch).await;
    }
    // What it reads (if the history moved on before it was first written to, nothing) is
    // a gap-free run of the history, then the end of the response: it is not held for.
    let lines = stream.lines_to_end(Duration::from_secs(20)).await;
    let seqs: Vec<u64> = lines.iter().map(seq_of).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap in what was sent: {seqs:?}"
    );
    let last = seqs.last().copied().unwrap_or(0);
    assert!(last < 10_001, "cut off before the end: {last}");
    // Coming back from its last seq, it is told to reset.
    let query = format!("/v1/events/stream?topics=visitor:page&since={last}&epoch={epoch}");
    let mut again = EventStream::open(hub.addr(), &query, &[]).await;
    assert_eq!(again.next_line().await["type"], json!("reset"));
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let hub = Hub::start().await;
    let mut stream = EventStream::open(hub.addr(), "/v1/events/stream", &[]).await;
    assert_eq!(stream.status, 200);
    let shutdown = tokio::spawn(hub.shutdown());
    stream.expect_end(Duration::from_secs(10)).await;
    bounded(SHUTDOWN_WAIT, "the shutdown", shutdown)
        .await
        .expect("shutdown task");
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
