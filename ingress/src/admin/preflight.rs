//! `POST /api/dingtalk/integrations/{id}/test`: a preflight checklist for one integration.
//!
//! Setting up a DingTalk app fails in a handful of ways that DingTalk reports far from the
//! cause (a robot that stays silent, a console that refuses to save a URL). The checklist tries
//! each one and says, for every item, whether it passed, failed or was skipped, and what to do:
//!
//! | item | how |
//! |------|-----|
//! | `credentials` | the new API issues an access token for client_id / client_secret |
//! | `contact_permission` | a one-user `topapi/user/listsimple` succeeds (60011: grant `qyapi_get_department_member`) |
//! | `robot_code` | the robot code in use, and where it comes from |
//! | `callback_crypto` | callback token set and the 43-character AES key decodes (HTTP mode only) |
//! | `webhook_url` | `PUBLIC_BASE_URL` is an address DingTalk can reach |
//!
//! The answer is 200 whenever the checks could run; `ok` is true when no item failed (a
//! skipped item is not a failure). It also lists what to enter in the DingTalk console. The
//! decisions are pure functions of the call results ([`credentials`], [`contact_permission`],
//! …) so they are tested with plain values; [`run`] only adds the calls.

use serde::Serialize;

use common::config::DingTalkEndpoints;
use common::crypto::AesKey;
use common::registry::{mask, ConnectionMode, Integration};
use common::secret::Secret;

use super::dingtalk::{self, CallError};

/// What an item found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The item passed.
    Ok,
    /// The item failed; `fix` says what to do.
    Failed,
    /// The item does not apply, or needs an earlier item to pass first.
    Skipped,
}

/// One item of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name: `credentials`, `contact_permission`, `robot_code`, `callback_crypto`,
    /// `webhook_url`.
    pub name: &'static str,
    /// Passed, failed or skipped.
    pub status: Status,
    /// What was found, in words.
    pub message: String,
    /// What to do, for failed and skipped items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, message: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }

    fn failed(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Failed,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    fn skipped(name: &'static str, message: impl Into<String>, fix: Option<&str>) -> Self {
        Self {
            name,
            status: Status::Skipped,
            message: message.into(),
            fix: fix.map(str::to_owned),
        }
    }
}

/// A DingTalk permission the app needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permission {
    /// The permission's code in the developer console.
    pub scope: &'static str,
    /// Why the gateway needs it.
    pub why: &'static str,
}

/// What to enter in the DingTalk developer console for this integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Console {
    /// How the robot receives messages: `http` (the URLs below) or `stream`.
    pub connection_mode: ConnectionMode,
    /// Robot page → message receiving address (HTTP mode).
    pub message_receiving_url: String,
    /// Event subscription page → request URL (same route: it tells events from messages).
    pub event_subscription_url: String,
    /// Where card button presses are delivered.
    pub card_callback_url: String,
    /// Permissions to grant on the permissions page.
    pub permissions: Vec<Permission>,
    /// The steps, in order, as a person would follow them.
    pub steps: Vec<String>,
}

/// The checklist's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// True when no item failed.
    pub ok: bool,
    /// The integration checked.
    pub integration_id: String,
    /// `{PUBLIC_BASE_URL}/api/dingtalk/webhook/{id}`.
    pub webhook_url: String,
    /// Every item, in a fixed order.
    pub checks: Vec<Check>,
    /// The console settings.
    pub console: Console,
}

/// Permission codes from PROTOCOL §5 (contact read) and §4.2 (robot send).
const PERMISSIONS: [Permission; 2] = [
    Permission {
        scope: "qyapi_robot_sendmsg",
        why: "the robot sends answers to users and groups",
    },
    Permission {
        scope: "qyapi_get_department_member",
        why: "the gateway reads department members (通讯录部门成员读权限) to resolve users",
    },
];

/// The fix for credentials DingTalk refused.
const FIX_CREDENTIALS: &str = "Copy the AppKey and AppSecret again from the DingTalk developer \
     console (your app → Credentials & basic info / 凭证与基础信息) into client_id and \
     client_secret, then PUT the integration again.";
