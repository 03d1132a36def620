//! The HTTP API of PROTOCOL.md section 7, and the router that also mounts `/v1/ws`.
//!
//! Handlers parse and check their input, call the hub, and shape JSON. Every refusal is
//! `{"error": {"code", "message", "details"?}}` with the status that matches its code,
//! including the ones the framework would otherwise answer in its own words (unknown
//! paths, wrong methods, oversized or unreadable bodies, bad query strings).
//!
//! Credentials: once keys or secrets are configured, every request outside the public
//! paths needs an `X-API-Key` whose scope [`required_scope`] names; [`authorize`], one
//! middleware over the whole router, is the only place that checks. Browser tokens are for
//! the WebSocket; HTTP takes keys only. CORS follows the origin allow-list. Every request
//! gets a request id and one access line at info (`request_span`), outside all of it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::edge::app::App;
use crate::edge::auth::{
    rfc3339, AuthError, Principal, Scope, DEFAULT_TOKEN_TTL_SECS, MAX_TOKEN_TTL_SECS,
};
use crate::edge::client_info;
use crate::edge::limits::too_deep;
use crate::edge::openapi::{ErrorBody, ErrorDetail, EventsPage, ReadRefusals, WriteRefusals};
use crate::edge::views;
use crate::edge::ws;
use crate::error::{ErrorCode, HubError};
use crate::hub::fanout::selects;
use crate::hub::retention::Record;
use crate::hub::Hub;
use crate::ids::{ActionId, CustomerId, Seq, SessionId, UserId};
use crate::ingest::event::{Event, MAX_USER_ID_CHARS};
use crate::ingest::topic::{Filter, TopicSet};
use crate::ingest::validate::is_user_id;
use crate::metrics::Limit;

/// Default and largest page of a list.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Retained events one `GET /v1/events` examines at most; a sparse filter pages on with
/// `next` rather than holding the history lock for a long scan.
const SCAN_BUDGET: usize = 100_000;
/// Retained records copied out per hold of the history lock; the filter runs on the
/// copies with no lock held, so a publish waits for one chunk's copy at most.
const SCAN_CHUNK: usize = 4096;

/// Runs CPU-heavy work of a read (long scans, big views) on a blocking thread, so the
/// async workers go on serving the other connections meanwhile.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HubError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| HubError::new(ErrorCode::Internal, "the read failed"))
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({ "error": self.to_json() }))).into_response()
    }
}

/// The header that carries an API key, on HTTP requests and the WebSocket upgrade.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The documented routes: each handler's `#[utoipa::path]` names its method and path,
/// and `routes!` mounts it there and files it in the OpenAPI document, so the two are one
/// table. A new endpoint goes here (or in its module's `routes`) with an annotation.
pub fn api() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(post_events, get_events))
        .routes(routes!(crate::edge::stream::get_stream))
        .routes(routes!(post_tokens))
        .routes(routes!(get_action))
        .routes(routes!(get_customer))
        .routes(routes!(get_customer_events))
        .routes(routes!(get_action_map_stats))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .merge(crate::edge::visitors::routes())
        .merge(crate::edge::segments::routes())
        .merge(crate::edge::companies::routes())
        .merge(crate::edge::sinks::api::routes())
}

/// The routes that are not in the OpenAPI document: the WebSocket (OpenAPI cannot
/// describe its frames; docs/protocol.md does) and the embedded files.
fn undocumented() -> Router<App> {
    Router::new()
        .route("/v1/ws", get(ws::upgrade))
        .merge(crate::edge::assets::routes())
}

/// The OpenAPI document of [`api`], as `GET /v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    crate::edge::openapi::document(api().split_for_parts().1)
}

