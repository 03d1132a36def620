//! PROTOCOL.md section 6: API keys and their scopes, browser tokens confined to their
//! customer, secret rotation, origins, the limits, and hostile input.
//!
//! Every hub here has credentials configured (so it is not in open mode) unless a test
//! says otherwise; the tokens are signed in the test with the same HS256 secrets.

use std::time::Duration;

use actionhub::Config;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const SECRET_1: &str = "first-secret-0123456789abcdef0123456789";
const SECRET_2: &str = "second-secret-0123456789abcdef012345678";
const PUBLISHER: &str = "pk-publisher";
const READER: &str = "pk-reader";
const ADMIN: &str = "pk-admin";
const BOTH: &str = "pk-both";

/// Keys of every scope, both secrets, no leeway.
fn secure(config: &mut Config) {
    config.api_keys =
        format!("{PUBLISHER}=publish,{READER}=subscribe,{ADMIN}=admin,{BOTH}=publish+subscribe")
            .parse()
            .expect("keys");
    config.jwt_secrets = format!("{SECRET_1},{SECRET_2}").parse().expect("secrets");
    config.jwt_leeway = Duration::ZERO;
}

async fn secure_hub() -> Hub {
    Hub::start_with(secure).await
}

/// A token for `customer`, valid for an hour, signed with the first secret.
fn token_for(customer: &str) -> String {
    token(SECRET_1, customer)
}

async fn key_client(hub: &Hub, key: &str) -> Client {
    hub.client_with(json!({"apiKey": key})).await
}

async fn token_client(hub: &Hub, customer: &str) -> Client {
    hub.client_with(json!({"token": token_for(customer)})).await
}

/// Connecting with `fields` is refused with `code`, then the close `close`.
async fn refused_connect(hub: &Hub, fields: Value, code: &str, close: u16) {
    let mut client = hub.raw_client().await;
    let reply = client.connect_with(fields.clone()).await;
    assert_error(&reply, code, None);
    client.closed_with(close).await;
}

/// The `limits_hit` count of `limit` from `/metrics`.
async fn limit_hits(hub: &Hub, limit: &str) -> u64 {
    let (status, _, text) = hub.http().get_text("/metrics").await;
    assert_eq!(status, 200);
    let prefix = format!("actionhub_limits_hit_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .trim()
        .parse()
        .expect("a count")
}

/// Asserts the hub still serves: a fresh client publishes and a subscriber receives it.
async fn still_serves(hub: &Hub, key: &str) {
    let mut watcher = key_client(hub, key).await;
    let visitor = Visitor::new();
    watcher
        .subscribe_to(
            "still",
            &["all"],
            Some(json!({"customerId": [visitor.customer_id]})),
        )
        .await;
    let mut publisher = key_client(hub, key).await;
    let seq = publisher.publish_ok(visitor.page()).await;
    let mut seen = false;
    for _ in 0..3 {
        let event = watcher.next_event().await;
        if seq_of(&event) == seq {
            seen = true;
            break;
        }
    }
    assert!(seen, "the subscriber received the page view");
}

// ---------------------------------------------------------------------------------------------
// Open mode and credentials on the WebSocket

#[tokio::test]
async fn open_mode_refuses_a_public_listen_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::ephemeral(dir.path());
    config.listen = "0.0.0.0:0".parse().expect("addr");
    let err = actionhub::server::start(config.clone())
        .await
        .err()
        .expect("open mode on 0.0.0.0 is refused")
        .to_string();
    assert!(err.contains("loopback"), "{err}");
    assert!(err.contains("ACTIONHUB_API_KEYS"), "{err}");
    // With credentials the same address is acceptable (checked, not bound).
    secure(&mut config);
    assert!(!config.is_open_mode());
    config.validate().expect("a keyed hub may listen publicly");
}

#[tokio::test]
async fn credentials_are_required_once_configured() {
    let hub = secure_hub().await;
    refused_connect(&hub, json!({}), "unauthorized", 4001).await;
    refused_connect(&hub, json!({"apiKey": "nope"}), "unauthorized", 4001).await;
    refused_connect(&hub, json!({"token": "nope"}), "unauthorized", 4001).await;
    let both = json!({"apiKey": BOTH, "token": token_for(&uuid())});
    refused_connect(&hub, both, "unauthorized", 4001).await;
    // A bad key on the upgrade is refused at connect the same way.
    let mut client = hub
        .client_with_headers(&[("x-api-key", "nope")])
        .await
        .expect("upgrade");
    assert_error(&client.connect_with(json!({})).await, "unauthorized", None);
    client.closed_with(4001).await;
}

