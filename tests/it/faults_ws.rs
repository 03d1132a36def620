//! WebSocket faults (issue 11, items 3 to 5): clients that flood, never read, read slowly
//! or are busy when the hub stops, and a replay of the whole retained history. Each test
//! says which promise it holds the hub to; those that measure the hub's memory or send it
//! SIGTERM run the release binary as a child process (`support::HubProcess`).

use std::ops::Range;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{seq_of, Client, Http, Hub, HubProcess};

/// A track event of about 3 KiB: a few thousand of them fill any socket buffer.
fn bulky_track(customer: &str, i: usize) -> Value {
    json!({"type": "track", "customerId": customer, "name": "bulk",
        "properties": {"pad": "x".repeat(3000), "i": i}})
}

/// Publishes the bulky events numbered `numbers` of `customer` in one HTTP batch; returns
/// their seqs.
async fn publish_bulky_batch(http: &Http, customer: &str, numbers: Range<usize>) -> Vec<u64> {
    let batch: Vec<Value> = numbers.map(|i| bulky_track(customer, i)).collect();
    http.publish(&Value::Array(batch))
        .await
        .iter()
        .map(seq_of)
        .collect()
}

/// Publishes `total` bulky events in batches of 250 (under the 1 MiB body limit); returns their seqs.
async fn publish_bulky(http: &Http, total: usize) -> Vec<u64> {
    let customer = crate::support::uuid();
    let mut seqs = Vec::with_capacity(total);
    for start in (0..total).step_by(250) {
        let numbers = start..total.min(start + 250);
        seqs.extend(publish_bulky_batch(http, &customer, numbers).await);
    }
    seqs
}

/// A reader that keeps up only slowly, but within its queue's bound, is alive however much
/// waits for it (item 5): the hub's own pings must not stall its connection (they waited
/// for the whole queue to drain, and dropped the connection without a close frame when it
/// did not in one ping interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_within_its_bound_is_never_dropped() {
    const TOTAL: usize = 3000;
    let hub = Hub::start_with(|c| c.ping_interval = Duration::from_millis(200)).await;
    // A small receive buffer keeps most of the ~9 MiB in the hub's queue.
    let mut reader = Client::connected_to(hub.addr(), Some(4096)).await;
    reader.subscribe_to("slow", &["visitor:track"], None).await;
    let reading = tokio::spawn(async move {
        let mut received = Vec::with_capacity(TOTAL);
        while received.len() < TOTAL {
            let frame = reader.recv().await;
            match frame["type"].as_str() {
                Some("event") => received.push(seq_of(&frame)),
                Some("pong") => continue,
                _ => panic!("expected events, got {frame}"),
            }
            // Reads a frame a millisecond, and says something now and then, as a client
            // that is alive but busy does.
            tokio::time::sleep(Duration::from_millis(1)).await;
            if received.len() % 50 == 0 {
                reader.send(json!({"op": "ping"})).await;
            }
        }
        (reader, received)
    });
    let acked = publish_bulky(&hub.http(), TOTAL).await;
    let (mut reader, received) = reading.await.expect("the reader keeps its connection");
    assert_eq!(received, acked, "every event, in order");
    let pong = reader.request(json!({"op": "ping"})).await;
    assert_eq!(pong["type"], json!("pong"), "{pong}");
    hub.shutdown().await;
}

/// What a client saw of the connection until it ended: the close code, if any.
async fn read_until_close(client: &mut Client, pause: Option<Duration>) -> Option<u16> {
    loop {
        match client.next_raw().await {
            Message::Close(frame) => return frame.map(|f| u16::from(f.code)),
            Message::Text(_) => {
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
            }
            _ => continue,
        }
    }
}

/// SIGTERM with busy connections (item 5): every connection, however much is queued for
/// it, is told 1001 and ends within the drain deadline, and the hub stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_busy_connections_with_1001_within_the_drain_deadline() {
    const TOTAL: usize = 8000;
    let args = [
        "--ping-interval",
        "1s",
        "--queue-capacity",
        "16384",
        "--fsync",
        "never",
    ];
    let hub = HubProcess::start_fresh(&args);
    let addr = hub.addr();
    let mut slow = Client::connected_to(addr, Some(4096)).await;
    slow.subscribe_to("slow", &["visitor:track"], None).await;
    let mut fast = Client::connected_to(addr, None).await;
    fast.subscribe_to("fast", &["all"], None).await;
    let mut idle = Client::connected_to(addr, None).await;
    idle.subscribe_to("idle", &["webchat:all"], None).await;
    publish_bulky(&Http::new(addr), TOTAL).await;

    // The slow reader is well into its backlog (~20 MiB) before the hub is told to stop.
    for _ in 0..500 {
        let frame = slow.recv().await;
        assert_eq!(frame["type"], json!("event"), "{frame}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let readers = [
        (slow, Some(Duration::from_millis(1))),
        (fast, None),
        (idle, None),
    ]
    .map(|(mut client, pause)| {
        tokio::spawn(async move { read_until_close(&mut client, pause).await })
    });
    let output = hub.stop_async().await;
    for (name, reader) in ["slow", "fast", "idle"].iter().zip(readers) {
        let code = reader.await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(code, Some(1001), "{name} is told the hub is going away");
    }
    let late = output
        .iter()
        .find(|l| l.contains("did not close within the drain deadline"));
    assert!(late.is_none(), "{late:?}");
}

