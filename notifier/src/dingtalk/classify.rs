//! What a DingTalk answer means (PROTOCOL §6.1/§6.2), as a pure function of the endpoint, the
//! HTTP status and the body bytes.
//!
//! DingTalk has two error shapes — the new API answers non-2xx `{"code","message"}`, the old
//! API (and webhook robots) HTTP 200 `{"errcode","errmsg"}` — and throttles in several ways
//! (403 `*QpsLimit*`, 429, errcodes 90002/90005/90006/90018/90019, an IP-ban page). All of that
//! is decided here, once, into a [`Verdict`]; the retry policy works on verdicts only.

use std::time::Duration;

use serde_json::Value;

use super::api::{Api, Host};

/// How long DingTalk bans an egress IP that exceeded its budget (PROTOCOL §6.3/§6.4.2).
pub const IP_BAN: Duration = Duration::from_secs(5 * 60);
/// How long a custom robot stays throttled after `130101` (PROTOCOL §4.9: about 10 minutes).
pub const CUSTOM_ROBOT_BAN: Duration = Duration::from_secs(10 * 60);

/// Who an explicit ban window applies to, so every replica can honour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanScope {
    /// The limiter bucket of this call: (app, API), or the custom robot.
    Bucket,
    /// Every call from this egress IP.
    Ip,
}

/// An explicit "do not call again before" from DingTalk's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    /// Who must wait.
    pub scope: BanScope,
    /// How long.
    pub duration: Duration,
}

/// What one answer means, before the retry policy decides what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Success: the JSON body (old API: `errcode` was 0).
    Ok(Value),
    /// The access token was refused (expired, invalid): refresh and retry once.
    TokenInvalid {
        /// DingTalk's code and message.
        detail: String,
    },
    /// Throttled: back off and retry; `ban` when DingTalk named a window.
    Throttled {
        /// An explicit window to honour, if any.
        ban: Option<Ban>,
        /// DingTalk's code and message.
        detail: String,
    },
    /// A permission, scope or allow-list problem: a human must fix it.
    Permission {
        /// DingTalk's code.
        code: String,
        /// What to grant or fix.
        message: String,
    },
    /// The request was refused as such: do not retry.
    Rejected {
        /// DingTalk's code.
        code: String,
        /// DingTalk's message.
        message: String,
    },
    /// 5xx or `systemError`: retry only idempotent calls.
    Server {
        /// DingTalk's code or `http_<status>`.
        code: String,
        /// DingTalk's message.
        message: String,
    },
    /// The org's API quota is used up.
    QuotaExhausted {
        /// DingTalk's code and message.
        detail: String,
    },
}

/// Old-API errcodes that mean the token is invalid or expired (PROTOCOL §6.2).
const TOKEN_ERRCODES: [i64; 4] = [40014, 42001, 33001, 40001];
/// Old-API errcodes that mean throttling (PROTOCOL §6.2).
const THROTTLE_ERRCODES: [i64; 5] = [90002, 90005, 90006, 90018, 90019];