/// The hub's routes.
pub fn router(ctx: App) -> Router {
    let body_limit = ctx.hub.config().max_body_bytes;
    let cors = cors(&ctx);
    let (api, operations) = api().split_for_parts();
    let document = crate::edge::openapi::document(operations);
    let document: Arc<str> = document
        .to_json()
        .expect("the OpenAPI document serializes")
        .into();
    let router = api
        .merge(undocumented())
        .layer(Extension(OpenApiJson(document)))
        .fallback(|| async { HubError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            let mut response =
                HubError::bad_request("method not allowed on this endpoint").into_response();
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(ctx.clone(), authorize));
    // CORS answers preflights itself, so it sits outside the credential check.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    // Outermost, so that refusals (credentials, CORS) are logged too. The request id is a
    // client's `x-request-id` or a new UUID, sent back in the response.
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(
                    |response: &Response, latency: Duration, _: &tracing::Span| {
                        // A WebSocket's upgrade is a connection, not a request: the
                        // connection logs its own ends (see `edge::ws`).
                        if response.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
                            return;
                        }
                        tracing::info!(
                            status = response.status().as_u16(),
                            latency_ms = latency.as_secs_f64() * 1e3,
                            "http request"
                        );
                    },
                )
                // A 5xx is a real failure of the hub's; a 4xx is the client's and only
                // its access line says so.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(ctx)
}

/// The span of a request's access line: method, path, request id, and the names of the
/// query's parameters without their values, which can hold ids, filters or (sent by
/// mistake) a credential.
fn request_span(request: &Request) -> tracing::Span {
    // Measured: a span and an access line per WebSocket upgrade added about 1 KiB to each
    // idle connection's memory (5,000 subscribers, docs/benchmarks.md); upgrades get none.
    if request.headers().contains_key(axum::http::header::UPGRADE) {
        return tracing::Span::none();
    }
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default();
    let query = request.uri().query().map(|query| {
        query
            .split('&')
            .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
            .collect::<Vec<_>>()
            .join(",")
    });
    tracing::info_span!(
        "http",
        method = %request.method(),
        path = request.uri().path(),
        query = query.unwrap_or_default(),
        request_id,
    )
}

/// CORS for the allow-listed origins; none (same-origin only) without a list.
fn cors(ctx: &App) -> Option<CorsLayer> {
    if ctx.auth.allowed_origins().is_empty() {
        return None;
    }
    let auth = ctx.auth.clone();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin, _| {
                auth.origin_allowed(origin.to_str().ok())
            }))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static(API_KEY_HEADER),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The scope a request needs, or None for the public paths: the probes, the metrics, the
/// SDK and console files, the OpenAPI document (it describes the API, which the repository
/// publishes anyway, and holds nothing of the hub's data), and `/v1/ws` (which checks
/// credentials at `connect`). Anything
/// else, including unknown paths, needs a key, so a new endpoint is closed by default:
/// reads need `subscribe`, `POST`s `publish`, other methods (deletes) `admin`.
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    let public = matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/v1/ws" | "/v1/openapi.json"
    ) || ["/sdk", "/console"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    if public {
        return None;
    }
    // The lookup by channel user id (`/v1/visitors/by-channel/{channel}/{id}`) is a visitor
    // read like the others. Its last segment is the channel's id for the user, which may
    // read `export` or `anonymize`: the suffix rules below are not for it.
    let by_channel = path
        .strip_prefix("/v1/visitors/by-channel/")
        .is_some_and(|rest| rest.split('/').count() == 2);
    // The visitor changes PROTOCOL.md section 6 reserves for `admin` (exports, merges,
    // anonymization, deletes), and attribute updates, which it gives to `publish`.
    // A sink forwards events anywhere: every sink endpoint, reads included, is `admin`'s.
    let sinks = path == "/v1/sinks" || path.starts_with("/v1/sinks/");
    // Segments are read with `subscribe`; creating, changing and deleting one is `admin`'s.
    let segments = path == "/v1/segments" || path.starts_with("/v1/segments/");
    let visitor_admin = path == "/v1/visitors/merge"
        || (path.starts_with("/v1/visitors/")
            && !by_channel
            && (path.ends_with("/export") || path.ends_with("/anonymize")));
    Some(match *method {
        _ if sinks => Scope::Admin,
        Method::GET | Method::HEAD if by_channel => Scope::Subscribe,
        _ if visitor_admin => Scope::Admin,
        Method::GET | Method::HEAD if segments => Scope::Subscribe,
        _ if segments => Scope::Admin,
        Method::PUT if path.starts_with("/v1/visitors/") => Scope::Publish,
        Method::GET | Method::HEAD => Scope::Subscribe,
        Method::POST => Scope::Publish,
        _ => Scope::Admin,
    })
}