/// The fix for a missing contact permission (errcode 60011).
const FIX_CONTACT_PERMISSION: &str = "In the DingTalk developer console open your app → \
     Permissions (权限管理), grant qyapi_get_department_member (通讯录部门成员读权限), then \
     publish a new version of the app.";

/// Runs every item for `integration` and builds the report.
pub async fn run(
    http: &reqwest::Client,
    endpoints: &DingTalkEndpoints,
    public_base_url: &str,
    integration: &Integration,
) -> Report {
    let secret = integration.client_secret();
    let app_key = integration.client_id();
    let (new_token, old_token) = tokio::join!(
        dingtalk::access_token(http, &endpoints.api_url, app_key, secret),
        dingtalk::old_access_token(http, &endpoints.oapi_url, app_key, secret),
    );
    let listed = match &old_token {
        Ok(token) => Some(dingtalk::list_one_member(http, &endpoints.oapi_url, token).await),
        Err(_) => None,
    };
    let checks = vec![
        credentials(app_key, &endpoints.api_url, &new_token),
        contact_permission(
            &endpoints.oapi_url,
            new_token.is_ok(),
            old_token.as_ref().map(drop),
            listed,
        ),
        robot_code(integration),
        callback_crypto(integration),
        webhook_url(public_base_url, integration.id().as_str()),
    ];
    let checks = checks
        .into_iter()
        .map(|check| redact(check, integration))
        .collect();
    report(public_base_url, integration, checks)
}

/// Puts the items together with the console settings.
pub fn report(public_base_url: &str, integration: &Integration, checks: Vec<Check>) -> Report {
    let id = integration.id().as_str();
    let webhook = format!("{public_base_url}/api/dingtalk/webhook/{id}");
    let card = format!("{webhook}/card");
    let mode = integration.connection_mode();
    let receiving = match mode {
        ConnectionMode::Http => format!(
            "Robot page (机器人): message receiving mode HTTP, message receiving address {webhook}"
        ),
        ConnectionMode::Stream => {
            "Robot page (机器人): message receiving mode Stream (no URL needed)".to_owned()
        }
    };
    let steps = vec![
        receiving,
        format!(
            "Event subscription page (事件订阅): push over HTTP to {webhook}, with the same Token \
             and aes_key as this integration's callback_token and callback_aes_key"
        ),
        format!(
            "Permissions page (权限管理): grant {}",
            PERMISSIONS.map(|p| p.scope).join(" and ")
        ),
        "Publish a new version of the app (版本管理与发布) so the settings take effect".to_owned(),
    ];
    Report {
        ok: checks.iter().all(|c| c.status != Status::Failed),
        integration_id: id.to_owned(),
        webhook_url: webhook.clone(),
        checks,
        console: Console {
            connection_mode: mode,
            message_receiving_url: webhook.clone(),
            event_subscription_url: webhook,
            card_callback_url: card,
            permissions: PERMISSIONS.to_vec(),
            steps,
        },
    }
}

/// `credentials`: did the new API issue a token?
pub fn credentials(client_id: &str, api_url: &str, result: &Result<(), CallError>) -> Check {
    const NAME: &str = "credentials";
    match result {
        Ok(()) => Check::ok(
            NAME,
            format!("DingTalk issued an access token for client_id {client_id:?}."),
        ),
        Err(CallError::Status {
            status,
            code,
            message,
        }) => {
            let said = said(*status, code.as_deref(), message.as_deref());
            let words = format!(
                "{} {}",
                code.as_deref().unwrap_or(""),
                message.as_deref().unwrap_or("")
            );
            if is_throttled(&words) {
                Check::failed(
                    NAME,
                    format!("DingTalk is throttling this app ({said})."),
                    "Wait a minute and run the check again.",
                )
            } else if is_ip_blocked(&words) {
                Check::failed(
                    NAME,
                    format!("DingTalk refused this server's IP address ({said})."),
                    "Add the gateway's public egress IP to the app's IP allow-list in the \
                     developer console.",
                )
            } else if *status >= 500 {
                Check::failed(
                    NAME,
                    format!("DingTalk failed to answer ({said}); the problem is on its side."),
                    "Run the check again in a minute.",
                )
            } else {
                Check::failed(
                    NAME,
                    format!(
                        "DingTalk refused client_id {client_id:?} with this client_secret ({said})."
                    ),
                    FIX_CREDENTIALS,
                )
            }
        }
        Err(error) => transport_failure(NAME, "DINGTALK_API_URL", api_url, error),
    }
}