#[tokio::test]
async fn connected_describes_the_principal() {
    let hub = secure_hub().await;
    let by_frame = key_client(&hub, BOTH).await;
    assert_eq!(
        by_frame.connected["scope"],
        json!({"kind": "apiKey", "scopes": ["publish", "subscribe"]})
    );
    let mut by_header = hub
        .client_with_headers(&[("x-api-key", READER)])
        .await
        .expect("upgrade");
    let reply = by_header.connect_with(json!({})).await;
    assert_eq!(
        reply["scope"],
        json!({"kind": "apiKey", "scopes": ["subscribe"]})
    );
    let customer = uuid();
    let token = token_client(&hub, &customer).await;
    let scope = &token.connected["scope"];
    assert_eq!(scope["kind"], json!("token"));
    assert_eq!(scope["customerId"], json!(customer));
    assert_eq!(scope["scopes"], json!(["publish", "subscribe"]));
    assert_timestamp(&scope["expiresAt"]);
}

#[tokio::test]
async fn a_token_that_never_expires_in_practice_is_served() {
    let hub = secure_hub().await;
    let far = sign(SECRET_1, json!({"sub": uuid(), "exp": u64::MAX / 2}));
    let mut client = hub.client_with(json!({"token": far})).await;
    assert_type(&client.request(json!({"op": "ping"})).await, "pong");
}

#[tokio::test]
async fn expired_early_and_forged_tokens_are_unauthorized() {
    let hub = secure_hub().await;
    let sub = uuid();
    let t = unix_now();
    let cases = [
        ("expired", sign(SECRET_1, json!({"sub": sub, "exp": t - 5}))),
        (
            "not yet valid",
            sign(
                SECRET_1,
                json!({"sub": sub, "exp": t + 600, "nbf": t + 300}),
            ),
        ),
        (
            "unknown secret",
            sign(
                "a-third-secret-nobody-configured-0123456789",
                json!({"sub": sub, "exp": t + 600}),
            ),
        ),
        ("no exp", sign(SECRET_1, json!({"sub": sub}))),
        (
            "sub not a UUIDv4",
            sign(SECRET_1, json!({"sub": NOT_V4_UUID, "exp": t + 600})),
        ),
        (
            "HS512",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS512),
                &json!({"sub": sub, "exp": t + 600}),
                &EncodingKey::from_secret(SECRET_1.as_bytes()),
            )
            .expect("sign"),
        ),
        ("garbage", "a.b.c".to_owned()),
    ];
    for (what, token) in cases {
        let mut client = hub.raw_client().await;
        let reply = client.connect_with(json!({"token": token})).await;
        assert_eq!(reply["code"], json!("unauthorized"), "{what}: {reply}");
        client.closed_with(4001).await;
    }
}

#[tokio::test]
async fn both_secrets_verify_and_minted_tokens_use_the_first() {
    let hub = secure_hub().await;
    let customer = uuid();
    let old = sign(SECRET_2, json!({"sub": customer, "exp": unix_now() + 600}));
    hub.client_with(json!({"token": old})).await;
    let http = hub.http_with(&[("x-api-key", PUBLISHER)]);
    let (status, minted) = http
        .post("/v1/tokens", &json!({"customerId": customer}))
        .await;
    assert_eq!(status, 200, "{minted}");
    let token = minted["token"].as_str().expect("token").to_owned();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &DecodingKey::from_secret(SECRET_1.as_bytes()),
        &validation,
    )
    .expect("signed with the first secret")
    .claims;
    assert_eq!(claims["sub"], json!(customer));
    assert!(jsonwebtoken::decode::<Value>(
        &token,
        &DecodingKey::from_secret(SECRET_2.as_bytes()),
        &validation,
    )
    .is_err());
    hub.client_with(json!({"token": token})).await;
}

// ---------------------------------------------------------------------------------------------
// Scopes

#[tokio::test]
async fn ws_ops_check_their_scope() {
    let hub = secure_hub().await;
    let visitor = Visitor::new();
    for key in [READER, ADMIN] {
        let mut client = key_client(&hub, key).await;
        client
            .publish_refused(visitor.page(), "forbidden", None)
            .await;
        // A refusal hurts nothing: the connection goes on.
        assert_type(&client.request(json!({"op": "ping"})).await, "pong");
    }
    for key in [PUBLISHER, ADMIN] {
        let mut client = key_client(&hub, key).await;
        let reply = client
            .request(json!({"op": "subscribe", "sub": "s", "topics": ["all"]}))
            .await;
        assert_error(&reply, "forbidden", None);
        assert_type(&client.request(json!({"op": "ping"})).await, "pong");
    }
    let mut both = key_client(&hub, BOTH).await;
    both.subscribe_to("s", &["all"], None).await;
    both.publish_ok(visitor.page()).await;
    let mut publisher = key_client(&hub, PUBLISHER).await;
    let reply = publisher
        .request(json!({"op": "refresh", "token": token_for(&uuid())}))
        .await;
    assert_error(&reply, "bad_request", None);
}

