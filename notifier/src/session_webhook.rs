//! Which `session_webhook` URLs the notifier posts to (pure).
//!
//! A session webhook is a reply URL DingTalk hands out with an inbound message (PROTOCOL §2.3).
//! Posting to whatever URL a command names would make the notifier an open proxy into the
//! internal network, so only URLs on DingTalk's own old-API host (`DINGTALK_OAPI_URL`: same
//! scheme, host and port) and its `/robot/sendBySession` path are accepted.

use common::bus::result::ResultError;
use reqwest::Url;

/// Checks `url` against the configured old-API base URL.
pub fn check(url: &str, oapi_url: &str) -> Result<(), ResultError> {
    let refused = |why: String| {
        ResultError {
        code: "session_webhook_refused".to_owned(),
        message: format!(
            "{why}; a session_webhook recipient must be the sessionWebhook URL of an inbound message, on {oapi_url}/robot/sendBySession"
        ),
        retryable: false,
    }
    };
    let parsed = Url::parse(url).map_err(|err| refused(format!("{url:?} is not a URL ({err})")))?;
    let base = Url::parse(oapi_url)
        .map_err(|err| refused(format!("DINGTALK_OAPI_URL is not a URL ({err})")))?;
    let same_origin = parsed.scheme() == base.scheme()
        && parsed.host_str().map(str::to_ascii_lowercase)
            == base.host_str().map(str::to_ascii_lowercase)
        && parsed.port_or_known_default() == base.port_or_known_default();
    if !same_origin {
        return Err(refused(format!(
            "{} is not DingTalk's host",
            parsed.host_str().unwrap_or("(no host)")
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refused("credentials in the URL are not allowed".to_owned()));
    }
    let base_path = base.path().trim_end_matches('/');
    if parsed.path() != format!("{base_path}/robot/sendBySession") {
        return Err(refused(format!(
            "the path {} is not /robot/sendBySession",
            parsed.path()
        )));
    }
    Ok(())
}

/// The failure of a session webhook DingTalk no longer knows (they live about 90 minutes).
pub fn expired(detail: &str) -> ResultError {
    ResultError {
        code: "session_webhook_expired".to_owned(),
        message: format!(
            "the session webhook is unknown or expired ({detail}); session webhooks live about 90 minutes after the inbound message — reply with a user_id or chat_id recipient instead"
        ),
        retryable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OAPI: &str = "https://oapi.dingtalk.com";

    #[test]
    fn dingtalks_own_session_urls_are_accepted() {
        assert!(check(
            "https://oapi.dingtalk.com/robot/sendBySession?session=s1",
            OAPI
        )
        .is_ok());
        assert!(check(
            "https://OAPI.dingtalk.com:443/robot/sendBySession?session=s1",
            OAPI
        )
        .is_ok());
        assert!(check(
            "http://127.0.0.1:9300/robot/sendBySession?session=x",
            "http://127.0.0.1:9300"
        )
        .is_ok());
    }

    #[test]
    fn other_hosts_ports_paths_and_schemes_are_refused() {
        for url in [
            "https://evil.example.com/robot/sendBySession?session=s1",
            "https://oapi.dingtalk.com.evil.com/robot/sendBySession",
            "http://oapi.dingtalk.com/robot/sendBySession?session=s1",
            "https://oapi.dingtalk.com:8443/robot/sendBySession",
            "https://oapi.dingtalk.com/robot/send?access_token=x",
            "https://user:pw@oapi.dingtalk.com/robot/sendBySession",
            "not a url",
        ] {
            let err = check(url, OAPI).unwrap_err();
            assert_eq!(err.code, "session_webhook_refused", "{url}");
        }
    }
}