/// The credential check of every HTTP request (see [`required_scope`]).
async fn authorize(State(ctx): State<App>, request: Request, next: Next) -> Response {
    let Some(scope) = required_scope(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let principal = match headers.get(API_KEY_HEADER) {
        Some(key) => ctx.auth.api_key(key.to_str().unwrap_or_default()),
        None if ctx.auth.is_open() => Ok(Principal::Open),
        None if headers.contains_key(header::AUTHORIZATION) => Err(AuthError::BadToken(
            "the HTTP API takes an API key in X-API-Key; browser tokens are for /v1/ws",
        )),
        None => Err(AuthError::Missing),
    };
    let allowed = principal
        .map_err(|e| {
            ctx.hub.metrics().auth_refused.inc();
            HubError::from(e)
        })
        .and_then(|p| p.require(scope));
    match allowed {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

pub(crate) fn body_error(hub: &Hub, rejection: BytesRejection) -> HubError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        hub.metrics().limit_hit(Limit::BodySize);
        HubError::new(ErrorCode::TooLarge, "request body is larger than the limit")
    } else {
        HubError::bad_request(format!("cannot read the request body: {rejection}"))
    }
}

/// Reads a JSON body, refusing one nested deeper than the limit before parsing it.
pub(crate) fn json_body(hub: &Hub, body: Result<Bytes, BytesRejection>) -> Result<Value, HubError> {
    parse_body(&checked_body(hub, body)?)
}

/// The body's bytes, refused when it could not be read or nests deeper than the limit.
fn checked_body(hub: &Hub, body: Result<Bytes, BytesRejection>) -> Result<Bytes, HubError> {
    let body = body.map_err(|r| body_error(hub, r))?;
    let max = hub.config().max_json_depth;
    if too_deep(&body, max) {
        hub.metrics().limit_hit(Limit::JsonDepth);
        return Err(HubError::bad_request(format!(
            "the body nests arrays and objects deeper than {max}"
        )));
    }
    Ok(body)
}

fn parse_body<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, HubError> {
    serde_json::from_slice(body)
        .map_err(|e| HubError::bad_request(format!("body is not JSON: {e}")))
}

/// `POST /v1/events`'s answer: one result per event, in order.
#[derive(Serialize, ToSchema)]
pub(crate) struct PublishReply {
    results: Vec<PublishResult>,
}

/// An event's result: its seq (and whether it was a duplicate of one already taken), or
/// why it was refused.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum PublishResult {
    Accepted {
        seq: Seq,
        duplicate: bool,
    },
    Refused {
        #[schema(value_type = ErrorDetail)]
        error: Value,
    },
}

/// Publishes an event or a batch of them (scope `publish`).
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body(
        content = Object,
        description = "An event, or an array of at most 1000 (docs/protocol.md, Publishing)"
    ),
    responses((status = 200, body = PublishReply), WriteRefusals),
    security(("api_key" = []))
)]
async fn post_events(
    State(ctx): State<App>,
    _: NoQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishReply>, HubError> {
    let body = checked_body(&ctx.hub, body)?;
    // Each event is kept as its text, so that a valid lifecycle event is validated without
    // a JSON tree (`Event::from_text`).
    let whole: &RawValue = parse_body(&body)?;
    let items: Vec<&RawValue> = match whole.get().trim_start().as_bytes().first() {
        Some(b'[') => parse_body(whole.get().as_bytes())?,
        Some(b'{') => vec![whole],
        _ => {
            return Err(HubError::bad_request(
                "body must be an event or an array of events",
            ))
        }
    };
    let limit = ctx.hub.config().max_batch_events;
    if items.len() > limit {
        ctx.hub.metrics().limit_hit(Limit::BatchSize);
        return Err(HubError::new(
            ErrorCode::TooLarge,
            format!(
                "a batch holds at most {limit} events, this one {}",
                items.len()
            ),
        ));
    }
    let client = client_info::from_headers(ctx.hub.config(), &headers);
    let events = items
        .into_iter()
        .map(|item| {
            let mut event = Event::from_text(item.get())?;
            client_info::stamp(&mut event, &client)?;
            Ok(event)
        })
        .collect();
    let results = ctx
        .hub
        .publish(events)
        .await
        .into_iter()
        .map(|result| match result {
            Ok(ack) => PublishResult::Accepted {
                seq: ack.seq,
                duplicate: ack.duplicate,
            },
            Err(error) => PublishResult::Refused {
                error: error.to_json(),
            },
        })
        .collect();
    Ok(Json(PublishReply { results }))
}

/// `POST /v1/tokens`'s body.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the fields `post_tokens` reads one by one.
#[schema(rename_all = "camelCase")]
pub(crate) struct TokenRequest {
    customer_id: CustomerId,
    session_id: Option<SessionId>,
    /// The site's user id the page's visitor signed in as; 1 to 256 characters.
    user_id: Option<String>,
    /// 1 to 86400; 3600 when left out.
    #[schema(minimum = 1, maximum = 86400)]
    ttl_seconds: Option<u64>,
}

/// `POST /v1/tokens`'s answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenReply {
    token: String,
    #[schema(format = DateTime)]
    expires_at: String,
}

