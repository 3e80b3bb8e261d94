//! JSON bodies of the HTTP API (besides opening hours).

use serde::{Deserialize, Serialize};

/// `POST /api/v1/login`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// The signed-in user: `POST /api/v1/login` and `GET /api/v1/me`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MeView {
    pub username: String,
    pub display_name: String,
    pub role: String,
}

/// Every HTTP error: `{"error":{"code":"…","message":"…"}}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &'static str, message: impl Into<String>) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code, message: message.into() } }
    }
}