/// `contact_permission`: can the app read department members? `old_token` is the old API's
/// token request; `listed` the listsimple call, made only when that token came.
pub fn contact_permission(
    oapi_url: &str,
    credentials_ok: bool,
    old_token: Result<(), &CallError>,
    listed: Option<Result<(), CallError>>,
) -> Check {
    const NAME: &str = "contact_permission";
    if !credentials_ok {
        return Check::skipped(
            NAME,
            "Skipped: needs working credentials.",
            Some("Fix the credentials item first."),
        );
    }
    let result = match (old_token, listed) {
        (Err(CallError::ErrCode { errcode, errmsg }), _) => {
            return Check::failed(
                NAME,
                format!(
                    "The old API (gettoken) refused the credentials: errcode {errcode} ({errmsg})."
                ),
                FIX_CREDENTIALS,
            );
        }
        (Err(other), _) => return transport_failure(NAME, "DINGTALK_OAPI_URL", oapi_url, other),
        (Ok(()), None) => {
            return Check::skipped(NAME, "Skipped: no old-API token to call with.", None)
        }
        (Ok(()), Some(result)) => result,
    };
    match result {
        Ok(()) => Check::ok(
            NAME,
            "The app can read department members (a one-user topapi/user/listsimple of the root \
             department succeeded).",
        ),
        Err(CallError::ErrCode { errcode, errmsg }) => match errcode {
            60011 => Check::failed(
                NAME,
                format!(
                    "The app lacks the contact read permission: DingTalk answered errcode 60011 \
                     ({errmsg}) to topapi/user/listsimple."
                ),
                FIX_CONTACT_PERMISSION,
            ),
            50004 => Check::failed(
                NAME,
                format!(
                    "The root department is outside the app's contact scope: errcode 50004 \
                     ({errmsg})."
                ),
                "In the developer console set the app's contact permission scope (通讯录权限范围) \
                 to the whole organization, or at least to the departments of the people who \
                 will talk to the robot.",
            ),
            40014 => Check::failed(
                NAME,
                format!(
                    "DingTalk rejected the token it had just issued: errcode 40014 ({errmsg})."
                ),
                "Check that DINGTALK_API_URL and DINGTALK_OAPI_URL belong to the same DingTalk \
                 site, then run the check again.",
            ),
            60020 => Check::failed(
                NAME,
                format!("DingTalk refused this server's IP address: errcode 60020 ({errmsg})."),
                "Add the gateway's public egress IP to the app's IP allow-list in the developer \
                 console.",
            ),
            90002 | 90005 | 90006 | 90018 | 90019 => Check::failed(
                NAME,
                format!("DingTalk is throttling this app: errcode {errcode} ({errmsg})."),
                "Wait a minute and run the check again.",
            ),
            _ => Check::failed(
                NAME,
                format!(
                    "DingTalk answered errcode {errcode} ({errmsg}) to a one-user \
                     topapi/user/listsimple of department 1."
                ),
                "Look the errcode up in DingTalk's error code list; grant \
                 qyapi_get_department_member if it names a permission.",
            ),
        },
        Err(error) => transport_failure(NAME, "DINGTALK_OAPI_URL", oapi_url, &error),
    }
}