/// `POST /v1/tokens`: mints a browser token for a customer (and session, and the site's
/// user id the page may link the customer to).
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    request_body = TokenRequest,
    responses((status = 200, body = TokenReply), WriteRefusals),
    security(("api_key" = []))
)]
async fn post_tokens(
    State(ctx): State<App>,
    _: NoQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenReply>, HubError> {
    const FIELDS: &str = "customerId, sessionId, userId, ttlSeconds";
    let Value::Object(mut fields) = json_body(&ctx.hub, body)? else {
        return Err(HubError::bad_request(format!(
            "body must be an object of {FIELDS}"
        )));
    };
    let mut text_field = |name: &str| match fields.remove(name) {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_str().map(str::to_owned).unwrap_or_default()),
    };
    let customer = text_field("customerId")
        .ok_or_else(|| HubError::bad_request("`customerId` is required"))?;
    let customer = parse_body_id(&customer, "customerId", CustomerId::parse)?;
    let session = text_field("sessionId")
        .map(|s| parse_body_id(&s, "sessionId", SessionId::parse))
        .transpose()?;
    let user = text_field("userId")
        .map(|u| match is_user_id(&u) {
            true => Ok(UserId::from(u)),
            false => Err(HubError::bad_request(format!(
                "`userId` must be a string of 1 to {MAX_USER_ID_CHARS} characters"
            ))),
        })
        .transpose()?;
    let ttl = match fields.remove("ttlSeconds") {
        None | Some(Value::Null) => DEFAULT_TOKEN_TTL_SECS,
        Some(value) => value
            .as_u64()
            .filter(|t| (1..=MAX_TOKEN_TTL_SECS).contains(t))
            .ok_or_else(|| {
                HubError::bad_request(format!(
                    "`ttlSeconds` must be an integer from 1 to {MAX_TOKEN_TTL_SECS}"
                ))
            })?,
    };
    if let Some(unknown) = fields.keys().next() {
        return Err(HubError::bad_request(format!(
            "unknown field {unknown:?}; the body takes {FIELDS}"
        )));
    }
    let (token, expires_at) = ctx
        .auth
        .mint(customer, session, user.as_ref(), ttl)
        .map_err(|e| HubError::new(ErrorCode::Unavailable, e.to_string()))?;
    Ok(Json(TokenReply {
        token,
        expires_at: rfc3339(expires_at),
    }))
}

fn parse_body_id<T>(
    text: &str,
    what: &str,
    parse: impl Fn(&str) -> Result<T, crate::ids::BadId>,
) -> Result<T, HubError> {
    parse(text).map_err(|_| HubError::bad_request(format!("`{what}` must be a UUIDv4 string")))
}

fn parse_path_id<T>(
    text: &str,
    what: &str,
    parse: impl Fn(&str) -> Result<T, crate::ids::BadId>,
) -> Result<T, HubError> {
    parse(text).map_err(|_| HubError::bad_request(format!("{what} must be a UUIDv4, got {text:?}")))
}

/// The view of `{what} {id}`, or 404 naming it.
pub(crate) fn found(
    view: Option<Value>,
    what: &str,
    id: impl std::fmt::Display,
) -> Result<Json<Value>, HubError> {
    view.map(Json)
        .ok_or_else(|| HubError::not_found(format!("no {what} {id}")))
}

