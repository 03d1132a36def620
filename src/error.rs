//! The protocol's error codes and the one error type every refusal travels in.
//!
//! Callers branch on [`ErrorCode`]; the wire code string and the HTTP status come from here
//! and nowhere else (PROTOCOL.md sections 5 and 7).

use std::fmt;

use serde_json::Value;

/// The error codes of PROTOCOL.md section 5.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ErrorCode {
    BadRequest,
    InvalidEvent,
    InvalidTransition,
    ActionTerminal,
    Unauthorized,
    Forbidden,
    RateLimited,
    TooLarge,
    NotFound,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, for metrics labels.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidEvent,
        ErrorCode::InvalidTransition,
        ErrorCode::ActionTerminal,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::TooLarge,
        ErrorCode::NotFound,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidEvent => "invalid_event",
            ErrorCode::InvalidTransition => "invalid_transition",
            ErrorCode::ActionTerminal => "action_terminal",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code (PROTOCOL.md section 7).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::InvalidEvent => 422,
            ErrorCode::InvalidTransition | ErrorCode::ActionTerminal => 409,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::RateLimited => 429,
            ErrorCode::TooLarge => 413,
            ErrorCode::NotFound => 404,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: a code to branch on, a sentence for a person, optional structured details.
#[derive(Clone, Debug, PartialEq)]
pub struct HubError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
}

impl HubError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> HubError {
        HubError {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> HubError {
        HubError::new(ErrorCode::BadRequest, message)
    }

    /// An invalid event, naming the field at fault in `details.field`.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> HubError {
        HubError {
            code: ErrorCode::InvalidEvent,
            message: message.into(),
            details: Some(serde_json::json!({ "field": field })),
        }
    }

    pub fn not_found(message: impl Into<String>) -> HubError {
        HubError::new(ErrorCode::NotFound, message)
    }

    /// The error as the JSON object used inside frames and HTTP bodies.
    pub fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("code".into(), self.code.as_str().into());
        object.insert("message".into(), self.message.clone().into());
        if let Some(details) = &self.details {
            object.insert("details".into(), details.clone());
        }
        Value::Object(object)
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for HubError {}
