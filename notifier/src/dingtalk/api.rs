//! What one DingTalk call is: the endpoint ([`Api`]), who makes it ([`Target`], [`App`]) and
//! what it carries ([`ApiCall`], [`CallBody`]).
//!
//! Pure values: the endpoint table (host, method, path, idempotency, rate-limit bucket) lives
//! here once, so the client, the limiter and the metrics can never disagree about an endpoint.

use common::registry::Integration;
use common::secret::Secret;

/// Which DingTalk endpoint: decides host (new/old API), method, path, whether it is idempotent,
/// and the rate-limit bucket.
///
/// DingTalk's per-(app, API) limit (PROTOCOL §6.3) counts per endpoint, so each variant is one
/// bucket of the limiter and one `api` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    /// `POST /v1.0/oauth2/accessToken` (new-API token, §3.1).
    AccessToken,
    /// `GET /gettoken` (old-API token, §3.2).
    OldAccessToken,
    /// `POST /v1.0/robot/oToMessages/batchSend` (1:1 robot message, §4.2).
    BatchSend,
    /// `GET /v1.0/robot/oToMessages/readStatus` (§4.4).
    ReadStatus,
    /// `POST /v1.0/robot/otoMessages/batchRecall` (lower-case `oto`, §4.4).
    BatchRecall,
    /// `POST /v1.0/robot/groupMessages/send` (§4.3).
    GroupSend,
    /// `POST /v1.0/robot/groupMessages/recall` (§4.4).
    GroupRecall,
    /// StandardCard send: `POST /v1.0/im/v1.0/robot/interactiveCards/send` (§4.5).
    CardSend,
    /// StandardCard update: `PUT /v1.0/im/robots/interactiveCards` (§4.5).
    CardUpdate,
    /// `POST /v1.0/card/instances` (§4.6).
    CardInstanceCreate,
    /// `POST /v1.0/card/instances/deliver` (§4.6).
    CardInstanceDeliver,
    /// `POST /v1.0/card/instances/createAndDeliver` (§4.6).
    CardInstanceCreateAndDeliver,
    /// `PUT /v1.0/card/instances` (§4.6).
    CardInstanceUpdate,
    /// `PUT /v1.0/card/streaming` (AI card streaming, §4.7).
    CardStreaming,
    /// `POST /v1.0/card/callbacks/register` (§4.6b).
    CardCallbackRegister,
    /// `POST /media/upload?type=` (old API, multipart, §4.8).
    MediaUpload,
    /// `POST /v1.0/robot/messageFiles/download` (§2.2).
    MessageFileDownload,
    /// `POST /topapi/user/listsimple` (§5).
    ListSimple,
    /// `POST /topapi/v2/user/list` (§5).
    UserList,
    /// `POST /topapi/v2/department/listsub` (§5).
    DeptListSub,
    /// `POST /topapi/user/getbyunionid` (§5).
    GetByUnionId,
    /// `POST /robot/send?access_token=&timestamp=&sign=` (custom group robot, §4.9).
    CustomRobotSend,
    /// `POST <sessionWebhook>` (reply to a robot callback, §2.3).
    SessionWebhookSend,
}

/// Where an endpoint lives and how it authenticates and answers (PROTOCOL §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    /// `api.dingtalk.com`: token in the `x-acs-dingtalk-access-token` header; errors are
    /// non-2xx `{"code","message"}`.
    New,
    /// `oapi.dingtalk.com`: token in `?access_token=`; errors are HTTP 200 with `errcode != 0`.
    Old,
    /// A URL given by the caller (session webhook); answers in the old-API shape.
    Webhook,
}

/// The HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
}

/// Which access token an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// The v1.0 token, sent as a header.
    New,
    /// The old `gettoken` token, sent as `?access_token=`. Kept apart from the new one
    /// (PROTOCOL §3.2: interchangeability is unverified).
    Old,
}

impl TokenKind {
    /// Short name used in Redis keys and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::New => "new",
            TokenKind::Old => "old",
        }
    }

    /// The endpoint that issues this kind of token.
    pub fn api(self) -> Api {
        match self {
            TokenKind::New => Api::AccessToken,
            TokenKind::Old => Api::OldAccessToken,
        }
    }
}

impl Api {
    /// Every endpoint, for tests and metric pre-registration.
    pub const ALL: [Api; 23] = [
        Api::AccessToken,
        Api::OldAccessToken,
        Api::BatchSend,
        Api::ReadStatus,
        Api::BatchRecall,
        Api::GroupSend,
        Api::GroupRecall,
        Api::CardSend,
        Api::CardUpdate,
        Api::CardInstanceCreate,
        Api::CardInstanceDeliver,
        Api::CardInstanceCreateAndDeliver,
        Api::CardInstanceUpdate,
        Api::CardStreaming,
        Api::CardCallbackRegister,
        Api::MediaUpload,
        Api::MessageFileDownload,
        Api::ListSimple,
        Api::UserList,
        Api::DeptListSub,
        Api::GetByUnionId,
        Api::CustomRobotSend,
        Api::SessionWebhookSend,
    ];