/// An action with every state it entered (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/actions/{action_id}",
    tag = "state",
    params(("action_id" = ActionId, Path, description = "The action's id, a UUIDv4")),
    responses((status = 200, body = views::ActionView), ReadRefusals),
    security(("api_key" = []))
)]
async fn get_action(
    State(ctx): State<App>,
    _: NoQuery,
    Path(id): Path<String>,
) -> Result<Json<Value>, HubError> {
    let id = parse_path_id(&id, "actionId", ActionId::parse)?;
    found(views::action(ctx.hub.state(), id), "action", id)
}

/// A customer, its sessions and its live actions (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}",
    tag = "state",
    params(("customer_id" = CustomerId, Path, description = "The customer's id, a UUIDv4")),
    responses((status = 200, body = views::CustomerView), ReadRefusals),
    security(("api_key" = []))
)]
async fn get_customer(
    State(ctx): State<App>,
    _: NoQuery,
    Path(id): Path<String>,
) -> Result<Json<Value>, HubError> {
    let id = parse_path_id(&id, "customerId", CustomerId::parse)?;
    found(views::customer(ctx.hub.state(), id), "customer", id)
}

/// Query parameters of the list endpoints, checked by name.
pub(crate) struct ListQuery {
    pub(crate) since: Seq,
    pub(crate) limit: usize,
    pub(crate) topics: TopicSet,
    pub(crate) filter: Filter,
}

/// An endpoint's query parameters, refused (400, naming it) when one is not `allowed`: a
/// misspelt or misplaced parameter is a mistake the caller should hear about, not a
/// filter silently not applied.
pub(crate) fn query_params(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, HubError> {
    let Query(params) =
        query.map_err(|e| HubError::bad_request(format!("bad query string: {e}")))?;
    if let Some(unknown) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
        let takes = match allowed {
            [] => "no query parameters".to_owned(),
            _ => allowed.join(", "),
        };
        return Err(HubError::bad_request(format!(
            "unknown query parameter {unknown:?}; this endpoint takes {takes}"
        )));
    }
    Ok(params)
}

/// The extractor of an endpoint that takes no query parameters: any is refused, as
/// [`query_params`] refuses an unknown one.
pub(crate) struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = HubError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HubError> {
        let query = Query::<HashMap<String, String>>::from_request_parts(parts, state).await;
        query_params(query, &[]).map(|_| NoQuery)
    }
}

pub(crate) fn list_query(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<ListQuery, HubError> {
    let params = query_params(query, allowed)?;
    let number = |name: &str| -> Result<Option<u64>, HubError> {
        params
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    HubError::bad_request(format!("`{name}` must be a non-negative integer"))
                })
            })
            .transpose()
    };
    let since = Seq(number("since")?.unwrap_or(0));
    let limit = match number("limit")? {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
        Some(_) => {
            return Err(HubError::bad_request(format!(
                "`limit` must be 1 to {MAX_LIMIT}"
            )))
        }
    };
    let topics = match params.get("topics") {
        None => TopicSet::parse_pattern("all").expect("`all` is a pattern"),
        Some(list) => TopicSet::parse_patterns(list.split(',').map(str::trim))
            .map_err(HubError::bad_request)?,
    };
    let filter = match params.get("where") {
        None => Filter::default(),
        Some(text) => {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| HubError::bad_request(format!("`where` is not JSON: {e}")))?;
            Filter::parse(&value).map_err(HubError::bad_request)?
        }
    };
    Ok(ListQuery {
        since,
        limit,
        topics,
        filter,
    })
}

