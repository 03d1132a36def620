//! The WebSocket transport of PROTOCOL.md section 5: handshake, `connect`, the client ops
//! and their replies, refusals of bad frames, and the close codes.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{assert_error, assert_type, seq_of, Action, Client, Hub, SUBPROTOCOL};

#[tokio::test]
async fn subprotocol_is_echoed_when_offered_and_absent_otherwise() {
    let hub = Hub::start().await;
    let mut offered = Client::open(hub.addr(), &[SUBPROTOCOL], None).await;
    assert_eq!(offered.subprotocol.as_deref(), Some(SUBPROTOCOL));
    offered.connect().await;

    let plain = Client::open(hub.addr(), &[], None).await;
    assert_eq!(plain.subprotocol, None);
}

#[tokio::test]
async fn a_request_that_is_not_a_websocket_handshake_is_refused() {
    let hub = Hub::start().await;
    let url = format!("http://{}/v1/ws", hub.addr());
    let http = reqwest::Client::new();
    let plain = http.get(&url).send().await.expect("plain GET");
    assert_eq!(plain.status(), 426, "a plain GET is told to upgrade");

    let wrong_version = http
        .get(&url)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "8")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("GET with version 8");
    assert_eq!(wrong_version.status(), 426);
    assert_eq!(wrong_version.headers()["sec-websocket-version"], "13");

    let no_key = http
        .get(&url)
        .header("connection", "keep-alive, Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .send()
        .await
        .expect("GET without a key");
    assert_eq!(no_key.status(), 400);
}

#[tokio::test]
async fn connected_describes_the_hub_and_the_open_scope() {
    let hub = Hub::start().await;
    let mut first = hub.raw_client().await;
    first
        .send(json!({"op": "connect", "id": 7, "client": {"name": "it", "version": "0.1"}}))
        .await;
    let connected = first.expect_type("connected").await;
    assert_eq!(connected["id"], json!(7));
    let conn_id = connected["connId"].as_str().expect("connId is a string");
    uuid::Uuid::parse_str(conn_id).expect("connId is a UUID");
    assert!(!connected["epoch"]
        .as_str()
        .expect("epoch is a string")
        .is_empty());
    assert_eq!(connected["seq"], json!(0), "a new hub has no events yet");
    assert_eq!(
        connected["scope"],
        json!({"kind": "open", "scopes": ["publish", "subscribe", "admin"]})
    );

    let latest = first
        .publish_ok(Action::new("webchat").event("offered"))
        .await;
    let second = hub.client().await;
    assert_eq!(
        second.connected["seq"],
        json!(latest),
        "connected.seq is the latest seq"
    );
    assert_eq!(
        second.connected["epoch"], connected["epoch"],
        "one history, one epoch"
    );
    assert_ne!(second.connected["connId"], connected["connId"]);
}

#[tokio::test]
async fn a_first_frame_other_than_connect_is_refused_and_closed_4000() {
    let first_frames = [
        json!({"op": "ping", "id": 1}).to_string(),
        json!({"op": "subscribe", "id": 1, "sub": "s", "topics": ["all"]}).to_string(),
        "{this is not json".to_owned(),
    ];
    let hub = Hub::start().await;
    for frame in first_frames {
        let mut client = hub.raw_client().await;
        client.send_text(&frame).await;
        let error = client.recv().await;
        assert_error(&error, "bad_request", None);
        client.closed_with(4000).await;
    }
}

#[tokio::test]
async fn silence_past_the_connect_timeout_is_closed_4000() {
    let hub = Hub::start_with(|c| c.connect_timeout = Duration::from_millis(300)).await;
    let mut client = hub.raw_client().await;
    client.closed_with(4000).await;
}

#[tokio::test]
async fn a_second_connect_is_bad_request_and_the_connection_stays_open() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    let reply = client.request(json!({"op": "connect"})).await;
    assert_error(&reply, "bad_request", None);
    assert_type(&client.request(json!({"op": "ping"})).await, "pong");
}

