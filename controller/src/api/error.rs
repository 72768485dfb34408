//! `ApiError`: every failure an API handler can return, and the one place that maps them
//! to HTTP statuses and the JSON error body `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::fleet::FleetError;
use crate::store::StoreError;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong token (the admin token, an API token or a dashboard session)")]
    Unauthorized,
    #[error("{actor} has scope {have}; {method} {path} needs scope {needed}")]
    Forbidden {
        actor: String,
        have: crate::access::Scope,
        needed: crate::access::Scope,
        method: String,
        path: String,
    },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} already exists")]
    Conflict { what: String },
    #[error("bad request: {message}")]
    BadRequest { message: String },
    /// The request is valid but the target's state does not allow it.
    #[error("{message}")]
    Refused { message: String },
    #[error(transparent)]
    Fleet(FleetError),
    #[error("{what}")]
    Internal { what: String },
    #[error("device {device} is offline")]
    DeviceOffline { device: String },
    #[error("device {device} could not do it: {reason}")]
    CommandFailed { device: String, reason: String },
    #[error(transparent)]
    Command(#[from] crate::commands::CommandError),
    #[error("too many requests: {what}")]
    TooManyRequests { what: String },
    /// The deploy policy does not grant what the app asks (`policy/`).
    #[error(transparent)]
    PolicyRefused(crate::policy::PolicyRefusal),
    /// A remote session (logs follow, exec) did not start.
    #[error(transparent)]
    Session(#[from] crate::sessions::SessionError),
    /// `exec` into a device whose tags the policy does not grant it for.
    #[error("{actor} may not exec into device {device}: the policy grants exec to the admin only, unless policy.exec or a matching [[policy.allow]] says exec = true")]
    ExecDenied { actor: String, device: String },
}

/// The error body every endpoint returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::from(FleetError::Store(err))
    }
}

impl From<FleetError> for ApiError {
    fn from(err: FleetError) -> Self {
        match err {
            FleetError::Store(StoreError::DeviceNotFound { device }) => ApiError::NotFound {
                what: format!("device {device}"),
            },
            FleetError::Store(StoreError::DeviceExists { device }) => ApiError::Conflict {
                what: format!("device {device}"),
            },
            FleetError::Store(StoreError::TokenExists { name }) => ApiError::Conflict {
                what: format!("a live API token named {name}"),
            },
            FleetError::Store(StoreError::TokenNotFound { name }) => ApiError::NotFound {
                what: format!("live API token {name}"),
            },
            FleetError::InvalidTag { .. }
            | FleetError::ReservedId { .. }
            | FleetError::DesiredTooLarge { .. } => ApiError::BadRequest {
                message: err.to_string(),
            },
            FleetError::PolicyRefused(refusal) => ApiError::PolicyRefused(refusal),
            FleetError::InvalidApp(invalid) => ApiError::BadRequest {
                message: format!(
                    "the app is not a valid desired state: {}",
                    error_chain(&invalid)
                ),
            },
            other => ApiError::Fleet(other),
        }
    }
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Refused { .. } => (StatusCode::CONFLICT, "refused"),
            ApiError::Fleet(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::DeviceOffline { .. } => (StatusCode::CONFLICT, "device_offline"),
            ApiError::CommandFailed { .. } => (StatusCode::CONFLICT, "command_failed"),
            ApiError::Command(crate::commands::CommandError::NoReply { .. }) => {
                (StatusCode::GATEWAY_TIMEOUT, "device_timeout")
            }
            ApiError::Command(_) => (StatusCode::BAD_GATEWAY, "broker"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::PolicyRefused(_) => (StatusCode::FORBIDDEN, "policy_refused"),
            ApiError::ExecDenied { .. } => (StatusCode::FORBIDDEN, "exec_denied"),
            ApiError::Session(err) => session_status(err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(
                error = format!("{:#}", error_chain(&self)),
                "API request failed"
            );
        } else if status.is_server_error() {
            // A device or the broker did not cooperate: the controller itself is fine.
            tracing::warn!(error = error_chain(&self), "API request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: error_chain(&self),
            },
        };
        (status, Json(body)).into_response()
    }
}

/// The error's code, for answers that are not HTTP responses (the exec WebSocket).
pub(crate) fn code_of(err: &ApiError) -> &'static str {
    err.status_and_code().1
}

fn session_status(err: &crate::sessions::SessionError) -> (StatusCode, &'static str) {
    use crate::sessions::SessionError;
    use coracle_proto::SessionFailure;
    match err {
        SessionError::Refused { failure, .. } => match failure {
            SessionFailure::NoSuchService => (StatusCode::NOT_FOUND, "no_such_service"),
            SessionFailure::NotRunning => (StatusCode::CONFLICT, "not_running"),
            SessionFailure::TooManySessions => (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
            SessionFailure::TimedOut => (StatusCode::GATEWAY_TIMEOUT, "device_timeout"),
            SessionFailure::Other(_) => (StatusCode::CONFLICT, "command_failed"),
        },
        SessionError::NoReply { .. } => (StatusCode::GATEWAY_TIMEOUT, "device_timeout"),
        SessionError::TooMany => (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
        SessionError::Publish { .. } => (StatusCode::BAD_GATEWAY, "broker"),
    }
}

/// The error and its causes, `: `-separated, for operators reading one line.
pub(crate) use coracle_proto::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses() {
        let not_found: ApiError = StoreError::DeviceNotFound {
            device: "pi".into(),
        }
        .into();
        assert_eq!(not_found.status_and_code().0, StatusCode::NOT_FOUND);
        let exists: ApiError = StoreError::DeviceExists {
            device: "pi".into(),
        }
        .into();
        assert_eq!(exists.status_and_code().0, StatusCode::CONFLICT);
        let schema: ApiError = StoreError::NewerSchema { found: 9, known: 1 }.into();
        assert_eq!(
            schema.status_and_code().0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