/// `{"events": [frames...], "next": seq, "epoch": ".."}`, splicing the stored frames in.
pub(crate) fn events_page(records: &[Arc<Record>], next: Seq, epoch: &str) -> Response {
    let mut body =
        String::with_capacity(64 + records.iter().map(|r| r.frame.len() + 1).sum::<usize>());
    body.push_str("{\"events\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(record.frame.as_str());
    }
    let _ = write!(body, "],\"next\":{next},\"epoch\":{}}}", Value::from(epoch));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A page of the retained history that `topics` and `where` select (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(
        ("since" = Option<u64>, Query, description = "Events after this seq; 0 by default"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000,
            description = "At most this many events; 100 by default"),
        ("topics" = Option<String>, Query,
            description = "Topic patterns, comma separated; `all` by default"),
        ("where" = Option<String>, Query, description = "A filter, as JSON text"),
    ),
    responses((status = 200, body = EventsPage), ReadRefusals),
    security(("api_key" = []))
)]
async fn get_events(
    State(ctx): State<App>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, HubError> {
    let q = list_query(query, &["since", "limit", "topics", "where"])?;
    let hub = ctx.hub.clone();
    let (records, next) = blocking(move || scan_events(&hub, &q)).await?;
    Ok(events_page(&records, next, ctx.hub.epoch()))
}

/// The retained events after `q.since` that `q` selects, at most `q.limit`, examining at
/// most [`SCAN_BUDGET`] records, and the last seq examined.
fn scan_events(hub: &Hub, q: &ListQuery) -> (Vec<Arc<Record>>, Seq) {
    let upto = hub.with_history(|h| h.last_seq());
    let (mut out, mut after, mut budget) = (Vec::new(), q.since, SCAN_BUDGET);
    while budget > 0 {
        let take = budget.min(SCAN_CHUNK);
        budget -= take;
        let (chunk, last) = hub.with_history(|h| h.scan(after, upto, take, usize::MAX, |_| true));
        for record in chunk {
            if selects(q.topics, &q.filter, &record, hub.state()) {
                out.push(record.clone());
                if out.len() == q.limit {
                    return (out, record.seq);
                }
            }
        }
        if last == after || last >= upto {
            return (out, last);
        }
        after = last;
    }
    (out, after)
}

/// A page of one customer's retained events (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/events",
    tag = "events",
    params(
        ("customer_id" = CustomerId, Path, description = "The customer's id, a UUIDv4"),
        ("since" = Option<u64>, Query, description = "Events after this seq; 0 by default"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000,
            description = "At most this many events; 100 by default"),
    ),
    responses((status = 200, body = EventsPage), ReadRefusals),
    security(("api_key" = []))
)]
async fn get_customer_events(
    State(ctx): State<App>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, HubError> {
    let id = parse_path_id(&id, "customerId", CustomerId::parse)?;
    let q = list_query(query, &["since", "limit"])?;
    let hub = &ctx.hub;
    let records = hub.with_history(|h| h.customer_events(id, q.since, q.limit));
    if records.is_empty() && hub.state().identity_of(id).is_none() {
        return Err(HubError::not_found(format!("no customer {id}")));
    }
    let next = records.last().map_or(q.since, |r| r.seq);
    Ok(events_page(&records, next, hub.epoch()))
}

/// How many actions of each action map reached each state (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/stats/action-maps",
    tag = "state",
    responses((status = 200, body = views::ActionMapsView), ReadRefusals),
    security(("api_key" = []))
)]
async fn get_action_map_stats(State(ctx): State<App>, _: NoQuery) -> Json<Value> {
    Json(views::action_maps(ctx.hub.state()))
}

/// `/healthz`'s answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(pattern = "^ok$")]
    status: &'static str,
}

/// The process is up (no credentials needed).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, body = Health)),
    security(())
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `/readyz`'s answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Ready {
    #[schema(pattern = "^ready$")]
    status: &'static str,
    epoch: String,
    /// The latest seq.
    seq: Seq,
    /// False while the disk is full: the hub serves reads but refuses changes.
    writable: bool,
    /// A cluster node's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    /// Stream messages a cluster node has not applied yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    lag: Option<u64>,
}