#[tokio::test]
async fn every_op_echoes_its_id() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    let action = Action::new("webchat");
    // Each row: the frame, the reply type, and fields the reply must carry besides `id`.
    let rows = [
        (json!({"op": "ping", "id": 11}), "pong", json!({})),
        (
            json!({"op": "subscribe", "id": 12, "sub": "by-name", "topics": ["webchat:all"]}),
            "subscribed",
            json!({"sub": "by-name"}),
        ),
        (
            json!({"op": "subscribe", "id": 13, "sub": 42, "topics": ["visitor:all"]}),
            "subscribed",
            json!({"sub": 42}),
        ),
        (
            json!({"op": "unsubscribe", "id": 14, "sub": 42}),
            "unsubscribed",
            json!({"sub": 42}),
        ),
        (
            json!({"op": "publish", "id": 15, "event": action.event("offered")}),
            "published",
            json!({"duplicate": false}),
        ),
    ];
    for (frame, kind, fields) in rows {
        client.send(frame.clone()).await;
        let reply = client.reply_to(frame["id"].as_u64().expect("id")).await;
        assert_type(&reply, kind);
        for (key, value) in fields.as_object().expect("object") {
            assert_eq!(&reply[key], value, "{frame} -> {reply}");
        }
    }
    // The publish was delivered to `by-name`, after its reply.
    let event = client.next_event().await;
    assert_eq!(event["topic"], json!("webchat:offered"));
}

#[tokio::test]
async fn subscribed_reports_the_position_live_delivery_starts_after() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    let latest = client
        .publish_ok(Action::new("webchat").event("offered"))
        .await;
    let subscribed = client.subscribe_to("s", &["all"], None).await;
    assert_eq!(seq_of(&subscribed), latest);
    assert!(
        subscribed.get("recovered").is_none(),
        "no recovered without since: {subscribed}"
    );
}

#[tokio::test]
async fn malformed_json_is_bad_request_and_the_connection_stays_open() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    client.send_text("{\"op\": \"ping\",").await;
    assert_error(&client.recv().await, "bad_request", None);
    assert_type(&client.request(json!({"op": "ping"})).await, "pong");
}

#[tokio::test]
async fn frames_the_hub_cannot_act_on_are_bad_request() {
    // More refusals than the default bad-frame limit: this test is not about the limit.
    let hub = Hub::start_with(|c| c.max_bad_frames = 100).await;
    let mut client = hub.client().await;
    // Each row: the frame, and whether the hub can know its id (an id that is not an
    // unsigned integer is not echoed).
    let rows = [
        (json!({"op": "frobnicate", "id": 1}), true),
        (json!({"op": "ping", "id": 2, "bogusField": 1}), true),
        (
            json!({"op": "subscribe", "id": 3, "sub": "s", "topics": ["all"], "bogusField": 1}),
            true,
        ),
        (json!({"op": "publish", "id": 4}), true),
        (json!({"id": 5}), true),
        (json!({"op": "ping", "id": "6"}), false),
        (json!({"op": "ping", "id": -7}), false),
        (json!({"op": "ping", "id": 1.5}), false),
        (
            json!({"op": "subscribe", "id": 8, "sub": "", "topics": ["all"]}),
            true,
        ),
        (
            json!({"op": "subscribe", "id": 9, "sub": "x".repeat(129), "topics": ["all"]}),
            true,
        ),
        (
            json!({"op": "subscribe", "id": 10, "sub": -1, "topics": ["all"]}),
            true,
        ),
    ];
    for (frame, id_known) in rows {
        client.send(frame.clone()).await;
        let error = client.recv().await;
        assert_error(&error, "bad_request", None);
        let expected_id = if id_known {
            frame["id"].clone()
        } else {
            Value::Null
        };
        assert_eq!(error["id"], expected_id, "{frame} -> {error}");
        if frame.get("bogusField").is_some() {
            assert!(
                error.to_string().contains("bogusField"),
                "names the field: {error}"
            );
        }
    }
    assert_type(&client.request(json!({"op": "ping"})).await, "pong");
}

