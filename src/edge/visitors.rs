//! The visitor API: who a visitor is across browsers and sessions.
//!
//! A visitor is a profile (customers known to be one person, linked through a userId or
//! merged) or a customer no profile holds yet. `{id}` in these paths is any of the
//! visitor's customerIds or `user:<userId>`. This module parses requests and shapes
//! answers; the reads come from [`crate::hub::state`], shaped by [`crate::edge::views`];
//! merges go through the sequencer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;

use crate::hub::AdminChange;
use crate::ingest::event::MAX_OBJECT_BYTES;
use axum::Json;
use serde_json::{json, Value};

use crate::edge::app::App;
use crate::edge::http::{
    blocking, events_page, found, json_body, list_query, query_params, NoQuery,
};
use crate::edge::openapi::{
    MergeReply, ReadRefusals, VisitorDeleted, VisitorExport, VisitorPage, VisitorSessions,
    WriteRefusals,
};
use crate::edge::views;
use crate::edge::views::VisitorView;
use crate::error::HubError;
use crate::hub::retention::Record;
use crate::hub::Hub;
use crate::ids::VisitorId;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

/// The visitor routes.
pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(merge))
        .routes(routes!(by_channel))
        .routes(routes!(view, update, delete))
        .routes(routes!(anonymize))
        .routes(routes!(sessions))
        .routes(routes!(events))
        .routes(routes!(export))
}

/// Resolves a visitor `{id}`: 400 when malformed, 404 when unknown.
fn resolve(ctx: &App, id: &str) -> Result<VisitorId, HubError> {
    ctx.hub
        .state()
        .resolve_visitor(id)
        .map_err(|_| {
            HubError::bad_request(format!(
                "a visitor id is a customerId (UUIDv4) or user:<userId>, got {id:?}"
            ))
        })?
        .ok_or_else(|| HubError::not_found(format!("no visitor {id}")))
}

/// A page of the visitors, newest first, maybe searched (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/visitors",
    tag = "visitors",
    params(
        ("search" = Option<String>, Query,
            description = "Words a visitor's ids, user ids, name or email contain"),
        ("identified" = Option<bool>, Query, description = "Only (un)identified visitors"),
        ("companyId" = Option<String>, Query, description = "Only the company's visitors"),
        ("page" = Option<u64>, Query, minimum = 1, description = "1 by default"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000,
            description = "50 by default"),
    ),
    responses((status = 200, body = VisitorPage), ReadRefusals),
    security(("api_key" = []))
)]
async fn list(
    State(ctx): State<App>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, HubError> {
    let params = query_params(
        query,
        &["search", "identified", "companyId", "page", "limit"],
    )?;
    let identified = match params.get("identified").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(HubError::bad_request(format!(
                "`identified` is true or false, got {other:?}"
            )))
        }
    };
    let (page, limit) = paging(&params)?;
    let hub = ctx.hub.clone();
    let search = params.get("search").cloned();
    let company = params.get("companyId").cloned();
    // The list visits every customer: off the async workers.
    blocking(move || {
        let state = hub.state();
        let all = state.visitors(search.as_deref(), identified, company.as_deref());
        visitor_page(state, &all, page, limit)
    })
    .await
}

/// One page of a visitor list, `{"visitors", "total", "page", "limit"}`, the shape of
/// every visitor list (all visitors, a segment's members).
pub(crate) fn visitor_page(
    state: &crate::hub::state::HubState,
    all: &[VisitorId],
    page: usize,
    limit: usize,
) -> Json<Value> {
    let visitors: Vec<Value> = all
        .iter()
        .skip((page - 1).saturating_mul(limit))
        .take(limit)
        .filter_map(|v| views::visitor(state, *v))
        .collect();
    Json(json!({
        "visitors": visitors,
        "total": all.len(),
        "page": page,
        "limit": limit,
    }))
}

/// A list's `page` (from 1) and `limit` (1 to 1000, default 50), the same for every list
/// of the visitor and company APIs.
pub(crate) fn paging(params: &HashMap<String, String>) -> Result<(usize, usize), HubError> {
    let number = |name: &str, default: usize, max: usize| -> Result<usize, HubError> {
        match params.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| HubError::bad_request(format!("`{name}` must be 1 to {max}"))),
        }
    };
    Ok((
        number("page", 1, usize::MAX)?,
        number("limit", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
    ))
}