    /// Stable name for metric labels and Redis keys, e.g. `robot.batchSend` (the simulator
    /// uses the same names, so a metric and a recorded call can be matched by eye).
    pub fn name(&self) -> &'static str {
        match self {
            Api::AccessToken => "oauth2.accessToken",
            Api::OldAccessToken => "gettoken",
            Api::BatchSend => "robot.batchSend",
            Api::ReadStatus => "robot.readStatus",
            Api::BatchRecall => "robot.batchRecall",
            Api::GroupSend => "robot.groupSend",
            Api::GroupRecall => "robot.groupRecall",
            Api::CardSend => "standardCard.send",
            Api::CardUpdate => "standardCard.update",
            Api::CardInstanceCreate => "card.create",
            Api::CardInstanceDeliver => "card.deliver",
            Api::CardInstanceCreateAndDeliver => "card.createAndDeliver",
            Api::CardInstanceUpdate => "card.update",
            Api::CardStreaming => "card.streaming",
            Api::CardCallbackRegister => "card.callbacks.register",
            Api::MediaUpload => "media.upload",
            Api::MessageFileDownload => "robot.messageFiles.download",
            Api::ListSimple => "user.listsimple",
            Api::UserList => "user.list",
            Api::DeptListSub => "department.listsub",
            Api::GetByUnionId => "user.getbyunionid",
            Api::CustomRobotSend => "robot.send",
            Api::SessionWebhookSend => "robot.sendBySession",
        }
    }

    /// Whether sending the same call twice is harmless, which decides if a 5xx, a
    /// `systemError` or a timeout may be retried (PROTOCOL §6.4.3).
    ///
    /// Robot messages are not: a retry after an unknown outcome can deliver twice. Reads,
    /// recalls, updates and card-instance calls keyed by `outTrackId` are. Streaming is only
    /// when the call replaces the content (see [`ApiCall::idempotent`]).
    pub fn idempotent(&self) -> bool {
        match self {
            Api::AccessToken
            | Api::OldAccessToken
            | Api::ReadStatus
            | Api::BatchRecall
            | Api::GroupRecall
            | Api::CardUpdate
            | Api::CardInstanceCreate
            | Api::CardInstanceDeliver
            | Api::CardInstanceCreateAndDeliver
            | Api::CardInstanceUpdate
            | Api::CardCallbackRegister
            | Api::MediaUpload
            | Api::MessageFileDownload
            | Api::ListSimple
            | Api::UserList
            | Api::DeptListSub
            | Api::GetByUnionId => true,
            Api::BatchSend
            | Api::GroupSend
            | Api::CardSend
            | Api::CardStreaming
            | Api::CustomRobotSend
            | Api::SessionWebhookSend => false,
        }
    }

    /// The host family, which decides authentication and the error shape.
    pub fn host(&self) -> Host {
        match self {
            Api::OldAccessToken
            | Api::MediaUpload
            | Api::ListSimple
            | Api::UserList
            | Api::DeptListSub
            | Api::GetByUnionId
            | Api::CustomRobotSend => Host::Old,
            Api::SessionWebhookSend => Host::Webhook,
            _ => Host::New,
        }
    }

    /// Method and path, exactly as DingTalk spells them (case matters: `oToMessages` for send
    /// and read, `otoMessages` for recall). The session webhook has no fixed path.
    pub fn route(&self) -> (Method, &'static str) {
        match self {
            Api::AccessToken => (Method::Post, "/v1.0/oauth2/accessToken"),
            Api::OldAccessToken => (Method::Get, "/gettoken"),
            Api::BatchSend => (Method::Post, "/v1.0/robot/oToMessages/batchSend"),
            Api::ReadStatus => (Method::Get, "/v1.0/robot/oToMessages/readStatus"),
            Api::BatchRecall => (Method::Post, "/v1.0/robot/otoMessages/batchRecall"),
            Api::GroupSend => (Method::Post, "/v1.0/robot/groupMessages/send"),
            Api::GroupRecall => (Method::Post, "/v1.0/robot/groupMessages/recall"),
            Api::CardSend => (Method::Post, "/v1.0/im/v1.0/robot/interactiveCards/send"),
            Api::CardUpdate => (Method::Put, "/v1.0/im/robots/interactiveCards"),
            Api::CardInstanceCreate => (Method::Post, "/v1.0/card/instances"),
            Api::CardInstanceDeliver => (Method::Post, "/v1.0/card/instances/deliver"),
            Api::CardInstanceCreateAndDeliver => {
                (Method::Post, "/v1.0/card/instances/createAndDeliver")
            }
            Api::CardInstanceUpdate => (Method::Put, "/v1.0/card/instances"),
            Api::CardStreaming => (Method::Put, "/v1.0/card/streaming"),
            Api::CardCallbackRegister => (Method::Post, "/v1.0/card/callbacks/register"),
            Api::MediaUpload => (Method::Post, "/media/upload"),
            Api::MessageFileDownload => (Method::Post, "/v1.0/robot/messageFiles/download"),
            Api::ListSimple => (Method::Post, "/topapi/user/listsimple"),
            Api::UserList => (Method::Post, "/topapi/v2/user/list"),
            Api::DeptListSub => (Method::Post, "/topapi/v2/department/listsub"),
            Api::GetByUnionId => (Method::Post, "/topapi/user/getbyunionid"),
            Api::CustomRobotSend => (Method::Post, "/robot/send"),
            Api::SessionWebhookSend => (Method::Post, ""),
        }
    }

    /// The access token the endpoint needs, if any (token endpoints, custom robots and session
    /// webhooks need none).
    pub fn token_kind(&self) -> Option<TokenKind> {
        match self {
            Api::AccessToken
            | Api::OldAccessToken
            | Api::CustomRobotSend
            | Api::SessionWebhookSend => None,
            _ => match self.host() {
                Host::New => Some(TokenKind::New),
                Host::Old | Host::Webhook => Some(TokenKind::Old),
            },
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The app calling (built from a registry [`Integration`]): what token fetching, the robot
/// fields and the per-app limiter need, and nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// Our integration id: the namespace of its tokens, limiter keys and usage counters.
    pub integration_id: String,
    /// AppKey, for fetching tokens.
    pub client_id: String,
    /// AppSecret, for fetching tokens; never logged.
    pub client_secret: Secret,
    /// The robot code the engine puts into robot bodies.
    pub robot_code: String,
    /// Calls per second per API this app may make (the integration's `qps_limit`).
    pub qps_limit: u32,
}

impl App {
    /// Takes what the client needs from a validated integration.
    pub fn from_integration(i: &Integration) -> Self {
        Self {
            integration_id: i.id().to_string(),
            client_id: i.client_id().to_owned(),
            client_secret: i.client_secret().clone(),
            robot_code: i.robot_code().to_owned(),
            qps_limit: i.qps_limit().get(),
        }
    }
}

/// Who a call is made as. Custom robots and session webhooks are addressed by URL and token
/// rather than by app credentials.
#[derive(Clone, PartialEq)]
pub enum Target {
    /// An app with AppKey/AppSecret: token injected, per-(app, API) limit.
    App(App),
    /// A custom group robot webhook (PROTOCOL §4.9): 20 messages a minute per robot.
    CustomRobot {
        /// The webhook's `access_token`.
        access_token: Secret,
        /// The "加签" secret; when set, `timestamp` and `sign` are added.
        secret: Option<Secret>,
    },
    /// A robot callback's `sessionWebhook` (PROTOCOL §2.3); the engine has checked the host.
    SessionWebhook {
        /// The full URL, with its `session` query.
        url: String,
    },
}

/// A session webhook's `session` query lets anyone post into the conversation, so `Debug`
/// shows the URL without its query.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::App(app) => f.debug_tuple("App").field(app).finish(),
            Target::CustomRobot {
                access_token,
                secret,
            } => f
                .debug_struct("CustomRobot")
                .field("access_token", access_token)
                .field("secret", secret)
                .finish(),
            Target::SessionWebhook { url } => {
                let base = url.split('?').next().unwrap_or_default();
                f.debug_struct("SessionWebhook")
                    .field("url", &format!("{base}?***"))
                    .finish()
            }
        }
    }
}