/// `robot_code`: which robot code the gateway sends with, and where it comes from.
pub fn robot_code(integration: &Integration) -> Check {
    const NAME: &str = "robot_code";
    let code = integration.robot_code();
    if code == integration.client_id() {
        Check::ok(
            NAME,
            format!(
                "robot_code is {code:?}, the AppKey, which is what DingTalk uses for an \
                 enterprise internal app's robot."
            ),
        )
    } else {
        Check::ok(
            NAME,
            format!(
                "robot_code is {code:?}, set explicitly; it must equal the RobotCode shown on the \
                 app's robot page."
            ),
        )
    }
}

/// `callback_crypto`: for HTTP callbacks, the token is set and the AES key decodes.
pub fn callback_crypto(integration: &Integration) -> Check {
    const NAME: &str = "callback_crypto";
    if integration.connection_mode() == ConnectionMode::Stream {
        return Check::skipped(
            NAME,
            "Skipped: connection_mode is \"stream\"; DingTalk delivers over the Stream \
             connection and does not sign callbacks.",
            None,
        );
    }
    if !integration.http_callback_enabled() {
        return Check::skipped(
            NAME,
            "Skipped: http_callback_enabled is false; the gateway accepts no HTTP callbacks for \
             this integration.",
            None,
        );
    }
    if integration.callback_token().is_none_or(Secret::is_empty) {
        return Check::failed(
            NAME,
            "callback_token is not set, so callbacks cannot be verified.",
            "Copy the Token from the event subscription page (事件订阅) into callback_token.",
        );
    }
    let Some(key) = integration.callback_aes_key() else {
        return Check::failed(
            NAME,
            "callback_aes_key is not set, so callbacks cannot be decrypted.",
            "Copy the aes_key (43 characters) from the event subscription page (事件订阅) into \
             callback_aes_key.",
        );
    };
    match AesKey::parse(key.expose()) {
        Ok(_) => Check::ok(
            NAME,
            "callback_token is set and callback_aes_key decodes to a 32-byte AES key.",
        ),
        Err(error) => Check::failed(
            NAME,
            format!("callback_aes_key is unusable: {error}."),
            "Copy the aes_key (43 characters) from the event subscription page (事件订阅) into \
             callback_aes_key, exactly as shown.",
        ),
    }
}

/// `webhook_url`: `PUBLIC_BASE_URL` must be an address DingTalk's servers can reach.
pub fn webhook_url(public_base_url: &str, id: &str) -> Check {
    const NAME: &str = "webhook_url";
    let url = format!("{public_base_url}/api/dingtalk/webhook/{id}");
    if let Some(host) = unreachable_host(public_base_url) {
        return Check::failed(
            NAME,
            format!("PUBLIC_BASE_URL points at {host}, which DingTalk's servers cannot reach."),
            "Set PUBLIC_BASE_URL to the public address of the ingress (e.g. \
             https://bot.example.com) and restart the ingress.",
        );
    }
    let mut message = format!("DingTalk must be able to reach {url} from the internet.");
    if public_base_url.starts_with("http://") {
        message.push_str(" It is plain http; prefer https.");
    }
    Check::ok(NAME, message)
}

/// The host of `base` when it is obviously not public: localhost, loopback, private,
/// link-local or unspecified addresses.
fn unreachable_host(base: &str) -> Option<String> {
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or(bracketed)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    let lower = host.to_ascii_lowercase();
    let local = lower == "localhost"
        || lower.ends_with(".localhost")
        || match lower.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => {
                ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
            }
            Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback() || ip.is_unspecified(),
            Err(_) => false,
        };
    local.then(|| host.to_owned())
}

/// A call that got no usable answer.
fn transport_failure(name: &'static str, var: &str, url: &str, error: &CallError) -> Check {
    match error {
        CallError::Unreachable { reason } => Check::failed(
            name,
            format!("Could not reach DingTalk at {url}: {reason}."),
            format!(
                "Check {var} and that the gateway can make outbound HTTPS requests (proxy, \
                 firewall, DNS)."
            ),
        ),
        CallError::Unexpected { what } => Check::failed(
            name,
            format!("DingTalk's answer from {url} was not understood: {what}."),
            format!("Check that {var} points at DingTalk itself, not at a proxy page."),
        ),
        CallError::Status {
            status,
            code,
            message,
        } => Check::failed(
            name,
            format!(
                "DingTalk at {url} answered {}.",
                said(*status, code.as_deref(), message.as_deref())
            ),
            "Run the check again in a minute; if it persists, check the credentials.",
        ),
        CallError::ErrCode { errcode, errmsg } => Check::failed(
            name,
            format!("DingTalk at {url} answered errcode {errcode} ({errmsg})."),
            FIX_CREDENTIALS,
        ),
    }
}

