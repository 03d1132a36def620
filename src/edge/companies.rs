//! The companies API: the companies visitors belong to (an identity event's or update's
//! `company`, or `PUT /v1/visitors/{id}`). Reads only, from [`crate::hub::state`], shaped
//! by [`crate::edge::views`]; a company changes only through its visitors.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};

use crate::edge::app::App;
use crate::edge::http::{blocking, query_params, NoQuery};
use crate::edge::openapi::{CompanyPage, ReadRefusals};
use crate::edge::views;
use crate::edge::views::CompanyView;
use crate::edge::visitors::paging;
use crate::error::HubError;
use crate::ids::CompanyId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The company routes.
pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(view))
}

/// `GET /v1/companies?search=&page=&limit=`: most recently seen first (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/companies",
    tag = "companies",
    params(
        ("search" = Option<String>, Query, description = "Words a company's id or name contain"),
        ("page" = Option<u64>, Query, minimum = 1, description = "1 by default"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000,
            description = "50 by default"),
    ),
    responses((status = 200, body = CompanyPage), ReadRefusals),
    security(("api_key" = []))
)]
async fn list(
    State(ctx): State<App>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, HubError> {
    let params = query_params(query, &["search", "page", "limit"])?;
    let (page, limit) = paging(&params)?;
    let hub = ctx.hub.clone();
    let search = params.get("search").cloned();
    // The search visits every company: off the async workers.
    let (companies, total) = blocking(move || {
        let all = hub.state().companies(search.as_deref());
        let shown: Vec<Value> = all
            .iter()
            .skip((page - 1).saturating_mul(limit))
            .take(limit)
            .map(|(id, company)| views::company(id, company))
            .collect();
        (shown, all.len())
    })
    .await?;
    Ok(Json(json!({
        "companies": companies,
        "total": total,
        "page": page,
        "limit": limit,
    })))
}

/// A company (scope `subscribe`).
#[utoipa::path(
    get,
    path = "/v1/companies/{id}",
    tag = "companies",
    params(("id" = String, Path, description = "The company's id, as the site gave it")),
    responses((status = 200, body = CompanyView), ReadRefusals),
    security(("api_key" = []))
)]
async fn view(
    State(ctx): State<App>,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<Json<Value>, HubError> {
    let company = ctx
        .hub
        .state()
        .company(&id)
        .ok_or_else(|| HubError::not_found(format!("no company {id:?}")))?;
    Ok(Json(views::company(
        &CompanyId::from(id.as_str()),
        &company,
    )))
}