impl Target {
    /// The app, for targets that have one.
    pub fn app(&self) -> Option<&App> {
        match self {
            Target::App(app) => Some(app),
            _ => None,
        }
    }

    /// Label for metrics and logs: the integration id, `custom_robot` or `session_webhook`
    /// (never a token).
    pub fn label(&self) -> &str {
        match self {
            Target::App(app) => &app.integration_id,
            Target::CustomRobot { .. } => "custom_robot",
            Target::SessionWebhook { .. } => "session_webhook",
        }
    }
}

/// One call. Body is JSON except for media upload.
#[derive(Clone, PartialEq)]
pub struct ApiCall {
    /// The endpoint.
    pub api: Api,
    /// The request body.
    pub body: CallBody,
    /// Extra query parameters (`readStatus`'s `robotCode`/`processQueryKey`, upload `type`).
    /// The access token, `timestamp` and `sign` are added by the client.
    pub query: Vec<(String, String)>,
}

impl ApiCall {
    /// A call with a JSON body and no query.
    pub fn json(api: Api, body: serde_json::Value) -> Self {
        Self {
            api,
            body: CallBody::Json(body),
            query: Vec::new(),
        }
    }

    /// A call without a body (GET endpoints) with the given query.
    pub fn get(api: Api, query: Vec<(String, String)>) -> Self {
        Self {
            api,
            body: CallBody::None,
            query,
        }
    }