/// A visitor (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/visitors/{id}",
    tag = "visitors",
    params(("id" = String, Path, description = "Any customerId of the visitor, or user:<userId>")),
    responses((status = 200, body = VisitorView), ReadRefusals),
    security(("api_key" = []))
)]
async fn view(
    State(ctx): State<App>,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<Json<Value>, HubError> {
    let visitor = resolve(&ctx, &id)?;
    found(views::visitor(ctx.hub.state(), visitor), "visitor", id)
}

/// Everything the hub holds about a visitor (scope `admin`).
#[utoipa::path(
    get,
    path = "/v1/visitors/{id}/export",
    tag = "visitors",
    params(("id" = String, Path, description = "Any customerId of the visitor, or user:<userId>")),
    responses((status = 200, body = VisitorExport), ReadRefusals),
    security(("api_key" = []))
)]
async fn export(
    State(ctx): State<App>,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<Json<Value>, HubError> {
    let visitor = resolve(&ctx, &id)?;
    let hub = ctx.hub.clone();
    // Every action and retained event of the visitor, parsed back: off the async workers.
    blocking(move || {
        let mut export = views::visitor_export(hub.state(), visitor)
            .ok_or_else(|| HubError::not_found(format!("no visitor {id}")))?;
        let events: Vec<Value> = visitor_events(&hub, visitor, crate::ids::Seq(0), usize::MAX)
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(r.frame.as_str()).ok())
            .map(|frame| frame["event"].clone())
            .collect();
        export["events"] = events.into();
        export["exportedAt"] = crate::clock::format_millis(crate::clock::now_millis()).into();
        Ok(Json(export))
    })
    .await?
}

/// Every session of a visitor, newest first (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/visitors/{id}/sessions",
    tag = "visitors",
    params(("id" = String, Path, description = "Any customerId of the visitor, or user:<userId>")),
    responses((status = 200, body = VisitorSessions), ReadRefusals),
    security(("api_key" = []))
)]
async fn sessions(
    State(ctx): State<App>,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<Json<Value>, HubError> {
    let visitor = resolve(&ctx, &id)?;
    let sessions = views::visitor_sessions(ctx.hub.state(), visitor);
    Ok(Json(json!({ "visitorId": visitor, "sessions": sessions })))
}

/// The retained events of every customer of a visitor after `since`, in seq order.
fn visitor_events(
    hub: &Hub,
    visitor: VisitorId,
    since: crate::ids::Seq,
    limit: usize,
) -> Vec<Arc<Record>> {
    let customers = hub.state().visitor_customers(visitor);
    let mut records: Vec<Arc<Record>> = hub.with_history(|history| {
        customers
            .iter()
            .flat_map(|c| history.customer_events(*c, since, limit))
            .collect()
    });
    records.sort_by_key(|r| r.seq);
    records.dedup_by_key(|r| r.seq);
    records.truncate(limit);
    records
}

/// A page of the retained events of a visitor's customers (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/visitors/{id}/events",
    tag = "visitors",
    params(
        ("id" = String, Path, description = "Any customerId of the visitor, or user:<userId>"),
        ("since" = Option<u64>, Query, description = "Events after this seq; 0 by default"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000,
            description = "At most this many events; 100 by default"),
    ),
    responses((status = 200, body = crate::edge::openapi::EventsPage), ReadRefusals),
    security(("api_key" = []))
)]
async fn events(
    State(ctx): State<App>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, HubError> {
    let visitor = resolve(&ctx, &id)?;
    let q = list_query(query, &["since", "limit"])?;
    let records = visitor_events(&ctx.hub, visitor, q.since, q.limit);
    let next = records.last().map_or(q.since, |r| r.seq);
    Ok(events_page(&records, next, ctx.hub.epoch()))
}

/// The visitor a channel knows by its own user id (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/visitors/by-channel/{channel}/{channel_user_id}",
    tag = "visitors",
    params(
        ("channel" = String, Path, description = "A channel's name, `whatsapp` for example"),
        ("channel_user_id" = String, Path, description = "The channel's id for the user"),
    ),
    responses((status = 200, body = VisitorView), ReadRefusals),
    security(("api_key" = []))
)]
async fn by_channel(
    State(ctx): State<App>,
    Path((channel, user)): Path<(String, String)>,
    _: NoQuery,
) -> Result<Json<Value>, HubError> {
    let state = ctx.hub.state();
    state
        .visitor_by_channel(&channel, &user)
        .and_then(|v| views::visitor(state, v))
        .map(Json)
        .ok_or_else(|| HubError::not_found(format!("no visitor with {channel} id {user:?}")))
}

/// `POST /v1/visitors/merge`'s body.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the fields `merge` reads one by one.
#[schema(rename_all = "camelCase")]
struct MergeRequest {
    /// A visitor id (a customerId or user:<userId>), merged into the target.
    source_visitor_id: String,
    target_visitor_id: String,
}