/// Every `/v1` endpoint with the scope it needs.
fn endpoints() -> Vec<(Method, String, &'static str)> {
    let customer = uuid();
    vec![
        (Method::POST, "/v1/events".into(), "publish"),
        (Method::POST, "/v1/tokens".into(), "publish"),
        (Method::GET, "/v1/events".into(), "subscribe"),
        (Method::GET, format!("/v1/actions/{}", uuid()), "subscribe"),
        (
            Method::GET,
            format!("/v1/customers/{customer}"),
            "subscribe",
        ),
        (
            Method::GET,
            format!("/v1/customers/{customer}/events"),
            "subscribe",
        ),
        (Method::GET, "/v1/stats/action-maps".into(), "subscribe"),
    ]
}

async fn status_and_code(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["error"]["code"].clone())
}

#[tokio::test]
async fn http_endpoints_check_keys_and_scopes() {
    let hub = secure_hub().await;
    let http = hub.http();
    let bearer = format!("Bearer {}", token_for(&uuid()));
    for (method, path, scope) in endpoints() {
        let no_key = http.raw(method.clone(), &path, &[]).await;
        assert_eq!(
            status_and_code(no_key).await,
            (401, json!("unauthorized")),
            "{method} {path} without a key"
        );
        let bad_key = http
            .raw(method.clone(), &path, &[("x-api-key", "nope")])
            .await;
        assert_eq!(
            status_and_code(bad_key).await,
            (401, json!("unauthorized")),
            "{method} {path} with a bad key"
        );
        // HTTP takes keys only: a browser token is not a credential here.
        let token = http
            .raw(method.clone(), &path, &[("authorization", &bearer)])
            .await;
        assert_eq!(
            status_and_code(token).await,
            (401, json!("unauthorized")),
            "{method} {path} with a token"
        );
        let lacking = if scope == "publish" {
            READER
        } else {
            PUBLISHER
        };
        for key in [lacking, ADMIN] {
            let response = http.raw(method.clone(), &path, &[("x-api-key", key)]).await;
            assert_eq!(
                status_and_code(response).await,
                (403, json!("forbidden")),
                "{method} {path} with {key}"
            );
        }
        let holder = if scope == "publish" {
            PUBLISHER
        } else {
            READER
        };
        let response = http
            .raw(method.clone(), &path, &[("x-api-key", holder)])
            .await;
        let status = response.status().as_u16();
        assert!(
            ![401, 403].contains(&status),
            "{method} {path} with {holder}: {status}"
        );
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, _) = http.get_text(path).await;
        assert_eq!(status, 200, "{path} needs no key");
    }
}

#[tokio::test]
async fn minting_checks_its_input() {
    let hub = secure_hub().await;
    let http = hub.http_with(&[("x-api-key", PUBLISHER)]);
    let customer = uuid();
    let bad = [
        json!({}),
        json!({"customerId": "x"}),
        json!({"customerId": NOT_V4_UUID}),
        json!({"customerId": customer, "sessionId": 5}),
        json!({"customerId": customer, "ttlSeconds": 0}),
        json!({"customerId": customer, "ttlSeconds": 86_401}),
        json!({"customerId": customer, "ttlSeconds": "60"}),
        json!({"customerId": customer, "extra": 1}),
        json!([customer]),
    ];
    for body in bad {
        let answer = http.post("/v1/tokens", &body).await;
        assert_http_error(&answer, 400, "bad_request");
    }
    assert_http_error(
        &http.post_raw("/v1/tokens", "not json").await,
        400,
        "bad_request",
    );
    let session = uuid();
    let before = unix_now();
    let (status, minted) = http
        .post(
            "/v1/tokens",
            &json!({"customerId": customer, "sessionId": session, "ttlSeconds": 60}),
        )
        .await;
    assert_eq!(status, 200, "{minted}");
    assert_timestamp(&minted["expiresAt"]);
    let claims = jsonwebtoken::decode::<Value>(
        minted["token"].as_str().expect("token"),
        &DecodingKey::from_secret(SECRET_1.as_bytes()),
        &Validation::new(Algorithm::HS256),
    )
    .expect("a JWT signed with the first secret")
    .claims;
    assert_eq!(claims["sid"], json!(session));
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(
        (before + 60..=unix_now() + 60).contains(&exp),
        "exp {exp} is 60s on"
    );
    // A hub with keys but no secret cannot mint.
    let keys_only =
        Hub::start_with(|c| c.api_keys = format!("{PUBLISHER}=publish").parse().unwrap()).await;
    let answer = keys_only
        .http_with(&[("x-api-key", PUBLISHER)])
        .post("/v1/tokens", &json!({"customerId": customer}))
        .await;
    assert_http_error(&answer, 503, "unavailable");
}

// ---------------------------------------------------------------------------------------------
// Isolation: a token for customer A sees and touches nothing of customer B

