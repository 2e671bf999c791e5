//! A simulator per test on a free port, a reqwest client, and assertions in DingTalk's terms.

use std::time::Duration;

use dingtalk_sim::{
    Api, AppCredentials, CallFilter, CustomRobotConfig, RecordedCall, RunningSim, SimConfig,
    Simulator, TOKEN_HEADER,
};
use serde_json::{json, Value};

/// The app every test simulator accepts.
pub const APP_KEY: &str = "dingsimapp";
/// Its secret.
pub const APP_SECRET: &str = "sim-app-secret";
/// A second app, for per-app isolation.
pub const OTHER_APP_KEY: &str = "dingotherapp";
/// Its secret.
pub const OTHER_APP_SECRET: &str = "other-app-secret";
/// A signed custom robot.
pub const ROBOT_TOKEN: &str = "robot-token-signed";
/// Its signing secret.
pub const ROBOT_SECRET: &str = "SECsimrobotsecret";
/// An unsigned custom robot with a keyword.
pub const KEYWORD_ROBOT_TOKEN: &str = "robot-token-keyword";

/// The standard test configuration (change fields before [`TestSim::start_with`]).
pub fn config() -> SimConfig {
    let keyword_robot = CustomRobotConfig {
        access_token: KEYWORD_ROBOT_TOKEN.to_owned(),
        secret: None,
        keywords: vec!["alert".to_owned()],
    };
    SimConfig::local()
        .with_app(AppCredentials::new(APP_KEY, APP_SECRET))
        .with_app(AppCredentials::new(OTHER_APP_KEY, OTHER_APP_SECRET))
        .with_custom_robot(
            format!("{ROBOT_TOKEN}:{ROBOT_SECRET}")
                .parse()
                .expect("robot"),
        )
        .with_custom_robot(keyword_robot)
}

/// A running simulator and a client for it.
pub struct TestSim {
    pub sim: RunningSim,
    pub http: reqwest::Client,
    pub base: String,
}

/// An answer: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// Asserts a new-API error: status and a `code` containing `code_part`.
    #[track_caller]
    pub fn assert_new_error(&self, status: u16, code_part: &str) {
        assert_eq!(self.status, status, "{:?}", self.body);
        let code = self.body["code"].as_str().unwrap_or_default();
        assert!(
            code.contains(code_part),
            "code {code:?} lacks {code_part:?}: {}",
            self.body
        );
        assert!(self.body["message"].is_string(), "{}", self.body);
        assert!(self.body["requestid"].is_string(), "{}", self.body);
    }

    /// Asserts an old-API error: HTTP 200 with `errcode`.
    #[track_caller]
    pub fn assert_errcode(&self, errcode: i64) {
        assert_eq!(self.status, 200, "{:?}", self.body);
        assert_eq!(self.body["errcode"], errcode, "{}", self.body);
        assert!(self.body["errmsg"].is_string(), "{}", self.body);
    }

    /// Asserts a new-API success.
    #[track_caller]
    pub fn assert_ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{}", self.body);
        &self.body
    }

    /// Asserts an old-API success (`errcode` 0).
    #[track_caller]
    pub fn assert_old_ok(&self) -> &Value {
        self.assert_errcode(0);
        &self.body
    }
}

impl TestSim {
    /// A simulator with [`config`].
    pub async fn start() -> Self {
        Self::start_with(config()).await
    }

    /// A simulator with `config`.
    pub async fn start_with(config: SimConfig) -> Self {
        let sim = Simulator::start(config).await.expect("simulator starts");
        let base = sim.base_url();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self { sim, http, base }
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends and reads the answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request reaches the simulator");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// A new-API token for `app_key`.
    pub async fn new_token_for(&self, app_key: &str, secret: &str) -> String {
        let answer = self
            .send(
                self.http
                    .post(self.url("/v1.0/oauth2/accessToken"))
                    .json(&json!({ "appKey": app_key, "appSecret": secret })),
            )
            .await;
        answer.assert_ok()["accessToken"]
            .as_str()
            .expect("accessToken")
            .to_owned()
    }

    /// A new-API token for the standard app.
    pub async fn new_token(&self) -> String {
        self.new_token_for(APP_KEY, APP_SECRET).await
    }

    /// An old-API token for the standard app.
    pub async fn old_token(&self) -> String {
        let answer = self
            .send(
                self.http
                    .get(self.url("/gettoken"))
                    .query(&[("appkey", APP_KEY), ("appsecret", APP_SECRET)]),
            )
            .await;
        answer.assert_old_ok()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// POST a JSON body to a new-API path with a token.
    pub async fn post_new(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(
            self.http
                .post(self.url(path))
                .header(TOKEN_HEADER, token)
                .json(&body),
        )
        .await
    }

    /// PUT a JSON body to a new-API path with a token.
    pub async fn put_new(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(
            self.http
                .put(self.url(path))
                .header(TOKEN_HEADER, token)
                .json(&body),
        )
        .await
    }

    /// POST a JSON body to an old-API path with `?access_token=`.
    pub async fn post_old(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(
            self.http
                .post(self.url(path))
                .query(&[("access_token", token)])
                .json(&body),
        )
        .await
    }

    /// POST to the control API.
    pub async fn control(&self, path: &str, body: Value) -> Answer {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    /// Accepted calls to `api`.
    pub fn accepted(&self, api: Api) -> Vec<RecordedCall> {
        self.sim.state().calls(&CallFilter::api(api))
    }

    /// Refused calls to `api`.
    pub fn refused(&self, api: Api) -> Vec<RecordedCall> {
        self.sim.state().rejected(&CallFilter::api(api))
    }

    /// Asserts `api` accepted nothing and refused exactly `n` calls, the last for a reason
    /// containing `reason_part`.
    #[track_caller]
    pub fn assert_only_refused(&self, api: Api, n: usize, reason_part: &str) {
        assert!(
            self.accepted(api).is_empty(),
            "{api} accepted a call it should refuse"
        );
        let refused = self.refused(api);
        assert_eq!(refused.len(), n, "{refused:?}");
        let reason = refused
            .last()
            .and_then(|call| call.reason.clone())
            .unwrap_or_default();
        assert!(
            reason.contains(reason_part),
            "reason {reason:?} lacks {reason_part:?}"
        );
    }
}

/// Sleeps until just after the next wall-clock second starts, so a burst fits in one
/// rate-limit window.
pub async fn at_start_of_next_second() {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(1000 - now_ms % 1000 + 20)).await;
}

/// A sampleText msgParam.
pub fn text_param(content: &str) -> Value {
    Value::String(json!({ "content": content }).to_string())
}