/// Frames that cannot be parsed as a client frame at all; each counts as a bad frame.
fn unparsable_frames() -> Vec<Message> {
    vec![
        Message::Text("{".into()),
        Message::Text("not json".into()),
        Message::Binary(vec![1, 2, 3].into()),
        Message::Text("[]".into()),
        Message::Text("42".into()),
    ]
}

#[tokio::test]
async fn max_bad_frames_in_a_row_close_4000() {
    let hub = Hub::start_with(|c| c.max_bad_frames = 5).await;
    let mut client = hub.client().await;
    let mut frames = unparsable_frames();
    let last = frames.pop().expect("five frames");
    for frame in frames {
        client.send_message(frame).await;
        assert_error(&client.recv().await, "bad_request", None);
    }
    client.send_message(last).await;
    client.closed_with(4000).await;
}

#[tokio::test]
async fn a_good_frame_resets_the_bad_frame_count() {
    let hub = Hub::start_with(|c| c.max_bad_frames = 5).await;
    let mut client = hub.client().await;
    for _ in 0..3 {
        for frame in unparsable_frames().into_iter().take(4) {
            client.send_message(frame).await;
            assert_error(&client.recv().await, "bad_request", None);
        }
        assert_type(&client.request(json!({"op": "ping"})).await, "pong");
    }
}

#[tokio::test]
async fn a_frame_over_max_frame_bytes_closes_4009() {
    let hub = Hub::start_with(|c| c.max_frame_bytes = 1024).await;
    let mut client = hub.client().await;
    let event = |pad: usize| {
        let mut event = Action::new("webchat").event("offered");
        event["data"] = json!({"pad": "x".repeat(pad)});
        event
    };
    // Under the limit is an ordinary publish.
    client.publish_ok(event(400)).await;
    client
        .send(json!({"op": "publish", "id": 99, "event": event(2000)}))
        .await;
    client.closed_with(4009).await;
}

#[tokio::test]
async fn a_sub_id_already_active_is_bad_request_and_reusable_after_unsubscribe() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    client.subscribe_to("s", &["webchat:all"], None).await;
    let again = client
        .request(json!({"op": "subscribe", "sub": "s", "topics": ["visitor:all"]}))
        .await;
    assert_error(&again, "bad_request", None);
    let reply = client
        .request(json!({"op": "unsubscribe", "sub": "s"}))
        .await;
    assert_type(&reply, "unsubscribed");
    client.subscribe_to("s", &["visitor:all"], None).await;
}

#[tokio::test]
async fn unsubscribe_of_an_unknown_sub_is_not_found() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    let reply = client
        .request(json!({"op": "unsubscribe", "sub": "never"}))
        .await;
    assert_error(&reply, "not_found", None);
}

#[tokio::test]
async fn an_unsubscribed_sub_gets_nothing_more() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    client.subscribe_to("s", &["webchat:all"], None).await;
    let reply = client
        .request(json!({"op": "unsubscribe", "sub": "s"}))
        .await;
    assert_type(&reply, "unsubscribed");
    client
        .publish_ok(Action::new("webchat").event("offered"))
        .await;
    client.expect_no_frame().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_every_connection_with_1001() {
    let hub = Hub::start().await;
    let mut subscriber = hub.client().await;
    subscriber.subscribe_to("s", &["all"], None).await;
    let mut idle = hub.client().await;
    // The hub may wait for the closing handshake, so clients read while it shuts down.
    let shutdown = tokio::spawn(hub.shutdown());
    subscriber.closed_with(1001).await;
    idle.closed_with(1001).await;
    shutdown.await.expect("shutdown task");
}

#[tokio::test]
async fn the_hub_pings_at_the_websocket_level() {
    let hub = Hub::start_with(|c| c.ping_interval = Duration::from_millis(200)).await;
    let mut client = hub.client().await;
    let ping = client.next_raw().await;
    assert!(
        matches!(ping, Message::Ping(_)),
        "expected a Ping, got {ping:?}"
    );
}
