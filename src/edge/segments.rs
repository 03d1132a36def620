//! The segment API: `/v1/segments` (list, create), `/v1/segments/{id}` (read, replace,
//! delete) and `/v1/segments/{id}/visitors` (its members, a page at a time, as the visitor
//! list shows them). Reads come from the state; a change goes through the sequencer
//! (`Hub::change_segment`), which logs it and publishes the memberships it moves. Scopes
//! are `http::required_scope`'s: `subscribe` reads, `admin` changes.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::format_millis;
use crate::edge::app::App;
use crate::edge::http::{blocking, json_body, query_params, NoQuery};
use crate::edge::openapi::{
    ReadRefusals, SegmentDefinition, SegmentDeleted, SegmentList, SegmentView, VisitorPage,
    WriteRefusals,
};
use crate::edge::visitors::{paging, visitor_page};
use crate::error::HubError;
use crate::hub::inputs::SegmentChange;
use crate::hub::segments::{Segment, SegmentSpec};
use crate::hub::state::HubState;
use crate::ids::SegmentId;

/// The segment routes.
pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, replace, remove))
        .routes(routes!(members))
}

/// A segment as the API shows it: its definition, id, member count and times.
fn view(segment: &Segment, visitor_count: usize) -> Value {
    let mut view = segment.spec.to_json();
    let object = view.as_object_mut().expect("a definition is an object");
    object.insert("id".into(), segment.id.to_string().into());
    object.insert("visitorCount".into(), visitor_count.into());
    object.insert("createdAt".into(), format_millis(segment.created_at).into());
    object.insert("updatedAt".into(), format_millis(segment.updated_at).into());
    view
}

fn parse_id(id: &str) -> Result<SegmentId, HubError> {
    SegmentId::parse(id)
        .map_err(|_| HubError::bad_request(format!("a segment id is seg_<n>, got {id:?}")))
}

fn current(state: &HubState, id: SegmentId) -> Result<Json<Value>, HubError> {
    state
        .segment(id)
        .map(|(segment, count)| Json(view(&segment, count)))
        .ok_or_else(|| HubError::not_found(format!("no segment {id}")))
}

/// Every segment (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/segments",
    tag = "segments",
    responses((status = 200, body = SegmentList), ReadRefusals),
    security(("api_key" = []))
)]
async fn list(State(ctx): State<App>, _: NoQuery) -> Json<Value> {
    let segments: Vec<Value> = ctx
        .hub
        .state()
        .segment_list()
        .iter()
        .map(|(segment, count)| view(segment, *count))
        .collect();
    Json(json!({ "segments": segments }))
}

/// Creates a segment, through the sequencer (scope `admin`).
#[utoipa::path(
    post,
    path = "/v1/segments",
    tag = "segments",
    request_body = SegmentDefinition,
    responses((status = 201, body = SegmentView), WriteRefusals),
    security(("api_key" = []))
)]
async fn create(
    State(ctx): State<App>,
    _: NoQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HubError> {
    let spec = SegmentSpec::parse(&json_body(&ctx.hub, body)?)?;
    let id = ctx
        .hub
        .change_segment(SegmentChange::Create(spec))
        .await?
        .expect("a created segment has an id");
    let created = current(ctx.hub.state(), id)?;
    Ok((StatusCode::CREATED, created).into_response())
}

/// A segment (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/segments/{id}",
    tag = "segments",
    params(("id" = String, Path, description = "The segment's id, `seg_<n>`")),
    responses((status = 200, body = SegmentView), ReadRefusals),
    security(("api_key" = []))
)]
async fn read(
    State(ctx): State<App>,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<Json<Value>, HubError> {
    current(ctx.hub.state(), parse_id(&id)?)
}

/// Replaces a segment's definition, through the sequencer (scope `admin`).
#[utoipa::path(
    put,
    path = "/v1/segments/{id}",
    tag = "segments",
    params(("id" = String, Path, description = "The segment's id, `seg_<n>`")),
    request_body = SegmentDefinition,
    responses((status = 200, body = SegmentView), WriteRefusals),
    security(("api_key" = []))
)]
async fn replace(
    State(ctx): State<App>,
    Path(id): Path<String>,
    _: NoQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HubError> {
    let id = parse_id(&id)?;
    let spec = SegmentSpec::parse(&json_body(&ctx.hub, body)?)?;
    ctx.hub
        .change_segment(SegmentChange::Update { id, spec })
        .await?;
    current(ctx.hub.state(), id)
}

/// Deletes a segment, through the sequencer (scope `admin`).
#[utoipa::path(
    delete,
    path = "/v1/segments/{id}",
    tag = "segments",
    params(("id" = String, Path, description = "The segment's id, `seg_<n>`")),
    responses((status = 200, body = SegmentDeleted), WriteRefusals),
    security(("api_key" = []))
)]
async fn remove(
    State(ctx): State<App>,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<Json<Value>, HubError> {
    let id = parse_id(&id)?;
    ctx.hub.change_segment(SegmentChange::Delete(id)).await?;
    Ok(Json(json!({ "deleted": id })))
}

/// A page of a segment's members, shaped like the visitor list (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/segments/{id}/visitors",
    tag = "segments",
    params(
        ("id" = String, Path, description = "The segment's id, `seg_<n>`"),
        ("page" = Option<u64>, Query, minimum = 1, description = "1 by default"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000,
            description = "50 by default"),
    ),
    responses((status = 200, body = VisitorPage), ReadRefusals),
    security(("api_key" = []))
)]
async fn members(
    State(ctx): State<App>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, HubError> {
    let id = parse_id(&id)?;
    let params = query_params(query, &["page", "limit"])?;
    let (page, limit) = paging(&params)?;
    if ctx.hub.state().segment(id).is_none() {
        return Err(HubError::not_found(format!("no segment {id}")));
    }
    let hub = ctx.hub.clone();
    // Each member's view gathers its customers: off the async workers.
    blocking(move || {
        let state = hub.state();
        visitor_page(state, &state.segment_members(id), page, limit)
    })
    .await
}
