//! The OpenAPI 3.1 document of the HTTP API, served at `GET /v1/openapi.json`.
//!
//! It is generated from the code, so it cannot drift from it: every documented handler
//! carries a `#[utoipa::path]` annotation and is mounted with `utoipa_axum::routes!`, which
//! takes the route's path and method from that annotation and files the operation in the
//! document as it adds the route (see `http::api`). The views the handlers answer derive
//! `ToSchema` where they are built (`edge::views`); the envelopes a handler still writes as
//! JSON by hand, and the error body, are described here. Those descriptions are closed
//! (`deny_unknown_fields`, so `additionalProperties: false`) where nothing is flattened
//! into them: the schemathesis run then fails on a field a handler writes and its
//! description lacks, as it fails on one missing or of the wrong type. This module owns
//! the document's frame (description, security, shared responses) and nothing a request
//! reaches.

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::edge::views::{CompanyView, VisitorSessionView, VisitorView};
use crate::error::ErrorCode;
use crate::ids::{ActionId, ActionMapId, CustomerId, SegmentId, Seq, SessionId, VisitorId};

/// The frame every operation is filed into.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "actionhub HTTP API",
        description = "The HTTP API of actionhub, a realtime event hub for web-action \
            lifecycle reports and visitor events. docs/protocol.md in the repository is the \
            contract; this document describes every HTTP endpoint under /v1 and the \
            probes. The WebSocket endpoint `/v1/ws` (subscribe, publish, replay) is out of \
            OpenAPI's scope: docs/protocol.md describes its frames. Every refusal is \
            `{\"error\": {\"code\", \"message\", \"details\"?}}` with the status its code \
            maps to. Once keys or secrets are configured, every endpoint but the probes, \
            `/metrics` and this document needs an API key in `X-API-Key` holding the scope \
            the endpoint names; browser tokens are for the WebSocket only, and an \
            `Authorization: Bearer` header on HTTP is refused 401.",
        license(name = "see the repository")
    ),
    modifiers(&Security),
    // The ids a path parameter names: parameters refer to their schemas but do not file
    // them, as bodies do.
    components(schemas(ErrorBody, ErrorDetail, ActionId, CustomerId, SessionId, ActionMapId))
)]
struct Frame;

/// The `X-API-Key` scheme, the only credential the HTTP API takes.
struct Security;

/// The scheme's name in the document, which every protected operation names.
pub const API_KEY_SCHEME: &str = "api_key";

impl Modify for Security {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key of the hub's configuration; each endpoint names the scope it needs \
                 (subscribe, publish or admin).",
            ))),
        );
    }
}

/// The document: the frame with the operations the router's documented routes filed.
pub fn document(operations: Document) -> Document {
    Frame::openapi().merge_from(operations)
}

/// The body of every refusal.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the JSON `HubError::into_response` writes.
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What was refused, and why.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes `HubError::to_json`.
pub struct ErrorDetail {
    #[schema(value_type = ErrorCodeName)]
    code: (),
    /// A sentence for a person.
    message: String,
    /// Structured details, for some codes (`invalid_event` names its `field`).
    #[schema(value_type = Option<Object>)]
    details: Option<serde_json::Value>,
}

/// An error code (docs/protocol.md, Frames).
struct ErrorCodeName;

impl utoipa::PartialSchema for ErrorCodeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ErrorCode::ALL.map(ErrorCode::as_str)))
            .into()
    }
}

impl ToSchema for ErrorCodeName {
    fn name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }
}

/// The refusals of a read: a bad parameter or id, a missing or weak key, an unknown id.
#[derive(IntoResponses)]
#[allow(dead_code)] // Describes refusals; handlers answer `HubError`.
pub enum ReadRefusals {
    /// A malformed id or parameter, or one the endpoint does not take.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No API key, or an unknown one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The key lacks the endpoint's scope.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Nothing by that id.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The hub is shutting down, or the read failed.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The refusals of a change: those of a read, and a body that is too large or breaks the
/// lifecycle, a publisher over its rate, and a hub that cannot take writes now.
#[derive(IntoResponses)]
#[allow(dead_code)] // Describes refusals; handlers answer `HubError`.
pub enum WriteRefusals {
    /// A body or parameter that is not what the endpoint takes.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No API key, or an unknown one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The key lacks the endpoint's scope.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Nothing by that id.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The change conflicts with the state (a transition the lifecycle refuses).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is larger than the limit, or a batch holds too many events.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// An event that does not validate.
    #[response(status = 422)]
    InvalidEvent(ErrorBody),
    /// Over the publish rate.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// The hub cannot take writes now (shutting down, disk full, no JWT secret).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// `{"events": [event frames], "next", "epoch"}`, a page of the retained history.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes `http::events_page`, which splices the stored frames.
#[serde(deny_unknown_fields)]
pub struct EventsPage {
    events: Vec<EventFrame>,
    /// The last seq examined: pass it as `since` for the next page.
    next: Seq,
    /// The history's epoch, in which `next` means something.
    epoch: String,
}

/// An `event` frame, exactly as the WebSocket sends it (docs/protocol.md, Frames).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the stored frames.
pub struct EventFrame {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^event$")]
    kind: (),
    seq: Seq,
    /// The event's topic, `webchat:offered` or `visitor:page` for example.
    topic: String,
    /// The event as published, with its `seq`, `topic` and `timestamp`.
    #[schema(value_type = Object)]
    event: (),
}

/// `GET /v1/visitors`: a page of the visitors.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the list's envelope.
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
pub struct VisitorPage<'a> {
    visitors: Vec<VisitorView<'a>>,
    /// Visitors matching the search, on every page.
    total: usize,
    page: usize,
    limit: usize,
}

/// `GET /v1/visitors/{id}/sessions`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the sessions' envelope.
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
pub struct VisitorSessions<'a> {
    visitor_id: VisitorId,
    sessions: Vec<VisitorSessionView<'a>>,
}

