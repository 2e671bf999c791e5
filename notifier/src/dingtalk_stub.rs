//! TEMPORARY: the client layer's interface (branch `ntf-client`), copied minimally so the
//! command engine compiles before that branch lands. Deleted at the merge.

#![allow(dead_code)]

use std::time::Duration;

use common::secret::Secret;

/// One DingTalk endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    AccessToken,
    OldAccessToken,
    BatchSend,
    ReadStatus,
    BatchRecall,
    GroupSend,
    GroupRecall,
    CardSend,
    CardUpdate,
    CardInstanceCreate,
    CardInstanceDeliver,
    CardInstanceUpdate,
    CardStreaming,
    CardCallbackRegister,
    MediaUpload,
    MessageFileDownload,
    ListSimple,
    UserList,
    DeptListSub,
    GetByUnionId,
    CustomRobotSend,
    SessionWebhookSend,
}

/// An app's credentials.
#[derive(Debug, Clone)]
pub struct App {
    pub integration_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub robot_code: String,
    pub qps_limit: u32,
}

impl App {
    pub fn from_integration(integration: &common::registry::Integration) -> Self {
        Self {
            integration_id: integration.id().to_string(),
            client_id: integration.client_id().to_owned(),
            client_secret: integration.client_secret().clone(),
            robot_code: integration.robot_code().to_owned(),
            qps_limit: integration.qps_limit().get(),
        }
    }
}

/// One call.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub api: Api,
    pub body: CallBody,
    pub query: Vec<(String, String)>,
}

/// A call's body.
#[derive(Debug, Clone)]
pub enum CallBody {
    None,
    Json(serde_json::Value),
    Multipart {
        field: String,
        file_name: String,
        mime: String,
        bytes: bytes::Bytes,
    },
}

/// Who is called.
#[derive(Debug, Clone)]
pub enum Target {
    App(App),
    CustomRobot {
        access_token: Secret,
        secret: Option<Secret>,
    },
    SessionWebhook {
        url: String,
    },
}

/// Client options.
#[derive(Debug, Clone, Default)]
pub struct DingTalkOptions;

/// The client.
#[derive(Clone)]
pub struct DingTalk;

impl DingTalk {
    pub fn new(
        _http: reqwest::Client,
        _endpoints: common::config::DingTalkEndpoints,
        _redis: redis::aio::ConnectionManager,
        _options: DingTalkOptions,
    ) -> Self {
        Self
    }

    pub async fn call(
        &self,
        _target: &Target,
        _call: ApiCall,
    ) -> Result<serde_json::Value, DingTalkError> {
        Err(DingTalkError::Unknown {
            detail: "client layer not merged yet".into(),
        })
    }

    pub async fn try_acquire(&self, _target: &Target, _api: Api) -> Result<(), Duration> {
        Ok(())
    }
}

/// What went wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DingTalkError {
    #[error("throttled: {detail}")]
    Throttled { retry_after: Duration, detail: String },
    #[error("token invalid: {detail}")]
    TokenInvalid { detail: String },
    #[error("permission {code}: {message}")]
    Permission { code: String, message: String },
    #[error("rejected {code}: {message}")]
    Rejected { code: String, message: String },
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    #[error("unknown: {detail}")]
    Unknown { detail: String },
    #[error("quota exhausted: {detail}")]
    QuotaExhausted { detail: String },
}

impl DingTalkError {
    pub fn code(&self) -> String {
        match self {
            Self::Permission { code, .. } | Self::Rejected { code, .. } | Self::Server { code, .. } => {
                code.clone()
            }
            Self::Throttled { .. } => "throttled".into(),
            Self::TokenInvalid { .. } => "token_invalid".into(),
            Self::Unknown { .. } => "unknown".into(),
            Self::QuotaExhausted { .. } => "90020".into(),
        }
    }

    pub fn retryable(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Server { .. } | Self::Unknown { .. })
    }
}
