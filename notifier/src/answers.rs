//! Reading DingTalk's answers into per-recipient outcomes, and client errors into result errors
//! (pure). DingTalk's codes stay visible (`60011`, `invalidStaffIdList`) so callers can search
//! them; our own codes are snake_case words.

use std::collections::{HashMap, HashSet};

use common::bus::result::ResultError;
use serde_json::Value;

use crate::dingtalk::DingTalkError;

/// The permission DingTalk's 60011 means for the contact APIs (PROTOCOL §5).
pub const CONTACT_PERMISSION: &str = "qyapi_get_department_member";

/// What one batchSend answer says about each userId it was given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchAnswer {
    /// DingTalk's id of the sent message.
    pub process_query_key: Option<String>,
    /// Ids DingTalk does not know (per-recipient failures).
    pub invalid: HashSet<String>,
    /// Ids held back by flow control (to be retried).
    pub flow_controlled: HashSet<String>,
    /// Ids DingTalk filtered out (per-recipient failures).
    pub filtered: HashSet<String>,
}

impl BatchAnswer {
    /// Reads `{processQueryKey, invalidStaffIdList, flowControlledStaffIdList, filteredStaffIdList}`.
    pub fn parse(answer: &Value) -> Self {
        let set = |field: &str| -> HashSet<String> {
            answer
                .get(field)
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            process_query_key: process_query_key(answer),
            invalid: set("invalidStaffIdList"),
            flow_controlled: set("flowControlledStaffIdList"),
            filtered: set("filteredStaffIdList"),
        }
    }

    /// The error of one id, `None` when it was delivered or is to be retried.
    pub fn error_of(&self, id: &str) -> Option<ResultError> {
        if self.invalid.contains(id) {
            Some(ResultError {
                code: "invalidStaffIdList".to_owned(),
                message: format!("DingTalk does not know the userId {id:?} in this organization"),
                retryable: false,
            })
        } else if self.filtered.contains(id) {
            Some(ResultError {
                code: "filteredStaffIdList".to_owned(),
                message: format!(
                    "DingTalk filtered {id:?} out (no 1:1 session with the robot, or a per-user cap)"
                ),
                retryable: false,
            })
        } else {
            None
        }
    }
}