/// "HTTP 400, code X: message" from what DingTalk said.
fn said(status: u16, code: Option<&str>, message: Option<&str>) -> String {
    let mut text = format!("HTTP {status}");
    if let Some(code) = code {
        text.push_str(&format!(", code {code}"));
    }
    if let Some(message) = message {
        text.push_str(&format!(": {message}"));
    }
    text
}

/// §6.1: throttling shows as a code containing `QpsLimit`.
fn is_throttled(words: &str) -> bool {
    words.contains("QpsLimit")
}

/// §6.1: an IP allow-list refusal mentions the white list.
fn is_ip_blocked(words: &str) -> bool {
    words.to_ascii_lowercase().contains("whitelist")
        || words.to_ascii_lowercase().contains("white list")
}

/// Replaces any of the integration's secrets that DingTalk might have echoed back.
fn redact(mut check: Check, integration: &Integration) -> Check {
    let secrets = [
        Some(integration.client_secret()),
        integration.callback_token(),
        integration.callback_aes_key(),
    ];
    for secret in secrets.into_iter().flatten() {
        if secret.expose().len() >= 4 {
            check.message = check.message.replace(secret.expose(), &mask(secret));
            if let Some(fix) = &mut check.fix {
                *fix = fix.replace(secret.expose(), &mask(secret));
            }
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use common::registry::IntegrationSpec;
    use time::OffsetDateTime;

    use super::*;

    const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn integration(edit: impl FnOnce(&mut IntegrationSpec)) -> Integration {
        let mut spec = IntegrationSpec {
            id: "acme".into(),
            client_id: "dingkey".into(),
            client_secret: "the-app-secret-value".into(),
            callback_token: Some("tok".into()),
            callback_aes_key: Some(AES_KEY.into()),
            ..IntegrationSpec::default()
        };
        edit(&mut spec);
        spec.into_integration(OffsetDateTime::UNIX_EPOCH).unwrap()
    }

    #[test]
    fn issued_token_passes_the_credentials_item() {
        let check = credentials("dingkey", "https://api.dingtalk.com", &Ok(()));
        assert_eq!(check.status, Status::Ok);
        assert_eq!(check.fix, None);
    }

    #[test]
    fn refused_credentials_say_to_copy_them_again() {
        let refused = Err(CallError::Status {
            status: 400,
            code: Some("invalidClientSecret".into()),
            message: Some("bad secret".into()),
        });
        let check = credentials("dingkey", "https://api.dingtalk.com", &refused);
        assert_eq!(check.status, Status::Failed);
        assert_eq!(
            check.message,
            "DingTalk refused client_id \"dingkey\" with this client_secret (HTTP 400, code \
             invalidClientSecret: bad secret)."
        );
        assert!(check.fix.unwrap().contains("AppSecret"));
    }

    #[test]
    fn throttling_ip_bans_and_outages_are_told_apart() {
        let status = |status, code: &str| {
            let result = Err(CallError::Status {
                status,
                code: Some(code.into()),
                message: None,
            });
            credentials("k", "https://api.dingtalk.com", &result)
        };
        assert!(status(403, "Forbidden.AccessDenied.QpsLimitForApi")
            .message
            .contains("throttling"));
        assert!(status(403, "ip not in whitelist")
            .message
            .contains("IP address"));
        assert!(status(500, "systemError").message.contains("on its side"));
        let down = credentials(
            "k",
            "http://127.0.0.1:9",
            &Err(CallError::Unreachable {
                reason: "connection refused".into(),
            }),
        );
        assert_eq!(
            down.message,
            "Could not reach DingTalk at http://127.0.0.1:9: connection refused."
        );
        assert!(down.fix.unwrap().contains("DINGTALK_API_URL"));
    }

    #[test]
    fn errcode_60011_says_to_grant_the_department_member_permission() {
        let check = contact_permission(
            "https://oapi.dingtalk.com",
            true,
            Ok(()),
            Some(Err(CallError::ErrCode {
                errcode: 60011,
                errmsg: "no permission".into(),
            })),
        );
        assert_eq!(check.status, Status::Failed);
        assert!(check
            .fix
            .unwrap()
            .contains("grant qyapi_get_department_member"));
    }

    #[test]
    fn contact_permission_waits_for_credentials_and_reports_scope_errors() {
        let skipped = contact_permission("u", false, Ok(()), None);
        assert_eq!(skipped.status, Status::Skipped);
        let scope = contact_permission(
            "u",
            true,
            Ok(()),
            Some(Err(CallError::ErrCode {
                errcode: 50004,
                errmsg: "out of scope".into(),
            })),
        );
        assert!(scope.message.contains("50004"));
        let gettoken = CallError::ErrCode {
            errcode: 40089,
            errmsg: "invalid appkey".into(),
        };
        let refused = contact_permission("u", true, Err(&gettoken), None);
        assert!(refused.message.contains("gettoken"));
        let passed = contact_permission("u", true, Ok(()), Some(Ok(())));
        assert_eq!(passed.status, Status::Ok);
    }

    #[test]
    fn callback_crypto_applies_to_http_callbacks_only() {
        assert_eq!(callback_crypto(&integration(|_| {})).status, Status::Ok);
        let stream = integration(|s| s.connection_mode = Some("stream".into()));
        assert_eq!(callback_crypto(&stream).status, Status::Skipped);
        let off = integration(|s| s.http_callback_enabled = Some(false));
        assert_eq!(callback_crypto(&off).status, Status::Skipped);
    }

    #[test]
    fn robot_code_says_where_it_comes_from() {
        assert!(robot_code(&integration(|_| {}))
            .message
            .contains("the AppKey"));
        let explicit = integration(|s| s.robot_code = Some("dingrobot".into()));
        assert!(robot_code(&explicit).message.contains("set explicitly"));
    }

    #[test]
    fn local_public_base_urls_fail_the_webhook_item() {
        for base in [
            "http://localhost:8080",
            "https://127.0.0.1",
            "http://10.1.2.3:80",
            "http://192.168.0.4",
            "http://[::1]:8080",
            "http://api.localhost",
        ] {
            assert_eq!(webhook_url(base, "acme").status, Status::Failed, "{base}");
        }
        let public = webhook_url("https://bot.example.com", "acme");
        assert_eq!(public.status, Status::Ok);
        assert!(public
            .message
            .contains("https://bot.example.com/api/dingtalk/webhook/acme"));
        assert!(webhook_url("http://bot.example.com", "acme")
            .message
            .contains("prefer https"));
    }

    #[test]
    fn the_report_is_ok_when_nothing_failed_and_lists_console_settings() {
        let integration = integration(|_| {});
        let checks = vec![
            Check::ok("credentials", "fine"),
            Check::skipped("callback_crypto", "n/a", None),
        ];
        let report = report("https://bot.example.com", &integration, checks);
        assert!(report.ok);
        assert_eq!(
            report.console.card_callback_url,
            "https://bot.example.com/api/dingtalk/webhook/acme/card"
        );
        assert_eq!(report.console.permissions.len(), 2);
        let failing = super::report(
            "https://bot.example.com",
            &integration,
            vec![Check::failed("credentials", "no", "fix")],
        );
        assert!(!failing.ok);
    }

    #[test]
    fn echoed_secrets_are_masked() {
        let integration = integration(|_| {});
        let check = Check::failed("credentials", "bad the-app-secret-value", "fix");
        let check = redact(check, &integration);
        assert!(!check.message.contains("the-app-secret-value"));
    }
}
