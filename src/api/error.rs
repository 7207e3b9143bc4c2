//! The one place where errors become HTTP statuses, with one JSON body everywhere:
//! `{"error": "...", "error_type": "..."}` (the Open Inference Protocol's `error`, plus a stable
//! kind a client can branch on).

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::EngineError;
use crate::tensor::TensorError;
use crate::worker::protocol::FailureKind;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request breaks a rule: the message names the field, the rule and the value.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The model failed on valid input (wrong output shape, NaN, could not be loaded).
    #[error("{0}")]
    Model(String),
    /// No capacity now; the client may retry after the given seconds.
    #[error("{message}")]
    Unavailable { message: String, retry_after_s: u32 },
    /// The request body is larger than the server accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The resource is in a state that does not allow the request.
    #[error("{0}")]
    Conflict(String),
    /// The resource existed and was removed (pruned examples).
    #[error("{0}")]
    Gone(String),
    /// No token, or one the server does not accept.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token whose scope does not cover the route.
    #[error("{0}")]
    Forbidden(String),
    /// The caller already runs as much as it may; it may retry after the given seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_s: u32 },
    /// The work ran past its deadline.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

/// The one error body of every route.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong; for a bad request, the field, the rule and the value.
    pub error: String,
    /// A stable kind: invalid_request, not_found, model_error, unavailable, too_large,
    /// conflict, gone, unauthorized, forbidden, too_many_requests, timeout, internal.
    pub error_type: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Model(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable name for the kind of error.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_request",
            Self::NotFound(_) => "not_found",
            Self::Model(_) => "model_error",
            Self::Unavailable { .. } => "unavailable",
            Self::TooLarge(_) => "too_large",
            Self::Conflict(_) => "conflict",
            Self::Gone(_) => "gone",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::Timeout(_) => "timeout",
            Self::Internal(_) => "internal",
        }
    }

    pub fn unknown_model(name: &str) -> Self {
        Self::NotFound(format!("model {name:?} is not in the repository"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if matches!(self, Self::Unavailable { .. }) {
            // Shedding load is the server working as designed: no error line per refusal.
            tracing::warn!(error_type = self.error_type(), "{self}");
        } else if status.is_server_error() {
            tracing::error!(error_type = self.error_type(), "{self}");
        } else {
            tracing::info!(error_type = self.error_type(), "{self}");
        }
        let body = ErrorBody {
            error: self.to_string(),
            error_type: self.error_type().to_owned(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Self::Unavailable { retry_after_s, .. }
        | Self::TooManyRequests { retry_after_s, .. } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        response
    }
}

impl From<TensorError> for ApiError {
    fn from(e: TensorError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge(format!("request body: {}", e.body_text()))
        } else {
            Self::Invalid(format!("request body: {}", e.body_text()))
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::QueueFull(_) => Self::Unavailable {
                message,
                retry_after_s: 1,
            },
            EngineError::ShuttingDown => Self::Unavailable {
                message,
                retry_after_s: 5,
            },
            EngineError::WorkerDied(_) => Self::Internal(message),
            EngineError::Timeout(_) => Self::Timeout(message),
            EngineError::MemoryLimit(_) => Self::Model(message),
            EngineError::Failed { kind, message } => match kind {
                FailureKind::Input => Self::Invalid(message),
                FailureKind::Model => Self::Model(message),
                FailureKind::Cancelled | FailureKind::Internal => Self::Internal(message),
            },
        }
    }
}
