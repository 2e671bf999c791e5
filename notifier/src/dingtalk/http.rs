//! One HTTP attempt: build the request for a call (host, path, token, custom-robot signature,
//! body) and send it with a timeout. No policy here; the answer goes to `classify`.
//!
//! Tokens and robot secrets travel in query strings and headers, so errors are reported
//! without their URL (`reqwest::Error::without_url`) and nothing here logs a request.

use std::time::Duration;

use bytes::Bytes;
use common::config::DingTalkEndpoints;
use common::crypto::robot_sign;
use common::secret::Secret;

use super::api::{ApiCall, CallBody, Host, Method, Target, TokenKind};
use super::error::DingTalkError;
use super::retry::Attempt;

/// The header carrying a new-API access token (PROTOCOL §3.1).
pub const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";

/// Builds the request for one attempt of `call` as `target`; `token` is the access token the
/// endpoint needs (none for token endpoints, custom robots and session webhooks), `now_ms`
/// the custom robot's `timestamp`.
pub fn build(
    http: &reqwest::Client,
    endpoints: &DingTalkEndpoints,
    target: &Target,
    call: &ApiCall,
    token: Option<(TokenKind, &Secret)>,
    now_ms: i64,
) -> Result<reqwest::RequestBuilder, DingTalkError> {
    let api = call.api;
    let (method, path) = api.route();
    let url = match (target, api.host()) {
        (Target::SessionWebhook { url }, _) => url.clone(),
        (_, Host::New) => join(&endpoints.api_url, path),
        (_, Host::Old | Host::Webhook) => join(&endpoints.oapi_url, path),
    };
    let method = match method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
    };
    let mut request = http.request(method, &url);
    let mut query: Vec<(String, String)> = call.query.clone();
    match token {
        Some((TokenKind::New, token)) => request = request.header(TOKEN_HEADER, token.expose()),
        Some((TokenKind::Old, token)) => {
            query.push(("access_token".to_owned(), token.expose().to_owned()))
        }
        None => {}
    }
    if let Target::CustomRobot {
        access_token,
        secret,
    } = target
    {
        query.push(("access_token".to_owned(), access_token.expose().to_owned()));
        if let Some(secret) = secret {
            // The query encoder percent-encodes the base64 (`+`, `/`, `=`), as DingTalk wants.
            let timestamp = now_ms.to_string();
            let sign = robot_sign(secret.expose(), &timestamp);
            query.push(("timestamp".to_owned(), timestamp));
            query.push(("sign".to_owned(), sign));
        }
    }
    if !query.is_empty() {
        request = request.query(&query);
    }
    request = match &call.body {
        CallBody::None => request,
        CallBody::Json(value) => request.json(value),
        CallBody::Multipart {
            field,
            file_name,
            mime,
            bytes,
        } => {
            let length = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
            let part = |mime: &str| {
                reqwest::multipart::Part::stream_with_length(
                    reqwest::Body::from(bytes.clone()),
                    length,
                )
                .file_name(file_name.clone())
                .mime_str(mime)
            };
            // The type comes from whoever served the file; DingTalk goes by the file name, so
            // one that is no MIME type is no reason to refuse the file.
            let part = part(mime)
                .or_else(|_| part("application/octet-stream"))
                .map_err(|err| DingTalkError::Rejected {
                    code: "invalid_mime".to_owned(),
                    message: format!("{mime:?} is not a MIME type: {}", err.without_url()),
                })?;
            request.multipart(reqwest::multipart::Form::new().part(field.clone(), part))
        }
    };
    Ok(request)
}