/// `GET /v1/visitors/{id}/export`: the visitor with its session history, every held
/// action with its transitions, its retained events and the time of the export.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the export's additions to the visitor view.
#[serde(rename_all = "camelCase")]
pub struct VisitorExport<'a> {
    #[serde(flatten)]
    visitor: VisitorView<'a>,
    /// The retained events of the visitor's customers, as published.
    #[schema(value_type = Vec<Object>)]
    events: Vec<()>,
    #[schema(value_type = String, format = DateTime)]
    exported_at: (),
}

/// `POST /v1/visitors/merge`: the merge's seq and the merged visitor.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the merge's answer.
#[serde(deny_unknown_fields)]
pub struct MergeReply<'a> {
    seq: Seq,
    visitor: VisitorView<'a>,
}

/// `DELETE /v1/visitors/{id}`: the visitor and the customers it held, now forgotten.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the delete's answer.
#[serde(deny_unknown_fields)]
pub struct VisitorDeleted {
    deleted: VisitorId,
    customers: Vec<CustomerId>,
}

/// A webhook sink (docs/protocol.md, Webhook sinks).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes `Sinks::view`.
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
pub struct SinkView {
    id: String,
    name: String,
    url: String,
    topics: Vec<String>,
    /// The `where` filter, `{}` for none.
    #[serde(rename = "where")]
    #[schema(value_type = Object)]
    filter: (),
    batch_size: u64,
    linger_ms: u64,
    #[schema(pattern = "^(config|api)$")]
    source: String,
    #[schema(pattern = "^(active|paused)$")]
    state: String,
    /// Every event up to this seq was acknowledged or not selected.
    cursor: u64,
    epoch: String,
    /// Seqs the hub delivered past the cursor, selected or not.
    lag: u64,
    /// The last answer's HTTP status; null before any, or after a timeout.
    last_status: Option<u16>,
    consecutive_failures: u64,
    last_error: Option<String>,
    delivered_events: u64,
}

/// `POST /v1/sinks`: the sink, and its secret, shown this once.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the create's answer.
pub struct SinkCreated {
    #[serde(flatten)]
    sink: SinkView,
    /// The Standard Webhooks secret, `whsec_<base64>`.
    secret: String,
}

/// `GET /v1/sinks`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the list's envelope.
#[serde(deny_unknown_fields)]
pub struct SinkList {
    sinks: Vec<SinkView>,
}

/// `DELETE /v1/sinks/{id}`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the delete's answer.
#[serde(deny_unknown_fields)]
pub struct SinkDeleted {
    id: String,
    deleted: bool,
}

/// A segment's definition, as `POST` and `PUT /v1/segments...` take it and its view shows
/// it (docs/protocol.md, Segments).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes what `SegmentSpec::parse` reads and `to_json` writes.
pub struct SegmentDefinition {
    /// A non-empty name.
    name: String,
    /// At least one condition on a visitor's field.
    conditions: Vec<SegmentCondition>,
    /// Whether every condition must hold (`all`, the default) or one (`any`).
    #[serde(rename = "match")]
    #[schema(pattern = "^(all|any)$")]
    matching: Option<String>,
}

/// One condition of a segment: a visitor's field, an operator, and the value it compares
/// with (none for the operators that take none).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes a condition's JSON.
#[serde(deny_unknown_fields)]
pub struct SegmentCondition {
    field: String,
    operator: String,
    #[schema(value_type = Option<Object>)]
    value: (),
}

/// A segment: its definition, id, how many visitors are in it, and when it was made and
/// last changed.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes `segments::view`, which adds these to the definition.
#[serde(rename_all = "camelCase")]
pub struct SegmentView {
    #[serde(flatten)]
    definition: SegmentDefinition,
    id: SegmentId,
    visitor_count: u64,
    #[schema(value_type = String, format = DateTime)]
    created_at: (),
    #[schema(value_type = String, format = DateTime)]
    updated_at: (),
}

/// `GET /v1/segments`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the list's envelope.
#[serde(deny_unknown_fields)]
pub struct SegmentList {
    segments: Vec<SegmentView>,
}

/// `DELETE /v1/segments/{id}`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the delete's answer.
#[serde(deny_unknown_fields)]
pub struct SegmentDeleted {
    deleted: SegmentId,
}

/// `GET /v1/companies`: a page of the companies.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Describes the list's envelope.
#[serde(deny_unknown_fields)]
pub struct CompanyPage<'a> {
    companies: Vec<CompanyView<'a>>,
    /// Companies matching the search, on every page.
    total: usize,
    page: usize,
    limit: usize,
}