/// Merges one visitor into another, through the sequencer (scope `admin`).
#[utoipa::path(
    post,
    path = "/v1/visitors/merge",
    tag = "visitors",
    request_body = MergeRequest,
    responses((status = 200, body = MergeReply), WriteRefusals),
    security(("api_key" = []))
)]
async fn merge(
    State(ctx): State<App>,
    _: NoQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HubError> {
    let value = json_body(&ctx.hub, body)?;
    let Value::Object(mut fields) = value else {
        return Err(HubError::bad_request(
            "body must be {\"sourceVisitorId\", \"targetVisitorId\"}",
        ));
    };
    let mut take = |name: &str| match fields.remove(name) {
        Some(Value::String(id)) => Ok(id),
        _ => Err(HubError::bad_request(format!(
            "`{name}` is required, a visitor id"
        ))),
    };
    let (source, target) = (take("sourceVisitorId")?, take("targetVisitorId")?);
    if let Some(unknown) = fields.keys().next() {
        return Err(HubError::bad_request(format!("unknown field `{unknown}`")));
    }
    let (source, target) = (resolve(&ctx, &source)?, resolve(&ctx, &target)?);
    let ack = ctx.hub.merge_visitors(source, target).await?;
    let visitor = views::visitor(ctx.hub.state(), target).unwrap_or(Value::Null);
    Ok(Json(json!({ "seq": ack.seq, "visitor": visitor })))
}

/// `PUT /v1/visitors/{id}`'s body: either field, or both.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the fields `update` reads.
struct UpdateRequest {
    /// Traits to merge into the visitor's; at most 4 KiB as JSON.
    #[schema(value_type = Option<Object>)]
    attributes: (),
    /// The company the visitor belongs to (`id`, `name`, attributes); at most 4 KiB.
    #[schema(value_type = Option<Object>)]
    company: (),
}

/// `PUT /v1/visitors/{id}` with `{"attributes": {...}, "company": {...}}` (either or
/// both): merges the attributes into the traits and makes the visitor the company's.
#[utoipa::path(
    put,
    path = "/v1/visitors/{id}",
    tag = "visitors",
    params(("id" = String, Path, description = "Any customerId of the visitor, or user:<userId>")),
    request_body = UpdateRequest,
    responses((status = 200, body = VisitorView), WriteRefusals),
    security(("api_key" = []))
)]
async fn update(
    State(ctx): State<App>,
    Path(id): Path<String>,
    _: NoQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HubError> {
    let visitor = resolve(&ctx, &id)?;
    let value = json_body(&ctx.hub, body)?;
    let Value::Object(mut fields) = value else {
        return Err(HubError::bad_request(
            "body must be {\"attributes\": {...}, \"company\": {...}}",
        ));
    };
    let mut object = |name: &str| match fields.remove(name) {
        None => Ok(None),
        Some(Value::Object(object)) => {
            let size = serde_json::to_vec(&object).map_or(usize::MAX, |v| v.len());
            match size > MAX_OBJECT_BYTES {
                true => Err(HubError::bad_request(format!(
                    "`{name}` is {size} bytes as JSON; the limit is {MAX_OBJECT_BYTES}"
                ))),
                false => Ok(Some(object)),
            }
        }
        Some(_) => Err(HubError::bad_request(format!("`{name}` must be an object"))),
    };
    let (attributes, company) = (object("attributes")?, object("company")?);
    if let Some(unknown) = fields.keys().next() {
        return Err(HubError::bad_request(format!("unknown field `{unknown}`")));
    }
    if attributes.is_none() && company.is_none() {
        return Err(HubError::bad_request(
            "`attributes` or `company` is required, an object",
        ));
    }
    let change = AdminChange::UpdateTraits {
        traits: attributes.unwrap_or_default(),
        company,
    };
    ctx.hub.administer(visitor, change).await?;
    fresh_view(&ctx, visitor)
}

/// `POST /v1/visitors/{id}/anonymize`: traits, channels and user ids go; history stays.
#[utoipa::path(
    post,
    path = "/v1/visitors/{id}/anonymize",
    tag = "visitors",
    params(("id" = String, Path, description = "Any customerId of the visitor, or user:<userId>")),
    responses((status = 200, body = VisitorView), WriteRefusals),
    security(("api_key" = []))
)]
async fn anonymize(
    State(ctx): State<App>,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<Json<Value>, HubError> {
    let visitor = resolve(&ctx, &id)?;
    ctx.hub.administer(visitor, AdminChange::Anonymize).await?;
    fresh_view(&ctx, visitor)
}

/// `DELETE /v1/visitors/{id}`: everything about the visitor goes, for good.
#[utoipa::path(
    delete,
    path = "/v1/visitors/{id}",
    tag = "visitors",
    params(("id" = String, Path, description = "Any customerId of the visitor, or user:<userId>")),
    responses((status = 200, body = VisitorDeleted), WriteRefusals),
    security(("api_key" = []))
)]
async fn delete(
    State(ctx): State<App>,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<Json<Value>, HubError> {
    let visitor = resolve(&ctx, &id)?;
    let customers = ctx.hub.state().visitor_customers(visitor);
    ctx.hub.administer(visitor, AdminChange::Delete).await?;
    Ok(Json(json!({ "deleted": visitor, "customers": customers })))
}

fn fresh_view(ctx: &App, visitor: VisitorId) -> Result<Json<Value>, HubError> {
    views::visitor(ctx.hub.state(), visitor)
        .map(Json)
        .ok_or_else(|| HubError::not_found("the visitor is gone"))
}