/// `processQueryKey`, at the top level or inside `result` (template card answers).
pub fn process_query_key(answer: &Value) -> Option<String> {
    answer
        .get("processQueryKey")
        .or_else(|| answer.pointer("/result/processQueryKey"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The per-space outcome of a card instance delivery: `spaceId` → error message (when failed).
pub fn deliver_results(answer: &Value) -> HashMap<String, Option<String>> {
    let items = answer.get("result").and_then(|r| {
        r.as_array()
            .or_else(|| r.get("deliverResults").and_then(Value::as_array))
    });
    items
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let space = item.get("spaceId")?.as_str()?.to_owned();
            let ok = item
                .get("success")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let error = (!ok).then(|| {
                item.get("errorMsg")
                    .and_then(Value::as_str)
                    .unwrap_or("DingTalk did not deliver the card here")
                    .to_owned()
            });
            Some((space, error))
        })
        .collect()
}

/// The keys a recall could not withdraw, with DingTalk's reason. A message DingTalk reports as
/// already recalled is withdrawn, which is what was asked: a recall retried after a lost
/// answer, or a second recall of the same send, finds it so.
pub fn recall_failures(answer: &Value) -> HashMap<String, String> {
    answer
        .get("failedResult")
        .and_then(Value::as_object)
        .map(|failed| {
            failed
                .iter()
                .map(|(key, reason)| {
                    let reason = reason
                        .as_str()
                        .map_or_else(|| reason.to_string(), str::to_owned);
                    (key.clone(), reason)
                })
                .filter(|(_, reason)| !already_recalled(reason))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a recall failure's reason says the message was recalled before.
fn already_recalled(reason: &str) -> bool {
    let lower = reason.to_lowercase();
    lower.contains("already recalled")
        || lower.contains("recalled already")
        || reason.contains("已撤回")
}

/// A client error as a result error, with the action that would fix it.
pub fn result_error(error: &DingTalkError) -> ResultError {
    let code = error.code();
    let message = match error {
        DingTalkError::Permission { code, message } if code == "60011" => format!(
            "the app lacks an API permission ({message}); grant it in the DingTalk developer console"
        ),
        DingTalkError::Permission { message, .. } => format!(
            "DingTalk refused for lack of permission: {message}; check the app's permissions and scopes"
        ),
        DingTalkError::Rejected { message, .. } => format!("DingTalk rejected the request: {message}"),
        DingTalkError::Server { message, .. } => format!(
            "DingTalk failed ({message}); the outcome is unknown, so it was not re-sent blindly"
        ),
        DingTalkError::Unknown { detail } => {
            format!("no usable answer from DingTalk ({detail}); the outcome is unknown")
        }
        DingTalkError::Throttled { detail, .. } => format!("DingTalk kept throttling: {detail}"),
        DingTalkError::Unavailable { detail, .. } => {
            format!("nothing was sent: {detail}; it is safe to try again")
        }
        DingTalkError::TokenInvalid { detail } => format!(
            "DingTalk refused the access token even after a refresh ({detail}); check the app's credentials"
        ),
        DingTalkError::QuotaExhausted { detail } => format!(
            "the organization's monthly API quota is spent ({detail}); calls resume next month or with a higher edition"
        ),
    };
    ResultError {
        code,
        message,
        retryable: error.retryable(),
    }
}

/// A query error for a client error: a 60011 names the contact permission to grant.
pub fn contact_error(error: &DingTalkError) -> (String, String) {
    match error {
        DingTalkError::Permission { code, message } if code == "60011" => (
            "60011".to_owned(),
            format!(
                "the app lacks the permission {CONTACT_PERMISSION}; grant it in the DingTalk developer console ({message})"
            ),
        ),
        other => {
            let error = result_error(other);
            (error.code, error.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batch_answers_sort_ids_into_invalid_and_flow_controlled() {
        let answer = BatchAnswer::parse(&json!({
            "processQueryKey": "pqk1",
            "invalidStaffIdList": ["bad"],
            "flowControlledStaffIdList": ["slow"],
            "filteredStaffIdList": []
        }));
        assert_eq!(answer.process_query_key.as_deref(), Some("pqk1"));
        assert_eq!(answer.error_of("bad").unwrap().code, "invalidStaffIdList");
        assert!(answer.error_of("slow").is_none());
        assert!(answer.flow_controlled.contains("slow"));
        assert!(answer.error_of("ok").is_none());
    }

    #[test]
    fn deliver_results_are_per_space() {
        let results = deliver_results(&json!({"success": true, "result": [
            {"spaceType": "IM_GROUP", "spaceId": "cid1", "success": true},
            {"spaceType": "IM_ROBOT", "spaceId": "u9", "success": false, "errorMsg": "no such user"}
        ]}));
        assert_eq!(results["cid1"], None);
        assert_eq!(results["u9"].as_deref(), Some("no such user"));
    }

    #[test]
    fn recall_failures_map_keys_to_reasons() {
        let failed = recall_failures(&json!({"successResult": ["a"], "failedResult": {
            "b": "no such message", "c": "message already recalled", "d": "消息已撤回"
        }}));
        assert_eq!(failed.len(), 1, "already recalled is withdrawn: {failed:?}");
        assert_eq!(failed["b"], "no such message");
    }

    #[test]
    fn a_60011_names_the_missing_contact_permission() {
        let (code, message) = contact_error(&DingTalkError::Permission {
            code: "60011".into(),
            message: "no permission".into(),
        });
        assert_eq!(code, "60011");
        assert!(message.contains("qyapi_get_department_member"), "{message}");
    }
}