/// The HTTP client for DingTalk calls. It follows no redirect: DingTalk answers where it was
/// asked, and a redirect to another host would carry the access token header along.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Sends one attempt, bounded by `timeout` from connecting to the last body byte. A failure
/// is `NotSent` when the request cannot have reached DingTalk, `Lost` when it may have.
pub async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<(u16, Bytes), Attempt> {
    let mut response = request.timeout(timeout).send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(Attempt::Lost {
                detail: format!("an answer larger than {MAX_ANSWER_BYTES} bytes (HTTP {status})"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body.freeze()))
}

/// The largest answer read from DingTalk; its answers are a few KiB (a page of 100 users is
/// far below this), so anything larger is not DingTalk's and is not buffered whole.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

fn transport(err: reqwest::Error) -> Attempt {
    let never_sent = err.is_connect() || err.is_builder();
    let detail = err.without_url().to_string();
    if never_sent {
        Attempt::NotSent { detail }
    } else {
        Attempt::Lost { detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::api::{Api, App};
    use serde_json::json;

    fn endpoints() -> DingTalkEndpoints {
        DingTalkEndpoints {
            api_url: "https://api.example/".into(),
            oapi_url: "https://oapi.example".into(),
        }
    }

    fn app() -> Target {
        Target::App(App {
            integration_id: "acme".into(),
            client_id: "dingA".into(),
            client_secret: Secret::new("s"),
            robot_code: "dingA".into(),
            qps_limit: 20,
        })
    }

    fn built(
        target: &Target,
        call: &ApiCall,
        token: Option<(TokenKind, &Secret)>,
    ) -> reqwest::Request {
        build(
            &reqwest::Client::new(),
            &endpoints(),
            target,
            call,
            token,
            1_577_262_236_757,
        )
        .unwrap()
        .build()
        .unwrap()
    }

    #[test]
    fn new_api_calls_carry_the_token_in_the_header() {
        let token = Secret::new("tok");
        let call = ApiCall::json(Api::BatchSend, json!({"robotCode": "dingA"}));
        let request = built(&app(), &call, Some((TokenKind::New, &token)));
        assert_eq!(request.method(), reqwest::Method::POST);
        assert_eq!(
            request.url().as_str(),
            "https://api.example/v1.0/robot/oToMessages/batchSend"
        );
        assert_eq!(request.headers()[TOKEN_HEADER], "tok");
    }

    #[test]
    fn old_api_calls_carry_the_token_in_the_query() {
        let token = Secret::new("tok");
        let call = ApiCall::json(Api::ListSimple, json!({"dept_id": 1}));
        let request = built(&app(), &call, Some((TokenKind::Old, &token)));
        assert_eq!(
            request.url().as_str(),
            "https://oapi.example/topapi/user/listsimple?access_token=tok"
        );
        assert!(request.headers().get(TOKEN_HEADER).is_none());
    }

    #[test]
    fn get_calls_send_their_query() {
        let token = Secret::new("tok");
        let call = ApiCall::get(
            Api::ReadStatus,
            vec![
                ("robotCode".into(), "dingA".into()),
                ("processQueryKey".into(), "a+b".into()),
            ],
        );
        let request = built(&app(), &call, Some((TokenKind::New, &token)));
        assert_eq!(request.method(), reqwest::Method::GET);
        assert_eq!(
            request.url().as_str(),
            "https://api.example/v1.0/robot/oToMessages/readStatus?robotCode=dingA&processQueryKey=a%2Bb"
        );
    }

    #[test]
    fn custom_robot_calls_are_signed_with_an_url_encoded_sign() {
        let target = Target::CustomRobot {
            access_token: Secret::new("robot-token"),
            secret: Some(Secret::new("testAppSecret123")),
        };
        let call = ApiCall::json(Api::CustomRobotSend, json!({"msgtype": "text"}));
        let request = built(&target, &call, None);
        // sign = "/u/NmL78bEwbWCrXKtyloL0DktNIZ2Q7oKeLE4xd5wU=" for this secret and timestamp.
        assert_eq!(
            request.url().as_str(),
            "https://oapi.example/robot/send?access_token=robot-token&timestamp=1577262236757\
             &sign=%2Fu%2FNmL78bEwbWCrXKtyloL0DktNIZ2Q7oKeLE4xd5wU%3D"
        );
    }

    #[test]
    fn session_webhooks_go_to_their_url_without_token() {
        let target = Target::SessionWebhook {
            url: "https://oapi.example/robot/sendBySession?session=abc".into(),
        };
        let call = ApiCall::json(Api::SessionWebhookSend, json!({"msgtype": "text"}));
        let request = built(&target, &call, None);
        assert_eq!(
            request.url().as_str(),
            "https://oapi.example/robot/sendBySession?session=abc"
        );
    }

    #[test]
    fn media_upload_is_multipart_with_the_token_and_type_in_the_query() {
        let token = Secret::new("tok");
        let call = ApiCall {
            api: Api::MediaUpload,
            body: CallBody::Multipart {
                field: "media".into(),
                file_name: "a.png".into(),
                mime: "image/png".into(),
                bytes: Bytes::from_static(b"png"),
            },
            query: vec![("type".into(), "image".into())],
        };
        let request = built(&app(), &call, Some((TokenKind::Old, &token)));
        assert_eq!(
            request.url().as_str(),
            "https://oapi.example/media/upload?type=image&access_token=tok"
        );
        let content_type = request.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("multipart/form-data; boundary="),
            "{content_type}"
        );
    }

    #[test]
    fn a_file_served_with_a_content_type_that_is_no_mime_type_is_still_uploaded() {
        let token = Secret::new("tok");
        let call = ApiCall {
            api: Api::MediaUpload,
            body: CallBody::Multipart {
                field: "media".into(),
                file_name: "report.pdf".into(),
                mime: "binary".into(),
                bytes: Bytes::from_static(b"%PDF"),
            },
            query: vec![("type".into(), "file".into())],
        };
        let request = built(&app(), &call, Some((TokenKind::Old, &token)));
        assert!(request.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("multipart/form-data"));
    }
}