/// The resident memory of a process, in bytes, from `/proc`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no VmRSS in {status}"));
    kib * 1024
}

/// A ping flood from a client that never reads (item 3): each ping's pong counts against
/// the connection's bound like any other frame, so the hub closes it 4008 and stops
/// reading, and its memory stays flat (a pong queued past the bound for each of 300 MiB of
/// pings took it from 16 to 434 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_is_never_read_is_cut_off_and_memory_stays_flat() {
    const FLOOD: usize = 128 << 20;
    const GROWTH_LIMIT: u64 = 32 << 20;
    let hub = HubProcess::start_fresh(&["--fsync", "never"]);
    let addr = hub.addr();
    let mut flooder = Client::connected_to(addr, Some(4096)).await;
    let before = rss_bytes(hub.pid());

    // Client pings with 125-byte payloads, masked with a zero key (RFC 6455 5.3 allows any
    // key), written straight to the socket; a write the hub does not take within a second
    // means it has stopped reading.
    let ping: Vec<u8> = [0x89, 0x80 | 125, 0, 0, 0, 0]
        .into_iter()
        .chain([b'p'; 125])
        .collect();
    let chunk = ping.repeat(512);
    let mut sent = 0;
    while sent < FLOOD {
        let write = tokio::io::AsyncWriteExt::write_all(flooder.ws().get_mut(), &chunk);
        match tokio::time::timeout(Duration::from_secs(1), write).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
    }
    let grown = rss_bytes(hub.pid()).saturating_sub(before);
    assert!(
        sent < FLOOD,
        "the hub read all {sent} bytes of pings from a client that reads nothing"
    );
    assert!(
        grown < GROWTH_LIMIT,
        "the hub grew by {} MiB under {} MiB of pings",
        grown >> 20,
        sent >> 20
    );

    // Nobody else notices.
    let mut other = Client::connected_to(addr, None).await;
    let pong = other.request(json!({"op": "ping"})).await;
    assert_eq!(pong["type"], json!("pong"), "{pong}");

    // Reading at last, the flooder finds the pongs that reached it, then a close 4008
    // (unless the hub's closing handshake gave up on it first and just hung up).
    let close = tokio::time::timeout(crate::support::SHUTDOWN_WAIT, async {
        while let Some(Ok(message)) = flooder.ws().next().await {
            if let Message::Close(frame) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("the flooder's connection ends");
    assert!(
        close.is_none_or(|code| code == 4008),
        "closed with {close:?}"
    );
    hub.stop_async().await;
}

/// A replay to a reader that stops reading waits for it (item 4), and is not closed for
/// it: once it reads again it gets everything, in order. With a queue of 64 frames (below
/// the 256 a replay step used to push at once) and ~6 MiB of history, more than the queue
/// and the socket buffers hold, every such replay used to be closed 4008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_waits_for_a_reader_that_stops_reading() {
    const TOTAL: usize = 2000;
    let hub = Hub::start_with(|c| c.queue_capacity = 64).await;
    let acked = publish_bulky(&hub.http(), TOTAL).await;
    let mut reader = Client::connected_to(hub.addr(), Some(4096)).await;
    let epoch = reader.epoch();
    let body = json!({"topics": ["visitor:track"], "since": 0, "epoch": epoch});
    let subscribed = reader.subscribe(json!("r"), body).await;
    assert_eq!(subscribed["recovered"], json!(true), "{subscribed}");
    // The reader looks away for a while; the replay fills what it may and waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        reader.event_seqs(TOTAL).await,
        acked,
        "the whole replay, in order, once"
    );
    // And it went live after the replay.
    let live = publish_bulky(&hub.http(), 3).await;
    assert_eq!(reader.event_seqs(3).await, live);
    hub.shutdown().await;
}