/// Classifies one answer. `now_ms` (wall clock) only serves "back off to the next minute"
/// for the per-minute limits 90005/90006.
pub fn classify(api: Api, status: u16, body: &[u8], now_ms: i64) -> Verdict {
    let json = serde_json::from_slice::<Value>(body).ok();
    if status == 429 {
        return throttled(None, format!("HTTP 429: {}", snippet(body)));
    }
    if (300..400).contains(&status) {
        // Redirects are not followed (the access token would go along); DingTalk sends none,
        // so one means the endpoint is misconfigured: waiting would not help.
        return Verdict::Rejected {
            code: format!("http_{status}"),
            message: "the DingTalk endpoint answered with a redirect, which is not followed; check DINGTALK_API_URL and DINGTALK_OAPI_URL".to_owned(),
        };
    }
    if let Some(Value::Object(fields)) = &json {
        if fields.contains_key("punish") {
            // The IP-ban answer: `{"status":1111,"wait":5,"source":"x5","punish":"deny"}`.
            return throttled(
                Some(Ban {
                    scope: BanScope::Ip,
                    duration: IP_BAN,
                }),
                format!("egress IP banned by DingTalk: {}", snippet(body)),
            );
        }
    }
    if status >= 500 {
        let (code, message) = match &json {
            Some(value) => new_api_code(value),
            None => (String::new(), snippet(body)),
        };
        let code = if code.is_empty() {
            format!("http_{status}")
        } else {
            code
        };
        return Verdict::Server { code, message };
    }
    match (api.host(), json) {
        (Host::New, Some(value)) if (200..300).contains(&status) => Verdict::Ok(value),
        (Host::New, None) if (200..300).contains(&status) && body.trim_ascii().is_empty() => {
            Verdict::Ok(Value::Null)
        }
        (Host::New, Some(value)) => new_api_error(api, status, &value),
        (Host::Old | Host::Webhook, Some(value)) => old_api(api, status, value, now_ms),
        // Not JSON: DingTalk's IP ban and gateway pages are HTML (PROTOCOL §6.3); treat as
        // throttling rather than guess.
        (_, None) => throttled(
            None,
            format!("unparsable answer (HTTP {status}): {}", snippet(body)),
        ),
    }
}

fn throttled(ban: Option<Ban>, detail: String) -> Verdict {
    Verdict::Throttled { ban, detail }
}

/// `code` and `message` of a new-API error body.
fn new_api_code(value: &Value) -> (String, String) {
    let text = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (text("code"), text("message"))
}

