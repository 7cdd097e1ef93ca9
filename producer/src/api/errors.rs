//! The API's errors: one JSON shape, `{"error": {"code": "...", "message": "..."}}`, and the HTTP
//! status each kind gets. Messages name the field or limit at fault and never carry anything of
//! another key's or an upstream's configuration.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The JSON of every error answer (documented in the OpenAPI document).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `unauthorized`, `not_found`, `invalid`, `too_large`, `conflict`, `still_running`,
    /// `too_many`, `headers_too_large` or `unavailable`.
    pub code: String,
    /// What is wrong, naming the field or limit.
    pub message: String,
}

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No key, or one that is not configured.
    #[error("missing or unknown API key (Authorization: Bearer <key>)")]
    Unauthorized,
    /// No such job or queue for this key (another key's jobs answer this too).
    #[error("{0}")]
    NotFound(String),
    /// The request names a field wrongly (422).
    #[error("{0}")]
    Invalid(String),
    /// Over a size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The state does not allow it (a cancel of a running job).
    #[error("{0}")]
    Conflict(String),
    /// The job did not end within the wait (504; the answer names the job).
    #[error("{0}")]
    StillRunning(String),
    /// A key's share of something is used up (open event streams).
    #[error("{0}")]
    TooMany(String),
    /// The request's headers are over `api.max_header_bytes` (431).
    #[error("{0}")]
    HeadersTooLarge(String),
    /// Redis or the library failed; the message is the store's.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::StillRunning(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::Invalid(_) => "invalid",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Conflict(_) => "conflict",
            ApiError::StillRunning(_) => "still_running",
            ApiError::TooMany(_) => "too_many",
            ApiError::HeadersTooLarge(_) => "headers_too_large",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().into(),
                message: self.to_string(),
            },
        };
        (self.status(), Json(body)).into_response()
    }
}

impl From<crate::ProducerError> for ApiError {
    fn from(e: crate::ProducerError) -> Self {
        use crate::ProducerError as P;
        use sluice_common::{InvalidJob, StoreError};
        match e {
            P::Invalid(InvalidJob::TooLarge { .. }) => ApiError::TooLarge(e.to_string()),
            P::Invalid(e) => ApiError::Invalid(e.to_string()),
            P::Store(StoreError::TooLarge(m)) => ApiError::TooLarge(m),
            P::Store(StoreError::Invalid(m)) => ApiError::Invalid(m),
            P::Store(StoreError::Argument(e)) => ApiError::Invalid(e.to_string()),
            P::NotFound { queue, id } => {
                ApiError::NotFound(format!("no job {id} in queue {queue}"))
            }
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}