/// Customer A's and customer B's histories: B is signed in as `user-b` and each has an
/// offered action.
struct TwoCustomers {
    a: Visitor,
    b: Visitor,
    a_action: Action,
    b_action: Action,
}

async fn two_customers(hub: &Hub) -> TwoCustomers {
    let a = Visitor::new();
    let b = Visitor::new();
    let a_action = a.action("webchat");
    let b_action = b.action("webchat");
    let mut publisher = key_client(hub, PUBLISHER).await;
    publisher.publish_ok(a.page()).await;
    publisher.publish_ok(a_action.event("offered")).await;
    publisher.publish_ok(b.event("signin", "user-b")).await;
    publisher.publish_ok(b_action.event("offered")).await;
    TwoCustomers {
        a,
        b,
        a_action,
        b_action,
    }
}

fn customers_in(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            f["event"]["customerId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_token_receives_only_its_customer_live() {
    let hub = secure_hub().await;
    let c = two_customers(&hub).await;
    let mut a = token_client(&hub, &c.a.customer_id).await;
    a.subscribe_to("everything", &["all"], None).await;
    // Filters that name B's user, session or action narrow A's view to nothing.
    a.subscribe_to("by-user", &["all"], Some(json!({"userId": ["user-b"]})))
        .await;
    a.subscribe_to(
        "by-session",
        &["all"],
        Some(json!({"sessionId": [c.b.session_id]})),
    )
    .await;
    a.subscribe_to(
        "by-action",
        &["all"],
        Some(json!({"actionId": [c.b_action.action_id]})),
    )
    .await;
    let mut publisher = key_client(&hub, PUBLISHER).await;
    publisher.publish_ok(c.b.page()).await;
    publisher.publish_ok(c.b_action.event("accepted")).await;
    let mine = publisher.publish_ok(c.a.page()).await;
    let event = a.next_event().await;
    assert_eq!(seq_of(&event), mine, "only A's page view: {event}");
    a.expect_no_frame().await;
    for filter in [
        json!({"customerId": [c.b.customer_id]}),
        json!({"customerId": [c.a.customer_id, c.b.customer_id]}),
    ] {
        let reply = a
            .request(json!({"op": "subscribe", "sub": "b", "topics": ["all"], "where": filter}))
            .await;
        assert_error(&reply, "forbidden", None);
    }
    // Naming its own customer is fine.
    a.subscribe_to(
        "own",
        &["all"],
        Some(json!({"customerId": [c.a.customer_id]})),
    )
    .await;
}

#[tokio::test]
async fn a_token_snapshot_and_replay_hold_only_its_customer() {
    let hub = secure_hub().await;
    let c = two_customers(&hub).await;
    let mut a = token_client(&hub, &c.a.customer_id).await;
    let epoch = a.epoch();
    a.subscribe(json!("snap"), json!({"topics": ["all"], "snapshot": true}))
        .await;
    let snapshot = a.expect_type("snapshot").await;
    let actions: Vec<&Value> = snapshot["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .collect();
    assert_eq!(actions.len(), 1, "{snapshot}");
    assert_eq!(actions[0]["actionId"], json!(c.a_action.action_id));
    let customers = snapshot["customers"].as_array().expect("customers");
    assert!(
        customers
            .iter()
            .all(|x| x["customerId"] == json!(c.a.customer_id)),
        "{snapshot}"
    );
    a.subscribe(
        json!("user-snap"),
        json!({"topics": ["all"], "snapshot": true, "where": {"userId": ["user-b"]}}),
    )
    .await;
    let snapshot = a.expect_type("snapshot").await;
    assert_eq!(snapshot["actions"], json!([]), "{snapshot}");
    assert!(
        !snapshot.to_string().contains(&c.b.customer_id),
        "{snapshot}"
    );
    let reply = a
        .subscribe(
            json!("replay"),
            json!({"topics": ["all"], "since": 0, "epoch": epoch}),
        )
        .await;
    assert_eq!(reply["recovered"], json!(true));
    // A's history: session started, page, offered.
    let replayed = a.events(3).await;
    assert!(
        customers_in(&replayed)
            .iter()
            .all(|x| *x == c.a.customer_id),
        "{replayed:?}"
    );
    a.expect_no_frame().await;
}

#[tokio::test]
async fn a_token_publishes_only_its_customer_and_session() {
    let hub = secure_hub().await;
    let c = two_customers(&hub).await;
    let mut a = token_client(&hub, &c.a.customer_id).await;
    a.publish_refused(c.b.page(), "forbidden", None).await;
    a.publish_refused(c.b_action.event("accepted"), "forbidden", None)
        .await;
    a.publish_ok(c.a_action.event("accepted")).await;
    // A session-bound token publishes only that session.
    let bound = sign(
        SECRET_1,
        json!({"sub": c.a.customer_id, "sid": c.a.session_id, "exp": unix_now() + 600}),
    );
    let mut session = hub.client_with(json!({"token": bound})).await;
    assert_eq!(
        session.connected["scope"]["sessionId"],
        json!(c.a.session_id)
    );
    session.publish_ok(c.a.page()).await;
    let mut elsewhere = Visitor {
        customer_id: c.a.customer_id.clone(),
        session_id: c.a.session_id.clone(),
    };
    elsewhere.new_session();
    session
        .publish_refused(elsewhere.page(), "forbidden", None)
        .await;
    // B's state is untouched.
    let (status, b_action) = hub
        .http_with(&[("x-api-key", READER)])
        .get(&format!("/v1/actions/{}", c.b_action.action_id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(b_action["actionState"], json!("offered"), "{b_action}");
}

/// A token for `customer` that vouches for the site's user `uid`.
fn token_with_user(customer: &str, uid: &str) -> String {
    sign(
        SECRET_1,
        json!({"sub": customer, "uid": uid, "exp": unix_now() + 600}),
    )
}

/// The customers of the visitor profile of `user` (a reader's view).
async fn customers_of_user(hub: &Hub, user: &str) -> Value {
    let (status, view) = hub
        .http_with(&[("x-api-key", READER)])
        .get(&format!("/v1/visitors/user:{user}"))
        .await;
    assert_eq!(status, 200, "{view}");
    view["customers"].clone()
}

#[tokio::test]
async fn a_token_links_only_the_user_id_it_carries() {
    let hub = secure_hub().await;
    let c = two_customers(&hub).await;
    let b_customers = customers_of_user(&hub, "user-b").await;
    // Without `uid`, a token links no user at all: not B's, not a new one.
    let mut plain = token_client(&hub, &c.a.customer_id).await;
    for kind in ["identify", "signin", "userinfo"] {
        plain
            .publish_refused(c.a.event(kind, "user-b"), "forbidden", Some("userId"))
            .await;
        plain
            .publish_refused(c.a.event(kind, "user-a"), "forbidden", Some("userId"))
            .await;
    }
    // With `uid`, only that user, and never channels.
    let mut vouched = hub
        .client_with(json!({"token": token_with_user(&c.a.customer_id, "user-a")}))
        .await;
    assert_eq!(vouched.connected["scope"]["userId"], json!("user-a"));
    for kind in ["identify", "signin", "userinfo"] {
        vouched
            .publish_refused(c.a.event(kind, "user-b"), "forbidden", Some("userId"))
            .await;
    }
    let with_channels =
        c.a.event("identify", "user-a")
            .with("channels", json!({"whatsapp": "10435685475"}));
    vouched
        .publish_refused(with_channels, "forbidden", Some("channels"))
        .await;
    vouched.publish_ok(c.a.event("identify", "user-a")).await;
    // B's profile is exactly as it was; A's is its own.
    assert_eq!(customers_of_user(&hub, "user-b").await, b_customers);
    assert_eq!(
        customers_of_user(&hub, "user-a").await,
        json!([c.a.customer_id])
    );
    // A server with a key keeps full power.
    let mut server = key_client(&hub, PUBLISHER).await;
    server.publish_ok(c.a.event("identify", "user-b")).await;
}

#[tokio::test]
async fn a_minted_token_carries_the_user_id_asked_for() {
    let hub = secure_hub().await;
    let http = hub.http_with(&[("x-api-key", PUBLISHER)]);
    let customer = uuid();
    for bad in [json!(""), json!(7), json!("x".repeat(257))] {
        let answer = http
            .post(
                "/v1/tokens",
                &json!({"customerId": customer, "userId": bad}),
            )
            .await;
        assert_http_error(&answer, 400, "bad_request");
    }
    let (status, minted) = http
        .post(
            "/v1/tokens",
            &json!({"customerId": customer, "userId": "user-7"}),
        )
        .await;
    assert_eq!(status, 200, "{minted}");
    let token = minted["token"].as_str().expect("token");
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(SECRET_1.as_bytes()),
        &Validation::new(Algorithm::HS256),
    )
    .expect("a JWT signed with the first secret")
    .claims;
    assert_eq!(claims["uid"], json!("user-7"));
    let visitor = Visitor {
        customer_id: customer,
        session_id: uuid(),
    };
    let mut browser = hub.client_with(json!({"token": token})).await;
    browser.publish_ok(visitor.event("signin", "user-7")).await;
    browser
        .publish_refused(
            visitor.event("identify", "user-8"),
            "forbidden",
            Some("userId"),
        )
        .await;
}

#[tokio::test]
async fn a_token_never_learns_the_other_customers_of_a_merged_profile() {
    let hub = secure_hub().await;
    let c = two_customers(&hub).await;
    let mut a = token_client(&hub, &c.a.customer_id).await;
    let epoch = a.epoch();
    a.subscribe_to("live", &["visitor:merged"], None).await;
    let mut server = key_client(&hub, BOTH).await;
    server
        .subscribe_to("server", &["visitor:merged"], None)
        .await;
    // The site links A to B's user from its server: both customers are one profile now.
    let identify = server.publish_ok(c.a.event("identify", "user-b")).await;
    let full = server.next_event().await;
    let seq = identify + 1;
    assert_event(&full, seq, "visitor:merged");
    let merged = merged_customers(&full["event"]);
    let mut both = vec![c.a.customer_id.clone(), c.b.customer_id.clone()];
    both.sort();
    assert_eq!(merged, both, "the server sees the whole profile: {full}");
    // A hears of it, live and replayed, without B's cookie id anywhere in the frame.
    let live = a.next_event().await;
    let replayed = {
        a.subscribe(
            json!("replay"),
            json!({"topics": ["visitor:merged"], "since": 0, "epoch": epoch}),
        )
        .await;
        a.next_event().await
    };
    for frame in [live, replayed] {
        assert_event(&frame, seq, "visitor:merged");
        assert_eq!(
            frame["event"]["customerId"],
            json!(c.a.customer_id),
            "{frame}"
        );
        assert_eq!(
            frame["event"]["mergedCustomerIds"],
            json!([c.a.customer_id]),
            "{frame}"
        );
        assert_eq!(frame["event"]["userId"], json!("user-b"), "{frame}");
        assert!(
            !frame.to_string().contains(&c.b.customer_id),
            "B's customer id reached A's browser: {frame}"
        );
    }
    a.expect_no_frame().await;
}

// ---------------------------------------------------------------------------------------------
// Token lifetime

#[tokio::test]
async fn a_token_that_expires_closes_the_connection() {
    let hub = secure_hub().await;
    let token = sign(SECRET_1, json!({"sub": uuid(), "exp": unix_now() + 2}));
    let mut client = hub.client_with(json!({"token": token})).await;
    let frame = bounded(WAIT, "the expiry error", client.recv()).await;
    assert_error(&frame, "unauthorized", None);
    client.closed_with(4001).await;
}

#[tokio::test]
async fn refresh_replaces_the_token_for_the_same_customer() {
    let hub = secure_hub().await;
    let customer = uuid();
    let short = sign(SECRET_1, json!({"sub": customer, "exp": unix_now() + 2}));
    let mut client = hub.client_with(json!({"token": short})).await;
    let other = client
        .request(json!({"op": "refresh", "token": token_for(&uuid())}))
        .await;
    assert_error(&other, "forbidden", None);
    let bad = client
        .request(json!({"op": "refresh", "token": "x.y.z"}))
        .await;
    assert_error(&bad, "unauthorized", None);
    let long = sign(SECRET_2, json!({"sub": customer, "exp": unix_now() + 600}));
    let reply = client
        .request(json!({"op": "refresh", "token": long}))
        .await;
    assert_type(&reply, "refreshed");
    assert_timestamp(&reply["expiresAt"]);
    // Past the first token's expiry the connection still answers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_type(&client.request(json!({"op": "ping"})).await, "pong");
}

// ---------------------------------------------------------------------------------------------
// Origins and CORS

#[tokio::test]
async fn token_connections_must_come_from_an_allowed_origin() {
    let hub = Hub::start_with(|c| {
        secure(c);
        c.allowed_origins = vec!["https://shop.example".into()];
    })
    .await;
    let token = token_for(&uuid());
    for origin in [Some("https://evil.example"), None] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        let mut client = hub.client_with_headers(&headers).await.expect("upgrade");
        let reply = client.connect_with(json!({"token": token})).await;
        assert_error(&reply, "forbidden", None);
        client.closed_with(4003).await;
    }
    let mut allowed = hub
        .client_with_headers(&[("origin", "https://shop.example")])
        .await
        .expect("upgrade");
    assert_type(
        &allowed.connect_with(json!({"token": token})).await,
        "connected",
    );
    // Keys are server-side credentials, not origin-checked.
    let mut keyed = hub
        .client_with_headers(&[("origin", "https://evil.example")])
        .await
        .expect("upgrade");
    assert_type(
        &keyed.connect_with(json!({"apiKey": READER})).await,
        "connected",
    );
    // CORS follows the same list.
    let http = hub.http();
    let preflight = |origin: &'static str| {
        let http = &http;
        async move {
            http.raw(
                Method::OPTIONS,
                "/v1/events",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "x-api-key"),
                ],
            )
            .await
        }
    };
    let allowed = preflight("https://shop.example").await;
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or_default().to_owned()),
        Some("https://shop.example".to_owned())
    );
    let refused = preflight("https://evil.example").await;
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