fn new_api_error(api: Api, status: u16, value: &Value) -> Verdict {
    let (code, message) = new_api_code(value);
    let code = if code.is_empty() {
        format!("http_{status}")
    } else {
        code
    };
    let lower = format!("{code} {message}").to_lowercase();
    if code.contains("QpsLimit") {
        throttled(None, format!("{code}: {message}"))
    } else if code.contains("ApiCountLimitForOrg") {
        Verdict::QuotaExhausted {
            detail: format!("{code}: {message}"),
        }
    } else if code == "InvalidAuthentication" || status == 401 {
        Verdict::TokenInvalid {
            detail: format!("{code}: {message}"),
        }
    } else if lower.contains("ip not in whitelist") || lower.contains("ipnotinwhitelist") {
        Verdict::Permission {
            code,
            message: format!(
                "{message}; add the gateway's egress IP to the app's allow-list in the DingTalk console"
            ),
        }
    } else if status == 403 && code.contains("Forbidden") {
        let scopes = value
            .pointer("/accessdenieddetail/requiredScopes")
            .and_then(Value::as_array)
            .map(|scopes| {
                scopes
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|scopes| !scopes.is_empty());
        let grant = match scopes {
            Some(scopes) => format!("grant the scope(s) {scopes}"),
            None => grant_hint(api),
        };
        Verdict::Permission {
            code,
            message: format!("{message}; {grant} to the app in the DingTalk console"),
        }
    } else if code == "systemError" || code == "system.error" {
        Verdict::Server { code, message }
    } else {
        Verdict::Rejected { code, message }
    }
}

fn old_api(api: Api, status: u16, value: Value, now_ms: i64) -> Verdict {
    let errcode = value.get("errcode").and_then(|code| {
        code.as_i64()
            .or_else(|| code.as_str().and_then(|text| text.parse().ok()))
    });
    let errmsg = value
        .get("errmsg")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(errcode) = errcode else {
        return if (200..300).contains(&status) {
            Verdict::Ok(value)
        } else {
            Verdict::Rejected {
                code: format!("http_{status}"),
                message: snippet(value.to_string().as_bytes()),
            }
        };
    };
    let detail = || format!("errcode {errcode}: {errmsg}");
    let code = errcode.to_string();
    match errcode {
        0 => Verdict::Ok(value),
        c if TOKEN_ERRCODES.contains(&c) => Verdict::TokenInvalid { detail: detail() },
        // 88 is both "invalid access_token" and "temporary ban" in the wild (PROTOCOL §6.2).
        88 if errmsg.to_lowercase().contains("token") => Verdict::TokenInvalid { detail: detail() },
        88 => throttled(None, detail()),
        90005 | 90006 => {
            // Per-minute limits: nothing helps before the next minute starts.
            let to_next_minute = 60_000 - now_ms.rem_euclid(60_000);
            let ms = u64::try_from(to_next_minute).unwrap_or(60_000);
            throttled(
                Some(Ban {
                    scope: BanScope::Bucket,
                    duration: Duration::from_millis(ms),
                }),
                detail(),
            )
        }
        c if THROTTLE_ERRCODES.contains(&c) => throttled(None, detail()),
        130101 if api == Api::CustomRobotSend => throttled(
            Some(Ban {
                scope: BanScope::Bucket,
                duration: CUSTOM_ROBOT_BAN,
            }),
            detail(),
        ),
        90020 => Verdict::QuotaExhausted { detail: detail() },
        60011 => Verdict::Permission {
            code,
            message: format!("{errmsg}; {} to the app in the DingTalk console", grant_hint(api)),
        },
        50004 => Verdict::Permission {
            code,
            message: format!(
                "{errmsg}; the department is outside the app's authorized scope: widen the app's contact visibility range in the DingTalk console"
            ),
        },
        60020 => Verdict::Permission {
            code,
            message: format!(
                "{errmsg}; add the gateway's egress IP to the app's allow-list in the DingTalk console"
            ),
        },
        -1 => Verdict::Server {
            code,
            message: errmsg,
        },
        _ => Verdict::Rejected {
            code,
            message: errmsg,
        },
    }
}

/// Which console permission an API needs (PROTOCOL §5), phrased as an instruction.
fn grant_hint(api: Api) -> String {
    let permission = match api {
        Api::ListSimple | Api::UserList => "qyapi_get_department_member (通讯录部门成员读权限)",
        Api::DeptListSub => "qyapi_get_department_list",
        Api::GetByUnionId => "qyapi_get_member",
        Api::BatchSend
        | Api::ReadStatus
        | Api::BatchRecall
        | Api::GroupSend
        | Api::GroupRecall
        | Api::CardSend
        | Api::CardUpdate
        | Api::MessageFileDownload => "qyapi_robot_sendmsg",
        _ => return format!("grant the permission {} needs", api.name()),
    };
    format!("grant the permission {permission}")
}

/// The start of a body for an error message: bounded, lossy UTF-8, one line.
fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let text = text.replace(['\n', '\r'], " ");
    if body.len() > MAX {
        format!("{text}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_699_999_990_000; // 10 s into a minute

    fn new(status: u16, body: Value) -> Verdict {
        classify(Api::GroupSend, status, body.to_string().as_bytes(), NOW)
    }

    fn old(api: Api, body: Value) -> Verdict {
        classify(api, 200, body.to_string().as_bytes(), NOW)
    }

    #[test]
    fn new_api_success_is_the_body() {
        assert_eq!(
            new(200, json!({"processQueryKey": "k"})),
            Verdict::Ok(json!({"processQueryKey": "k"}))
        );
        assert_eq!(
            classify(Api::CardInstanceUpdate, 200, b"", NOW),
            Verdict::Ok(Value::Null)
        );
    }

    #[test]
    fn invalid_token_is_400_invalid_authentication_or_401() {
        let verdict = new(
            400,
            json!({"code": "InvalidAuthentication", "message": "不合法的access_token"}),
        );
        assert!(
            matches!(verdict, Verdict::TokenInvalid { .. }),
            "{verdict:?}"
        );
        let verdict = new(401, json!({"code": "authFailed", "message": "鉴权失败"}));
        assert!(
            matches!(verdict, Verdict::TokenInvalid { .. }),
            "{verdict:?}"
        );
    }

    #[test]
    fn old_api_token_errcodes_ask_for_a_refresh() {
        for code in [40014, 42001, 33001, 40001] {
            let verdict = old(Api::ListSimple, json!({"errcode": code, "errmsg": "x"}));
            assert!(matches!(verdict, Verdict::TokenInvalid { .. }), "{code}");
        }
    }

    #[test]
    fn errcode_88_is_a_token_error_only_when_it_says_token() {
        let token = old(
            Api::ListSimple,
            json!({"errcode": 88, "errmsg": "invalid access_token"}),
        );
        assert!(matches!(token, Verdict::TokenInvalid { .. }));
        let ban = old(
            Api::ListSimple,
            json!({"errcode": 88, "errmsg": "temporarily banned"}),
        );
        assert!(matches!(ban, Verdict::Throttled { ban: None, .. }));
    }

    #[test]
    fn qps_limit_429_and_throttle_errcodes_are_throttling() {
        let verdict = new(
            403,
            json!({"code": "Forbidden.AccessDenied.QpsLimitForApi", "message": "too fast"}),
        );
        assert!(matches!(verdict, Verdict::Throttled { ban: None, .. }));
        assert!(matches!(
            classify(Api::GroupSend, 429, b"", NOW),
            Verdict::Throttled { .. }
        ));
        for code in [90002, 90018, 90019] {
            let verdict = old(Api::UserList, json!({"errcode": code, "errmsg": "limit"}));
            assert!(
                matches!(verdict, Verdict::Throttled { ban: None, .. }),
                "{code}"
            );
        }
    }

    #[test]
    fn per_minute_limits_wait_for_the_next_minute() {
        for code in [90005, 90006] {
            assert_eq!(
                old(Api::UserList, json!({"errcode": code, "errmsg": "minute"})),
                Verdict::Throttled {
                    ban: Some(Ban {
                        scope: BanScope::Bucket,
                        duration: Duration::from_secs(50)
                    }),
                    detail: format!("errcode {code}: minute"),
                }
            );
        }
    }

    #[test]
    fn html_and_punish_bodies_are_throttling_and_punish_bans_the_ip() {
        let html = classify(
            Api::GroupSend,
            403,
            b"<html><body>denied</body></html>",
            NOW,
        );
        assert!(
            matches!(html, Verdict::Throttled { ban: None, .. }),
            "{html:?}"
        );
        let html_old = classify(Api::ListSimple, 200, b"<html>", NOW);
        assert!(matches!(html_old, Verdict::Throttled { ban: None, .. }));
        let punish = classify(
            Api::ListSimple,
            200,
            br#"{"status":1111,"wait":5,"source":"x5","punish":"deny"}"#,
            NOW,
        );
        assert!(matches!(
            punish,
            Verdict::Throttled {
                ban: Some(Ban {
                    scope: BanScope::Ip,
                    duration: IP_BAN
                }),
                ..
            }
        ));
    }

    #[test]
    fn quota_exhausted_in_both_shapes() {
        assert!(matches!(
            old(
                Api::ListSimple,
                json!({"errcode": 90020, "errmsg": "quota"})
            ),
            Verdict::QuotaExhausted { .. }
        ));
        assert!(matches!(
            new(
                403,
                json!({"code": "Forbidden.AccessDenied.ApiCountLimitForOrg", "message": "m"})
            ),
            Verdict::QuotaExhausted { .. }
        ));
    }

    #[test]
    fn permission_60011_names_the_permission_to_grant() {
        let Verdict::Permission { code, message } = old(
            Api::ListSimple,
            json!({"errcode": 60011, "errmsg": "no permission to call this API"}),
        ) else {
            panic!("not a permission verdict");
        };
        assert_eq!(code, "60011");
        assert!(message.contains("qyapi_get_department_member"), "{message}");
        let Verdict::Permission { message, .. } = old(
            Api::GetByUnionId,
            json!({"errcode": 60011, "errmsg": "no permission"}),
        ) else {
            panic!("not a permission verdict");
        };
        assert!(message.contains("qyapi_get_member"), "{message}");
    }

    #[test]
    fn new_api_permission_denied_names_the_required_scopes() {
        let Verdict::Permission { code, message } = new(
            403,
            json!({"code": "Forbidden.AccessDenied.AccessTokenPermissionDenied",
                   "message": "no permission",
                   "accessdenieddetail": {"requiredScopes": ["Contact.User.Read"]}}),
        ) else {
            panic!("not a permission verdict");
        };
        assert_eq!(code, "Forbidden.AccessDenied.AccessTokenPermissionDenied");
        assert!(message.contains("Contact.User.Read"), "{message}");
        let Verdict::Permission { message, .. } = new(
            403,
            json!({"code": "Forbidden.AccessDenied.AccessTokenPermissionDenied", "message": "m"}),
        ) else {
            panic!("not a permission verdict");
        };
        assert!(message.contains("qyapi_robot_sendmsg"), "{message}");
    }

    #[test]
    fn scope_and_allow_list_errors_are_permission_problems() {
        for code in [50004, 60020] {
            let verdict = old(Api::ListSimple, json!({"errcode": code, "errmsg": "m"}));
            assert!(matches!(verdict, Verdict::Permission { .. }), "{code}");
        }
        let verdict = new(
            403,
            json!({"code": "Forbidden", "message": "ip not in whitelist"}),
        );
        assert!(matches!(verdict, Verdict::Permission { .. }), "{verdict:?}");
        let verdict = new(
            403,
            json!({"code": "Forbidden.AccessDenied.IpNotInWhiteList", "message": "m"}),
        );
        let Verdict::Permission { message, .. } = verdict else {
            panic!("not a permission verdict");
        };
        assert!(message.contains("allow-list"), "{message}");
    }

    #[test]
    fn server_errors_are_5xx_system_error_and_minus_one() {
        assert_eq!(
            classify(Api::GroupSend, 500, b"oops", NOW),
            Verdict::Server {
                code: "http_500".into(),
                message: "oops".into()
            }
        );
        assert!(matches!(
            new(400, json!({"code": "systemError", "message": "系统错误"})),
            Verdict::Server { .. }
        ));
        assert!(matches!(
            old(Api::ListSimple, json!({"errcode": -1, "errmsg": "busy"})),
            Verdict::Server { .. }
        ));
        // An HTML 502 from a proxy is a server error, not an IP ban.
        assert!(matches!(
            classify(Api::ListSimple, 502, b"<html>bad gateway</html>", NOW),
            Verdict::Server { .. }
        ));
    }

    #[test]
    fn parameter_errors_are_rejected() {
        assert_eq!(
            new(
                400,
                json!({"code": "MissingrobotCode", "message": "robotCode is mandatory"})
            ),
            Verdict::Rejected {
                code: "MissingrobotCode".into(),
                message: "robotCode is mandatory".into()
            }
        );
        assert!(matches!(
            old(Api::ListSimple, json!({"errcode": 40035, "errmsg": "bad"})),
            Verdict::Rejected { .. }
        ));
    }

    #[test]
    fn custom_robot_answers() {
        let robot = |code: i64| {
            old(
                Api::CustomRobotSend,
                json!({"errcode": code, "errmsg": "m"}),
            )
        };
        assert_eq!(robot(0), Verdict::Ok(json!({"errcode": 0, "errmsg": "m"})));
        assert!(matches!(
            robot(130101),
            Verdict::Throttled {
                ban: Some(Ban {
                    scope: BanScope::Bucket,
                    duration: CUSTOM_ROBOT_BAN
                }),
                ..
            }
        ));
        for code in [310000, 460101, 300001, 400402] {
            assert!(matches!(robot(code), Verdict::Rejected { .. }), "{code}");
        }
    }

    #[test]
    fn session_webhook_uses_the_old_shape() {
        assert!(matches!(
            classify(
                Api::SessionWebhookSend,
                200,
                br#"{"errcode":0,"errmsg":"ok"}"#,
                NOW
            ),
            Verdict::Ok(_)
        ));
        assert!(matches!(
            classify(
                Api::SessionWebhookSend,
                200,
                br#"{"errcode":300001,"errmsg":"no"}"#,
                NOW
            ),
            Verdict::Rejected { .. }
        ));
    }

    #[test]
    fn long_bodies_are_cut_in_messages() {
        let body = vec![b'x'; 1000];
        let Verdict::Server { message, .. } = classify(Api::GroupSend, 503, &body, NOW) else {
            panic!("not a server verdict");
        };
        assert!(message.chars().count() <= 201, "{}", message.len());
    }
}
