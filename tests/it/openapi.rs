//! The OpenAPI document at `/v1/openapi.json`: public, a valid OpenAPI 3.1 document, and
//! true to the router: every operation it lists reaches a handler, every route the
//! router serves beside the WebSocket and the embedded files is in it, and schemathesis
//! (PyPI, in `target/py`) finds no server error and no answer the document does not allow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{Hub, Visitor};

const KEY: &str = "openapi-test-key";

/// A hub that takes keys, so the document's being public is tested, not assumed, and has
/// a JWT secret, so that `POST /v1/tokens` mints tokens as a deployed hub does.
async fn keyed_hub() -> Hub {
    Hub::start_with(|c| {
        c.api_keys = format!("{KEY}=publish+subscribe+admin").parse().unwrap();
        c.jwt_secrets = "openapi-test-secret-of-32-bytes!!".parse().unwrap();
    })
    .await
}

/// The document as the hub serves it, without credentials.
async fn served(hub: &Hub) -> Value {
    let (status, document) = hub.http().get("/v1/openapi.json").await;
    assert_eq!(status, 200, "{document}");
    document
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => out.push(target),
                    _ => refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// (method, path) of every operation of the document.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_string(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn the_document_is_public_and_parses_as_openapi_3_1_with_every_reference_resolved() {
    let hub = keyed_hub().await;
    let document = served(&hub).await;
    // The keys OpenAPI 3.1 requires. (utoipa's model cannot read every schema it writes
    // back, so the document is checked as JSON; schemathesis in scripts/test loads it
    // through a full OpenAPI parser too.)
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["info"]["title"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert!(document["info"]["version"].is_string());
    let description = document["info"]["description"].as_str().unwrap();
    assert!(description.contains("docs/protocol.md"), "{description}");
    assert!(description.contains("/v1/ws"), "{description}");
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas");
    let mut targets = Vec::new();
    refs(&document, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a reference outside the schemas: {target}"));
        assert!(schemas.contains_key(name), "{target} is not defined");
    }
    let scheme = &document["components"]["securitySchemes"]["api_key"];
    assert_eq!(scheme["type"], "apiKey", "{scheme}");
    assert_eq!(scheme["in"], "header");
    assert_eq!(scheme["name"], "X-API-Key");
    // Every operation answers something, names its credential (none for the public
    // ones), and every protected one documents the refusal of a missing key.
    for (method, path) in operations(&document) {
        let operation = &document["paths"][&path][&method];
        let responses = operation["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path}"
        );
        let security = operation["security"].as_array().expect("security");
        let public =
            actionhub::edge::http::required_scope(&method.to_uppercase().parse().unwrap(), &path)
                .is_none();
        if public {
            assert_eq!(security, &[serde_json::json!({})], "{method} {path}");
        } else {
            assert_eq!(
                security,
                &[serde_json::json!({"api_key": []})],
                "{method} {path}"
            );
            assert!(responses.contains_key("401"), "{method} {path}");
        }
    }
    // What the hub serves is what the code builds.
    assert_eq!(
        document,
        serde_json::to_value(actionhub::edge::http::openapi()).unwrap()
    );
    hub.shutdown().await;
}

/// A path of the document with its parameters filled in: ids as a UUIDv4 no entity has,
/// so that a handler answers its own 404 (or 400), never the router's.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment.starts_with('{') {
            true => "9f1c2a4e-3b7d-4c1e-8a2b-0123456789ab",
            false => segment,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_documented_operation_reaches_a_handler_and_every_route_is_documented() {
    let hub = keyed_hub().await;
    let document = served(&hub).await;
    let documented = operations(&document);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for (method, path) in &documented {
        let url = format!("http://{}{}", hub.addr(), concrete(path));
        let response = client
            .request(method.to_uppercase().parse().unwrap(), &url)
            .header("x-api-key", KEY)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        // The event stream never ends: its status and headers are enough.
        let body = match path.as_str() {
            "/v1/events/stream" => String::new(),
            _ => response.text().await.unwrap(),
        };
        assert_ne!(status, 405, "{method} {path} is not routed: {body}");
        assert!(
            !body.contains("no such endpoint"),
            "{method} {path} is not routed: {body}"
        );
        let responses = document["paths"][path][method]["responses"]
            .as_object()
            .unwrap();
        assert!(
            responses.contains_key(&status.to_string()),
            "{method} {path} answered {status}, which the document does not list: {body}"
        );
    }
    // The other direction: the router's documented part is built from the annotations
    // (`http::api`), so its routes are the document's; the routes beside it are only the
    // WebSocket and the embedded files, none of them under /v1 but the WebSocket.
    let routed: BTreeSet<String> = documented.iter().map(|(_, p)| p.clone()).collect();
    for public in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
        assert!(routed.contains(public), "{public} is not documented");
    }
    assert!(!routed.contains("/v1/ws"));
    let (api, operations_of_api) = actionhub::edge::http::api().split_for_parts();
    drop(api);
    let from_api: BTreeSet<String> = operations_of_api.paths.paths.keys().cloned().collect();
    assert_eq!(from_api, routed);
    // A route mounted by hand (`.route`, `.nest`, ...) rather than through `routes!` would
    // be served without being documented, and axum cannot list a router's routes; so the
    // sources are read, and the only hand-mounted routes allowed are the undocumented ones.
    let mut mounted = BTreeMap::new();
    hand_mounted_routes(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut mounted,
    );
    let allowed = BTreeMap::from([
        // `/v1/ws`, in `http::undocumented`.
        ("src/edge/http.rs".to_owned(), 1),
        // `/console` and the table of embedded files.
        ("src/edge/assets.rs".to_owned(), 2),
    ]);
    assert_eq!(
        mounted, allowed,
        "routes mounted outside `routes!`: mount a new endpoint with `routes!` and give its \
         handler a #[utoipa::path], so the OpenAPI document lists it"
    );
    // And what they mount is served, while an unknown path is not: the probe above can
    // tell a routed path from an unrouted one.
    let http = hub.http();
    for path in ["/console/", "/sdk/actionhub.js"] {
        let (status, _, _) = http.get_text(path).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, body) = hub
        .http_with(&[("x-api-key", KEY)])
        .get("/v1/no-such")
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.to_string().contains("no such endpoint"), "{body}");
    hub.shutdown().await;
}