/// The hub serves (no credentials needed); 503 while it shuts down, or while a cluster
/// node catches up with the shared stream.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, body = Ready),
        (status = 503, body = ErrorBody, description = "Not ready")
    ),
    security(())
)]
async fn readyz(State(ctx): State<App>) -> Response {
    if ctx.shutdown.is_cancelled() {
        HubError::new(ErrorCode::Unavailable, "the hub is shutting down").into_response()
    } else {
        // Still ready while the disk is full: reads and subscriptions are served, and a
        // probe that took the hub out of service would cut those off too.
        let mut ready = Ready {
            status: "ready",
            epoch: ctx.hub.epoch().to_owned(),
            seq: ctx.hub.latest_seq(),
            writable: !ctx.hub.log_status().is_full(),
            node: None,
            lag: None,
        };
        if let (Some(node), Some(order)) = (ctx.hub.node(), ctx.hub.order_status()) {
            let lag = order.lag.load(Ordering::Acquire);
            if !order.caught_up.load(Ordering::Acquire) {
                let applied = order.applied.load(Ordering::Acquire);
                return HubError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "node {node} is catching up with the shared stream: applied up to \
                         stream message {applied}, {lag} to go"
                    ),
                )
                .into_response();
            }
            ready.node = Some(node.to_string());
            ready.lag = Some(lag);
        }
        Json(ready).into_response()
    }
}

/// Prometheus metrics in the OpenMetrics text format (no credentials needed).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((
        status = 200,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
        body = String
    )),
    security(())
)]
async fn metrics(State(ctx): State<App>) -> Response {
    ctx.hub.refresh_gauges();
    ctx.sinks.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.hub.metrics().encode(),
    )
        .into_response()
}

/// The document, set on the router as an extension when it is built.
#[derive(Clone)]
struct OpenApiJson(Arc<str>);

/// This document (no credentials needed).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    responses((status = 200, content_type = "application/json", body = Object)),
    security(())
)]
async fn openapi_json(Extension(OpenApiJson(document)): Extension<OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md section 6: which scope each endpoint needs.
    #[test]
    fn every_endpoint_needs_the_scope_the_protocol_names() {
        use Scope::{Admin, Publish, Subscribe};
        let v = "/v1/visitors/9f1c2a4e-3b7d-4c1e-8a2b-0123456789ab";
        let cases: Vec<(Method, String, Option<Scope>)> = vec![
            (Method::GET, "/healthz".into(), None),
            (Method::GET, "/metrics".into(), None),
            (Method::GET, "/v1/ws".into(), None),
            (Method::GET, "/v1/openapi.json".into(), None),
            (Method::GET, "/sdk/actionhub.js".into(), None),
            (Method::GET, "/console/".into(), None),
            (Method::POST, "/v1/events".into(), Some(Publish)),
            (Method::POST, "/v1/tokens".into(), Some(Publish)),
            (Method::GET, "/v1/events".into(), Some(Subscribe)),
            (Method::GET, "/v1/stats/action-maps".into(), Some(Subscribe)),
            (Method::GET, "/v1/visitors".into(), Some(Subscribe)),
            (Method::GET, v.into(), Some(Subscribe)),
            (Method::GET, format!("{v}/sessions"), Some(Subscribe)),
            (Method::PUT, v.into(), Some(Publish)),
            (Method::GET, format!("{v}/export"), Some(Admin)),
            (Method::POST, format!("{v}/anonymize"), Some(Admin)),
            (Method::POST, "/v1/visitors/merge".into(), Some(Admin)),
            (Method::DELETE, v.into(), Some(Admin)),
            (
                Method::GET,
                "/v1/visitors/by-channel/whatsapp/10435685475".into(),
                Some(Subscribe),
            ),
            (
                Method::GET,
                "/v1/visitors/by-channel/telegram/export".into(),
                Some(Subscribe),
            ),
            (
                Method::GET,
                "/v1/visitors/by-channel/viber/anonymize".into(),
                Some(Subscribe),
            ),
            // Not the lookup: the export of a visitor whose id is `by-channel`.
            (
                Method::GET,
                "/v1/visitors/by-channel/export".into(),
                Some(Admin),
            ),
            (Method::POST, "/v1/sinks".into(), Some(Admin)),
            (Method::GET, "/v1/sinks".into(), Some(Admin)),
            (Method::GET, "/v1/sinks/a1".into(), Some(Admin)),
            (Method::DELETE, "/v1/sinks/a1".into(), Some(Admin)),
            (Method::POST, "/v1/sinks/a1/resume".into(), Some(Admin)),
            (Method::GET, "/v1/sinksx".into(), Some(Subscribe)),
            (Method::GET, "/v1/unknown".into(), Some(Subscribe)),
        ];
        for (method, path, expected) in cases {
            assert_eq!(required_scope(&method, &path), expected, "{method} {path}");
        }
    }
}
