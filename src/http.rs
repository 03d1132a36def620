//! The HTTP API of PROTOCOL.md section 7, and the router that also mounts `/v1/ws`.
//!
//! Handlers parse and check their input, call the hub, and shape JSON. Every refusal is
//! `{"error": {"code", "message", "details"?}}` with the status that matches its code,
//! including the ones the framework would otherwise answer in its own words (unknown
//! paths, wrong methods, oversized or unreadable bodies, bad query strings).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State as AxumState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::{ErrorCode, HubError};
use crate::event::Event;
use crate::fanout::selects;
use crate::ids::{ActionId, CustomerId, Seq};
use crate::retention::Record;
use crate::topic::{Filter, TopicSet};
use crate::ws::{self, WsContext};

/// Default and largest page of a list.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Retained events one `GET /v1/events` examines at most; a sparse filter pages on with
/// `next` rather than holding the history lock for a long scan.
const SCAN_BUDGET: usize = 100_000;

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({ "error": self.to_json() }))).into_response()
    }
}

/// The hub's routes.
pub fn router(ctx: WsContext) -> Router {
    let body_limit = ctx.hub.config.max_body_bytes;
    Router::new()
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/events", post(post_events).get(get_events))
        .route("/v1/actions/{action_id}", get(get_action))
        .route("/v1/customers/{customer_id}", get(get_customer))
        .route(
            "/v1/customers/{customer_id}/events",
            get(get_customer_events),
        )
        .route("/v1/stats/action-maps", get(get_action_map_stats))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::assets::routes())
        .merge(crate::visitors::routes())
        .fallback(|| async { HubError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            let mut response =
                HubError::bad_request("method not allowed on this endpoint").into_response();
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(ctx)
}

pub(crate) fn body_error(rejection: BytesRejection) -> HubError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        HubError::new(ErrorCode::TooLarge, "request body is larger than the limit")
    } else {
        HubError::bad_request(format!("cannot read the request body: {rejection}"))
    }
}

async fn post_events(
    AxumState(ctx): AxumState<WsContext>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HubError> {
    let body = body.map_err(body_error)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| HubError::bad_request(format!("body is not JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => {
            return Err(HubError::bad_request(
                "body must be an event or an array of events",
            ))
        }
    };
    let limit = ctx.hub.config.max_batch_events;
    if items.len() > limit {
        return Err(HubError::new(
            ErrorCode::TooLarge,
            format!(
                "a batch holds at most {limit} events, this one {}",
                items.len()
            ),
        ));
    }
    let events = items.into_iter().map(Event::from_json).collect();
    let results: Vec<Value> = ctx
        .hub
        .publish(events)
        .await
        .into_iter()
        .map(|result| match result {
            Ok(ack) => json!({ "seq": ack.seq, "duplicate": ack.duplicate }),
            Err(error) => json!({ "error": error.to_json() }),
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

pub(crate) fn parse_path_id<T>(
    text: &str,
    what: &str,
    parse: impl Fn(&str) -> Result<T, crate::ids::BadId>,
) -> Result<T, HubError> {
    parse(text).map_err(|_| HubError::bad_request(format!("{what} must be a UUIDv4, got {text:?}")))
}

async fn get_action(
    AxumState(ctx): AxumState<WsContext>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HubError> {
    let id = parse_path_id(&id, "actionId", ActionId::parse)?;
    ctx.hub
        .state
        .action_view(id, true)
        .map(Json)
        .ok_or_else(|| HubError::not_found(format!("no action {id}")))
}

async fn get_customer(
    AxumState(ctx): AxumState<WsContext>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HubError> {
    let id = parse_path_id(&id, "customerId", CustomerId::parse)?;
    ctx.hub
        .state
        .customer_view(id)
        .map(Json)
        .ok_or_else(|| HubError::not_found(format!("no customer {id}")))
}

/// Query parameters of the list endpoints, checked by name.
pub(crate) struct ListQuery {
    pub(crate) since: Seq,
    pub(crate) limit: usize,
    pub(crate) topics: TopicSet,
    pub(crate) filter: Filter,
}

pub(crate) fn list_query(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<ListQuery, HubError> {
    let Query(params) =
        query.map_err(|e| HubError::bad_request(format!("bad query string: {e}")))?;
    if let Some(unknown) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(HubError::bad_request(format!(
            "unknown query parameter {unknown:?}; this endpoint takes {}",
            allowed.join(", ")
        )));
    }
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

async fn get_events(
    AxumState(ctx): AxumState<WsContext>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, HubError> {
    let q = list_query(query, &["since", "limit", "topics", "where"])?;
    let hub = &ctx.hub;
    let (records, next) = {
        let retention = hub.retention.read();
        let upto = retention.last_seq();
        retention.scan(q.since, upto, SCAN_BUDGET, q.limit, |r| {
            selects(q.topics, &q.filter, r, &hub.state)
        })
    };
    Ok(events_page(&records, next, &hub.epoch))
}

async fn get_customer_events(
    AxumState(ctx): AxumState<WsContext>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, HubError> {
    let id = parse_path_id(&id, "customerId", CustomerId::parse)?;
    let q = list_query(query, &["since", "limit"])?;
    let hub = &ctx.hub;
    let records = hub.retention.read().customer_events(id, q.since, q.limit);
    if records.is_empty() && hub.state.identity_of(id).is_none() {
        return Err(HubError::not_found(format!("no customer {id}")));
    }
    let next = records.last().map_or(q.since, |r| r.seq);
    Ok(events_page(&records, next, &hub.epoch))
}

async fn get_action_map_stats(AxumState(ctx): AxumState<WsContext>) -> Json<Value> {
    Json(ctx.hub.state.action_map_stats())
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(AxumState(ctx): AxumState<WsContext>) -> Response {
    if ctx.shutdown.is_cancelled() {
        HubError::new(ErrorCode::Unavailable, "the hub is shutting down").into_response()
    } else {
        Json(json!({ "status": "ready", "epoch": ctx.hub.epoch, "seq": ctx.hub.latest_seq() }))
            .into_response()
    }
}

async fn metrics(AxumState(ctx): AxumState<WsContext>) -> Response {
    ctx.hub.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.hub.metrics.encode(),
    )
        .into_response()
}