// ---------------------------------------------------------------------------------------------
// Limits

#[tokio::test]
async fn a_token_connection_is_rate_limited_then_closed() {
    let hub = Hub::start_with(|c| {
        secure(c);
        c.publish_rate = 1;
        c.publish_burst = 3;
    })
    .await;
    let visitor = Visitor::new();
    let mut flooder = token_client(&hub, &visitor.customer_id).await;
    for _ in 0..3 {
        flooder.publish_ok(visitor.page()).await;
    }
    flooder
        .publish_refused(visitor.page(), "rate_limited", None)
        .await;
    // Another token connection of the same customer is not affected.
    let mut neighbour = token_client(&hub, &visitor.customer_id).await;
    neighbour.publish_ok(visitor.page()).await;
    for _ in 0..40 {
        flooder
            .send(json!({"op": "publish", "event": visitor.page()}))
            .await;
    }
    flooder.closed_with(4029).await;
    neighbour.publish_ok(visitor.page()).await;
    assert!(limit_hits(&hub, "publish_rate").await >= 1);
}

#[tokio::test]
async fn connections_are_limited_per_address_and_in_total() {
    let hub = Hub::start_with(|c| {
        secure(c);
        c.trust_forwarded_for = true;
        c.max_connections_per_ip = 2;
    })
    .await;
    let from = [("x-forwarded-for", "198.51.100.7")];
    let first = hub.client_with_headers(&from).await.expect("first");
    let _second = hub.client_with_headers(&from).await.expect("second");
    let (status, body) = hub
        .client_with_headers(&from)
        .await
        .err()
        .expect("a third connection from one address is refused");
    assert_eq!(status, 429, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(body["error"]["code"], json!("rate_limited"));
    // Other addresses, and loopback itself (the operator's host), are not affected.
    let _other = hub
        .client_with_headers(&[("x-forwarded-for", "198.51.100.8")])
        .await
        .expect("another address");
    let mut locals = Vec::new();
    for _ in 0..3 {
        locals.push(key_client(&hub, READER).await);
    }
    // A place frees up when a connection ends.
    drop(first);
    bounded(WAIT, "a freed place", async {
        while hub.client_with_headers(&from).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(limit_hits(&hub, "connections_per_ip").await >= 1);

    let full = Hub::start_with(|c| {
        secure(c);
        c.max_connections = 1;
    })
    .await;
    let _one = full.client_with_headers(&[]).await.expect("the first");
    let (status, body) = full
        .client_with_headers(&[])
        .await
        .err()
        .expect("the hub is full");
    assert_eq!(status, 503, "{body}");
    // HTTP is unaffected by WebSocket connection limits.
    let (status, _, _) = full.http().get_text("/healthz").await;
    assert_eq!(status, 200);
    assert!(limit_hits(&full, "connections").await >= 1);
}

#[tokio::test]
async fn forwarded_addresses_count_only_when_trusted() {
    let trusting = Hub::start_with(|c| {
        secure(c);
        c.trust_forwarded_for = true;
        c.max_connections_per_ip = 1;
    })
    .await;
    let _a = trusting
        .client_with_headers(&[("x-forwarded-for", "10.0.0.1")])
        .await
        .expect("first address");
    let _b = trusting
        .client_with_headers(&[("x-forwarded-for", "10.0.0.2")])
        .await
        .expect("second address");
    // The proxy appends the real client last; what the client wrote before is ignored.
    let again = trusting
        .client_with_headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.1")])
        .await;
    assert_eq!(again.err().map(|e| e.0), Some(429));
    // Untrusted, the header is ignored: the peer (loopback here) is the address.
    let ignoring = Hub::start_with(|c| {
        secure(c);
        c.max_connections_per_ip = 1;
    })
    .await;
    let forged = [("x-forwarded-for", "10.0.0.1")];
    let _x = ignoring.client_with_headers(&forged).await.expect("first");
    let _y = ignoring.client_with_headers(&forged).await.expect("second");
}

#[tokio::test]
async fn deep_json_is_refused_before_parsing() {
    let hub = Hub::start_with(|c| {
        secure(c);
        c.max_json_depth = 16;
    })
    .await;
    let mut client = key_client(&hub, BOTH).await;
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let frame = format!(r#"{{"op":"publish","id":1,"event":{deep}}}"#);
    client.send_text(&frame).await;
    assert_error(&client.recv().await, "bad_request", None);
    // Nesting within the limit is fine: event.data 10 deep.
    let visitor = Visitor::new();
    let mut nested = json!({"leaf": true});
    for _ in 0..10 {
        nested = json!({ "n": nested });
    }
    let event = visitor
        .action("webchat")
        .event("offered")
        .with("data", nested);
    client.publish_ok(event).await;
    let http = hub.http_with(&[("x-api-key", BOTH)]);
    let answer = http.post_raw("/v1/events", deep.clone()).await;
    assert_http_error(&answer, 400, "bad_request");
    let mut too_deep = json!(1);
    for _ in 0..20 {
        too_deep = json!({ "n": too_deep });
    }
    let event = visitor
        .action("webchat")
        .event("offered")
        .with("data", too_deep);
    assert_http_error(&http.post("/v1/events", &event).await, 400, "bad_request");
    assert!(limit_hits(&hub, "json_depth").await >= 3);
    still_serves(&hub, BOTH).await;
}

#[tokio::test]
async fn size_subscription_and_connect_limits_are_counted() {
    let hub = Hub::start_with(|c| {
        secure(c);
        c.max_frame_bytes = 2048;
        c.max_body_bytes = 4096;
        c.max_batch_events = 2;
        c.max_subscriptions_per_connection = 2;
        c.connect_timeout = Duration::from_millis(300);
    })
    .await;
    let mut big = key_client(&hub, BOTH).await;
    big.send_text(&format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(4096)))
        .await;
    big.closed_with(4009).await;
    let http = hub.http_with(&[("x-api-key", BOTH)]);
    let answer = http.post_raw("/v1/events", "x".repeat(8192)).await;
    assert_http_error(&answer, 413, "too_large");
    let visitor = Visitor::new();
    let batch = json!([visitor.page(), visitor.page(), visitor.page()]);
    assert_http_error(&http.post("/v1/events", &batch).await, 413, "too_large");
    let mut subs = key_client(&hub, BOTH).await;
    subs.subscribe_to("1", &["all"], None).await;
    subs.subscribe_to("2", &["all"], None).await;
    let reply = subs
        .request(json!({"op": "subscribe", "sub": "3", "topics": ["all"]}))
        .await;
    assert_error(&reply, "rate_limited", None);
    let mut silent = hub.raw_client().await;
    silent.closed_with(4000).await;
    for limit in [
        "frame_size",
        "body_size",
        "batch_size",
        "subscriptions",
        "connect_timeout",
    ] {
        assert!(limit_hits(&hub, limit).await >= 1, "{limit} counted");
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile input

#[tokio::test]
async fn hostile_clients_do_not_disturb_the_others() {
    let hub = Hub::start_with(|c| {
        secure(c);
        c.connect_timeout = Duration::from_secs(30);
    })
    .await;
    // Half-open: TCP connections that never upgrade, one that stops mid-request, and
    // upgrades that never send connect.
    let mut idle_tcp = Vec::new();
    for _ in 0..5 {
        idle_tcp.push(TcpStream::connect(hub.addr()).await.expect("TCP"));
    }
    let mut partial = TcpStream::connect(hub.addr()).await.expect("TCP");
    partial
        .write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .expect("write");
    let mut unconnected = Vec::new();
    for _ in 0..5 {
        unconnected.push(hub.raw_client().await);
    }
    still_serves(&hub, BOTH).await;

    // Garbage, binary, huge and deeply nested frames from a connected client.
    let mut hostile = key_client(&hub, BOTH).await;
    let garbage = [
        "".to_owned(),
        "\u{0}\u{1}\u{2}".to_owned(),
        "{".repeat(10_000),
        "[".repeat(60_000),
        r#"{"op":"subscribe","sub":"x","topics":["all"],"where":{"customerId":[[[[[[]]]]]]}}"#
            .to_owned(),
        format!(
            r#"{{"op":"publish","event":{{"data":"{}"}}}}"#,
            "\\u0000".repeat(5000)
        ),
    ];
    for text in &garbage {
        hostile.send_text(text).await;
        assert_type(&hostile.recv().await, "error");
        // One good frame between keeps the bad-frame counter from closing it.
        assert_type(&hostile.request(json!({"op": "ping"})).await, "pong");
    }
    hostile
        .send_message(Message::Binary(vec![0xff; 1000].into()))
        .await;
    assert_error(&hostile.recv().await, "bad_request", None);
    still_serves(&hub, BOTH).await;
    hostile
        .send_text(&format!("\"{}\"", "a".repeat(1 << 20)))
        .await;
    hostile.closed_with(4009).await;

    // Garbage before connect closes only that connection.
    let mut early = hub.raw_client().await;
    early.send_text(&"[".repeat(50_000)).await;
    assert_error(&early.recv().await, "bad_request", None);
    early.closed_with(4000).await;

    // Garbage over plain HTTP.
    let http = hub.http_with(&[("x-api-key", BOTH)]);
    for body in [
        "",
        "\u{0}",
        "{\"",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ] {
        let (status, _) = http.post_raw("/v1/events", body.to_owned()).await;
        assert_eq!(status, 400, "{body:?}");
    }
    let (status, _) = http
        .get_query("/v1/events", &[("where", "[".repeat(5000))])
        .await;
    assert_eq!(status, 400);
    still_serves(&hub, BOTH).await;
    drop((idle_tcp, partial, unconnected));
}