/// Publishes `total` small events over HTTP in batches of 1000 from four publishers at
/// once; returns every seq, sorted.
async fn publish_many(http: Http, total: usize) -> Vec<u64> {
    let http = std::sync::Arc::new(http);
    let publishers = (0..4).map(|p| {
        let http = http.clone();
        tokio::spawn(async move {
            let customer = crate::support::uuid();
            let event = json!({"type": "track", "customerId": customer, "name": "n"});
            let batch = Value::Array(vec![event; 1000]);
            let mut seqs = Vec::new();
            for _ in (p * 1000..total).step_by(4000) {
                seqs.extend(http.publish(&batch).await.iter().map(seq_of));
            }
            seqs
        })
    });
    let mut seqs = Vec::with_capacity(total);
    for publisher in publishers {
        seqs.extend(publisher.await.expect("publisher"));
    }
    seqs.sort_unstable();
    seqs
}

/// The type and seq of a hub frame, read without building a JSON tree.
#[derive(serde::Deserialize)]
struct FrameHead<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    seq: Option<u64>,
}

/// A replay of the whole retained history, 1,000,000 events, to a reader that reads as
/// fast as it can (item 4): no 4008, in order, no gap, no duplicate, and the hub's memory
/// does not grow with it (a replay used to be closed 4008 after ~12,000 events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_event_replay_reaches_a_fast_reader_whole() {
    const TOTAL: usize = 1_000_000;
    const GROWTH_LIMIT: u64 = 64 << 20;
    let hub = HubProcess::start_fresh(&["--fsync", "never"]);
    let addr = hub.addr();
    let acked = publish_many(Http::new(addr), TOTAL).await;
    assert_eq!(acked.len(), TOTAL);

    let mut reader = Client::connected_to(addr, None).await;
    let epoch = reader.epoch();
    let before = rss_bytes(hub.pid());
    let body = json!({"topics": ["visitor:track"], "since": 0, "epoch": epoch});
    let subscribed = reader.subscribe(json!("all"), body).await;
    assert_eq!(subscribed["recovered"], json!(true), "{subscribed}");
    let mut peak = 0;
    let mut next = 0;
    while next < TOTAL {
        let message = tokio::time::timeout(crate::support::WAIT, reader.ws().next())
            .await
            .unwrap_or_else(|_| panic!("the replay stalled after {next} events"));
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => panic!("closed after {next} events: {frame:?}"),
            Some(Ok(_)) => continue,
            other => panic!("the connection failed after {next} events: {other:?}"),
        };
        let head: FrameHead = serde_json::from_str(&text).expect("a hub frame");
        assert_eq!(head.kind, "event", "{text}");
        assert_eq!(head.seq, Some(acked[next]), "event {next} of the replay");
        next += 1;
        if next % 50_000 == 0 {
            peak = peak.max(rss_bytes(hub.pid()));
        }
    }
    let grown = peak.saturating_sub(before);
    assert!(
        grown < GROWTH_LIMIT,
        "the hub grew by {} MiB during the replay",
        grown >> 20
    );
    hub.stop_async().await;
}

/// A reader that never reads is cut off (4008) once its queue is full, and nobody else
/// notices: a reader that replays ~12 MiB of history (more than its queue and the socket
/// buffers hold) and then stays live gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_cut_off_and_others_get_everything() {
    const HISTORY: usize = 4000;
    const LIVE: usize = 2000;
    const BATCH: usize = 100;
    let hub = Hub::start_with(|c| c.queue_capacity = 1024).await;
    let http = hub.http();
    let mut acked = publish_bulky(&http, HISTORY).await;
    let mut never = Client::connected_to(hub.addr(), Some(4096)).await;
    never.subscribe_to("never", &["visitor:track"], None).await;
    let mut reader = Client::connected_to(hub.addr(), Some(4096)).await;
    let body = json!({"topics": ["visitor:track"], "since": 0, "epoch": reader.epoch()});
    reader.subscribe(json!("replay"), body).await;
    let (progress, mut read_so_far) = tokio::sync::watch::channel(0usize);
    let reading = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(HISTORY + LIVE);
        while seqs.len() < HISTORY + LIVE {
            seqs.push(seq_of(&reader.next_event().await));
            progress.send_replace(seqs.len());
        }
        seqs
    });
    // Live traffic, ~6 MiB: never more than two batches ahead of the reader, so it keeps
    // up, and far more than the never-reader's queue and socket buffers hold.
    for start in (0..LIVE).step_by(BATCH) {
        let must_have_read = (HISTORY + start).saturating_sub(BATCH);
        if read_so_far
            .wait_for(|&n| n >= must_have_read)
            .await
            .is_err()
        {
            let failure = reading.await.expect_err("a reader that stops early failed");
            std::panic::resume_unwind(failure.into_panic());
        }
        let customer = crate::support::uuid();
        acked.extend(publish_bulky_batch(&http, &customer, start..start + BATCH).await);
    }
    let received = reading.await.expect("the reader gets everything");
    assert_eq!(
        received, acked,
        "replay then live, in order, no gap, no duplicate"
    );
    never.closed_with(4008).await;
    hub.shutdown().await;
}
