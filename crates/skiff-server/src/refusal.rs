//! [`Refusal`], the management API's error: a code for scripts, a message for people, and the
//! HTTP status and JSON body they become.

use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::{ErrorBody, ErrorCode, ErrorDetail, InvalidName};

/// Why a management call was refused: a code for scripts, a message for people. As an axum
/// response it is the status the code stands for and an [`ErrorBody`] (`{"error": {"code",
/// "message"}}`), so a handler returns `Result<_, Refusal>` and uses `?`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(name: &str) -> Self {
        Refusal::new(
            ErrorCode::NotFound,
            format!("no app named `{name}`; `skiff apps list` shows yours"),
        )
    }

    /// A failure of the server itself: the details (paths, OS errors) go to the operator's
    /// log, not to the tenant, who gets a reference to find them by.
    pub(crate) fn internal(message: impl fmt::Display) -> Self {
        let reference = fault_reference();
        tracing::error!(reference = %reference, "{message}");
        Refusal::new(
            ErrorCode::Internal,
            format!(
                "the server failed to do this (reference {reference}); try again, or give the \
                 operator that reference: the server's log says why under it"
            ),
        )
    }
}

pub(crate) type Refused<T> = Result<T, Refusal>;

/// A unique reference that ties a refusal a tenant sees to the log line that explains it: a
/// UUIDv7 in its short form (32 hex digits), so references also sort by time.
fn fault_reference() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A tenant's or app's name that breaks the rules is the caller's mistake.
impl From<InvalidName> for Refusal {
    fn from(err: InvalidName) -> Self {
        Refusal::new(ErrorCode::BadRequest, err.to_string())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match self.code {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::QuotaExceeded => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::InvalidBundle
            | ErrorCode::InvalidManifest
            | ErrorCode::LoadFailed
            | ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RegistryFailed => StatusCode::BAD_GATEWAY,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let unauthorized = self.code == ErrorCode::Unauthorized;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