/// Counts, per source file under `dir`, the calls that mount a route on an axum router
/// directly.
fn hand_mounted_routes(dir: &Path, out: &mut BTreeMap<String, usize>) {
    const MOUNTS: [&str; 5] = [
        ".route(",
        ".route_service(",
        ".nest(",
        ".nest_service(",
        ".fallback_service(",
    ];
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            hand_mounted_routes(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a source file");
        let count: usize = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .map(|line| {
                MOUNTS
                    .iter()
                    .map(|m| line.matches(m).count())
                    .sum::<usize>()
            })
            .sum();
        if count > 0 {
            let name = path.strip_prefix(&root).unwrap().display().to_string();
            out.insert(name, count);
        }
    }
}

/// The venv's schemathesis, which scripts/test installs.
fn schemathesis() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py/bin/schemathesis");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which installs PyPI's schemathesis into target/py",
        path.display()
    );
    path
}

/// The longest a schemathesis run may take; it takes well under a minute here.
const SCHEMATHESIS_LIMIT: Duration = Duration::from_secs(240);

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_the_document_does_not_allow() {
    let hub = keyed_hub().await;
    let http = hub.http_with(&[("x-api-key", KEY)]);
    // Entities for the generated requests to find: without them every id is unknown and
    // only refusals are checked, never the shapes of the views.
    let visitor = Visitor::new();
    let action = visitor.action("webchat");
    let mut signin = visitor.event("signin", "openapi-user");
    signin["channels"] = json!({"whatsapp": "10435685475"});
    let (status, answer) = http
        .post(
            "/v1/events",
            &json!([signin, visitor.page(), action.event("offered")]),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    for result in answer["results"].as_array().unwrap() {
        assert!(result["seq"].is_u64(), "{answer}");
    }
    // Half of the generated values of these parameters are the seeded ids, the other half
    // whatever schemathesis makes up.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    let dictionary = |name: &str| format!("{{ dictionary = \"{name}\", probability = 0.5 }}");
    std::fs::write(
        &config,
        format!(
            "[dictionaries.customers]\nvalues = [\"{customer}\"]\n\
             [dictionaries.actions]\nvalues = [\"{action}\"]\n\
             [dictionaries.channels]\nvalues = [\"whatsapp\"]\n\
             [dictionaries.channel_users]\nvalues = [\"10435685475\"]\n\
             [parameters]\n\
             \"path.customer_id\" = {customers}\n\
             \"path.id\" = {customers}\n\
             \"path.action_id\" = {actions}\n\
             \"path.channel\" = {channels}\n\
             \"path.channel_user_id\" = {channel_users}\n",
            customer = visitor.customer_id,
            action = action.action_id,
            customers = dictionary("customers"),
            actions = dictionary("actions"),
            channels = dictionary("channels"),
            channel_users = dictionary("channel_users"),
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(format!("http://{}/v1/openapi.json", hub.addr()))
        .args(["--header", &format!("X-API-Key: {KEY}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
        ])
        // Small enough to finish in well under a minute on two cores; a fixed seed makes a
        // failure repeatable.
        .args(["--max-examples", "30", "--seed", "17"])
        .args(["--request-timeout", "10", "--max-failures", "20"])
        // The event stream never ends: tests/it/stream.rs covers it.
        .args(["--exclude-path", "/v1/events/stream"])
        // Hypothesis keeps its example database in the working directory.
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start schemathesis");
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let read = async {
        use tokio::io::AsyncReadExt as _;
        let mut out = String::new();
        let mut err = String::new();
        let _ = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        (out, err)
    };
    let run = async { tokio::join!(child.wait(), read) };
    let (status, (out, err)) = match tokio::time::timeout(SCHEMATHESIS_LIMIT, run).await {
        Ok((status, output)) => (status.expect("schemathesis runs"), output),
        Err(_) => {
            let _ = child.start_kill();
            panic!("schemathesis (pid {pid:?}) did not finish within {SCHEMATHESIS_LIMIT:?}");
        }
    };
    assert!(
        status.success(),
        "schemathesis failed ({status}):\n{out}\n{err}"
    );
    // Every documented operation was tested but the stream and the document itself (which
    // schemathesis leaves out as the schema it loaded), so a document that lost its
    // operations cannot pass.
    let documented = operations(&serde_json::to_value(actionhub::edge::http::openapi()).unwrap());
    let tested = format!("Tested: {}", documented.len() - 2);
    assert!(out.contains(&tested), "expected {tested:?}:\n{out}");
    hub.shutdown().await;
}
