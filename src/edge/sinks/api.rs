//! `/v1/sinks`: create, list, show, delete and resume webhook sinks. Every path needs the
//! `admin` scope (a sink sends events anywhere), which `http::required_scope` says; the
//! registry ([`super::Sinks`]) does the work.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::edge::app::App;
use crate::edge::http::json_body;
use crate::error::HubError;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/sinks", post(create).get(list))
        .route("/v1/sinks/{id}", get(show).delete(delete))
        .route("/v1/sinks/{id}/resume", post(resume))
}

/// 201 with the sink and its secret, which is shown this once.
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

async fn list(State(ctx): State<App>) -> Result<Json<Value>, HubError> {
    let sinks: Vec<Value> = ctx
        .sinks
        .list()?
        .iter()
        .map(|s| ctx.sinks.view(s))
        .collect();
    Ok(Json(json!({ "sinks": sinks })))
}

async fn show(State(ctx): State<App>, Path(id): Path<String>) -> Result<Json<Value>, HubError> {
    let sink = ctx.sinks.get(&id)?;
    Ok(Json(ctx.sinks.view(&sink)))
}

async fn delete(State(ctx): State<App>, Path(id): Path<String>) -> Result<Json<Value>, HubError> {
    ctx.sinks.delete(&id).await?;
    Ok(Json(json!({ "id": id, "deleted": true })))
}

async fn resume(State(ctx): State<App>, Path(id): Path<String>) -> Result<Json<Value>, HubError> {
    let sink = ctx.sinks.resume(&id).await?;
    Ok(Json(ctx.sinks.view(&sink)))
}
