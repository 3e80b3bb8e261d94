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

/// An account as listed to admins.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserView {
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub created_at: String,
}

/// `POST /api/v1/users`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub username: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub role: String,
    pub password: String,
}

/// `POST /api/v1/users/{username}/password`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    pub password: String,
}

/// `GET /api/v1/stats/live`, and each `live` frame on `/ws/admin`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LiveView {
    pub waiting: usize,
    pub longest_wait_seconds: u64,
    pub advisors_online: usize,
    pub advisors_available: usize,
    pub advisors_busy: usize,
    pub advisors_away: usize,
    pub active_chats: usize,
    pub admission: crate::protocol::ws::OpeningView,
    pub advisors: Vec<AdvisorLiveView>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AdvisorLiveView {
    pub username: String,
    pub display_name: String,
    pub status: crate::protocol::ws::AdvisorStatus,
    pub active_chats: u32,
    pub connected: bool,
}

/// A `live` frame on `/ws/admin`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "live")]
pub struct LiveFrame<'a> {
    #[serde(flatten)]
    pub live: &'a LiveView,
}

impl From<&crate::domain::chat::LiveFigures> for LiveView {
    fn from(f: &crate::domain::chat::LiveFigures) -> Self {
        LiveView {
            waiting: f.waiting,
            longest_wait_seconds: f.longest_wait_seconds,
            advisors_online: f.advisors_online,
            advisors_available: f.advisors_available,
            advisors_busy: f.advisors_busy,
            advisors_away: f.advisors_away,
            active_chats: f.active_chats,
            admission: f.opening.clone(),
            advisors: f
                .advisors
                .iter()
                .map(|a| AdvisorLiveView {
                    username: a.username.clone(),
                    display_name: a.display_name.clone(),
                    status: a.status,
                    active_chats: a.active_chats,
                    connected: a.connected,
                })
                .collect(),
        }
    }
}