    /// Whether this particular call may be sent twice: [`Api::idempotent`], refined for
    /// streaming, where only a full replacement (`isFull: true`) is harmless to repeat.
    pub fn idempotent(&self) -> bool {
        match (self.api, &self.body) {
            (Api::CardStreaming, CallBody::Json(body)) => {
                body.get("isFull").and_then(serde_json::Value::as_bool) == Some(true)
            }
            (api, _) => api.idempotent(),
        }
    }
}

/// Query values can be secrets (`gettoken`'s `appsecret`); `Debug` names the keys only.
impl std::fmt::Debug for ApiCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.query.iter().map(|(key, _)| key.as_str()).collect();
        f.debug_struct("ApiCall")
            .field("api", &self.api)
            .field("body", &self.body)
            .field("query_keys", &keys)
            .finish()
    }
}

/// A request body.
#[derive(Clone, PartialEq)]
pub enum CallBody {
    /// No body (GET).
    None,
    /// A JSON body.
    Json(serde_json::Value),
    /// A `multipart/form-data` upload of one file (media upload).
    Multipart {
        /// The form field, `media` for DingTalk.
        field: String,
        /// The file name DingTalk stores.
        file_name: String,
        /// The part's content type.
        mime: String,
        /// The file.
        bytes: bytes::Bytes,
    },
}

/// Bodies can hold user content; `Debug` shows their shape and size only.
impl std::fmt::Debug for CallBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallBody::None => f.write_str("None"),
            CallBody::Json(value) => write!(f, "Json({} bytes)", value.to_string().len()),
            CallBody::Multipart {
                field,
                file_name,
                mime,
                bytes,
            } => f
                .debug_struct("Multipart")
                .field("field", field)
                .field("file_name", file_name)
                .field("mime", mime)
                .field("len", &bytes.len())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_paths_keep_dingtalks_case() {
        let mut names: Vec<_> = Api::ALL.iter().map(Api::name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Api::ALL.len());
        assert_eq!(
            Api::BatchSend.route().1,
            "/v1.0/robot/oToMessages/batchSend"
        );
        assert_eq!(
            Api::BatchRecall.route().1,
            "/v1.0/robot/otoMessages/batchRecall"
        );
    }

    #[test]
    fn hosts_and_tokens_follow_the_api_generation() {
        assert_eq!(Api::GroupSend.host(), Host::New);
        assert_eq!(Api::GroupSend.token_kind(), Some(TokenKind::New));
        assert_eq!(Api::MediaUpload.host(), Host::Old);
        assert_eq!(Api::ListSimple.token_kind(), Some(TokenKind::Old));
        for api in [
            Api::AccessToken,
            Api::OldAccessToken,
            Api::CustomRobotSend,
            Api::SessionWebhookSend,
        ] {
            assert_eq!(api.token_kind(), None, "{api}");
        }
    }

    #[test]
    fn robot_messages_are_not_idempotent_reads_and_updates_are() {
        for api in [
            Api::BatchSend,
            Api::GroupSend,
            Api::CardSend,
            Api::CustomRobotSend,
        ] {
            assert!(!api.idempotent(), "{api}");
        }
        for api in [
            Api::ReadStatus,
            Api::CardInstanceUpdate,
            Api::ListSimple,
            Api::AccessToken,
        ] {
            assert!(api.idempotent(), "{api}");
        }
    }

    #[test]
    fn streaming_is_idempotent_only_when_it_replaces_the_content() {
        let stream =
            |full: bool| ApiCall::json(Api::CardStreaming, serde_json::json!({"isFull": full}));
        assert!(stream(true).idempotent());
        assert!(!stream(false).idempotent());
    }

    #[test]
    fn debug_hides_secrets_session_tokens_and_query_values() {
        let target = Target::SessionWebhook {
            url: "https://oapi.dingtalk.com/robot/sendBySession?session=s3cret".into(),
        };
        let text = format!("{target:?}");
        assert!(!text.contains("s3cret"), "{text}");
        let robot = Target::CustomRobot {
            access_token: Secret::new("tok3n"),
            secret: Some(Secret::new("SECx")),
        };
        let text = format!("{robot:?}");
        assert!(!text.contains("tok3n") && !text.contains("SECx"), "{text}");
        let call = ApiCall::get(
            Api::OldAccessToken,
            vec![("appsecret".into(), "app-s3cret".into())],
        );
        let text = format!("{call:?}");
        assert!(
            !text.contains("app-s3cret") && text.contains("appsecret"),
            "{text}"
        );
    }
}
