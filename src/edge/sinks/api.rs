//! `/v1/sinks`: create, list, show, delete and resume webhook sinks. Every path needs the
//! `admin` scope (a sink sends events anywhere), which `http::required_scope` says; the
//! registry ([`super::Sinks`]) does the work.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::edge::app::App;
use crate::edge::http::json_body;
use crate::edge::openapi::{
    ReadRefusals, SinkCreated, SinkDeleted, SinkList, SinkView, WriteRefusals,
};
use crate::error::HubError;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, delete))
        .routes(routes!(resume))
}

/// `POST /v1/sinks`'s body (docs/protocol.md, Webhook sinks).
#[derive(ToSchema)]
#[allow(dead_code)] // Describes what `SinkSpec::from_api` reads.
#[schema(rename_all = "camelCase")]
struct SinkRequest {
    /// http or https, with a host and no credentials.
    url: String,
    topics: Vec<String>,
    #[schema(value_type = Option<Object>, rename = "where")]
    filter: (),
    #[schema(minimum = 1, maximum = 1000)]
    batch_size: Option<u64>,
    #[schema(minimum = 0, maximum = 60000)]
    linger_ms: Option<u64>,
    /// 1 to 64 letters, digits, `-`, `_`; the id by default.
    name: Option<String>,
    /// Start after this seq (needs `epoch`) rather than at the latest.
    since: Option<u64>,
    epoch: Option<String>,
}

/// 201 with the sink and its secret, which is shown this once.
#[utoipa::path(
    post,
    path = "/v1/sinks",
    tag = "sinks",
    request_body = SinkRequest,
    responses((status = 201, body = SinkCreated), WriteRefusals),
    security(("api_key" = []))
)]
async fn create(
    State(ctx): State<App>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HubError> {
    let body = json_body(&ctx.hub, body)?;
    let (sink, secret) = ctx.sinks.create(body).await?;
    let mut view = ctx.sinks.view(&sink);
    view["secret"] = secret.text().into();
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/sinks",
    tag = "sinks",
    responses((status = 200, body = SinkList), ReadRefusals),
    security(("api_key" = []))
)]
async fn list(State(ctx): State<App>) -> Result<Json<Value>, HubError> {
    let sinks: Vec<Value> = ctx
        .sinks
        .list()?
        .iter()
        .map(|s| ctx.sinks.view(s))
        .collect();
    Ok(Json(json!({ "sinks": sinks })))
}

#[utoipa::path(
    get,
    path = "/v1/sinks/{id}",
    tag = "sinks",
    params(("id" = String, Path, description = "The sink's id")),
    responses((status = 200, body = SinkView), ReadRefusals),
    security(("api_key" = []))
)]
async fn show(State(ctx): State<App>, Path(id): Path<String>) -> Result<Json<Value>, HubError> {
    let sink = ctx.sinks.get(&id)?;
    Ok(Json(ctx.sinks.view(&sink)))
}

#[utoipa::path(
    delete,
    path = "/v1/sinks/{id}",
    tag = "sinks",
    params(("id" = String, Path, description = "The sink's id")),
    responses((status = 200, body = SinkDeleted), WriteRefusals),
    security(("api_key" = []))
)]
async fn delete(State(ctx): State<App>, Path(id): Path<String>) -> Result<Json<Value>, HubError> {
    ctx.sinks.delete(&id).await?;
    Ok(Json(json!({ "id": id, "deleted": true })))
}

#[utoipa::path(
    post,
    path = "/v1/sinks/{id}/resume",
    tag = "sinks",
    params(("id" = String, Path, description = "The sink's id")),
    responses((status = 200, body = SinkView), WriteRefusals),
    security(("api_key" = []))
)]
async fn resume(State(ctx): State<App>, Path(id): Path<String>) -> Result<Json<Value>, HubError> {
    let sink = ctx.sinks.resume(&id).await?;
    Ok(Json(ctx.sinks.view(&sink)))
}
