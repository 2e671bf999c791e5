//! Building the one [`CommandResult`] of a command from its per-recipient outcomes (pure), and
//! deciding which results are dead letters.

use std::collections::BTreeMap;

use common::bus::command::{OpKind, Recipient};
use common::bus::result::{CommandResult, ResultError, Status, TargetResult};
use common::bus::{Timestamp, V1};

use crate::records::Delivered;

/// Who a result is about: the command's id, integration and op as far as they are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The command id (or its fallback).
    pub command_id: String,
    /// The integration token.
    pub integration_id: String,
    /// The op, when known.
    pub op: Option<OpKind>,
}

/// A result that failed as a whole, before or without per-recipient outcomes.
pub fn failed(subject: &Subject, error: ResultError) -> CommandResult {
    CommandResult {
        v: V1,
        command_id: subject.command_id.clone(),
        integration_id: subject.integration_id.clone(),
        op: subject.op,
        status: Status::Failed,
        process_query_key: None,
        card_biz_id: None,
        targets: Vec::new(),
        degraded: false,
        error: Some(error),
        finished_at: Timestamp::now(),
    }
}

/// The result of an update replaced by a newer update of the same target.
pub fn superseded(subject: &Subject, newer_sequence: u64) -> CommandResult {
    let mut result = failed(
        subject,
        ResultError {
            code: "superseded".to_owned(),
            message: format!(
                "a newer update of the same target (stream sequence {newer_sequence}) replaced this one before it was applied"
            ),
            retryable: false,
        },
    );
    result.status = Status::Superseded;
    result.error = None;
    result
}

/// The result of a command that ran: one target per recipient, in the command's order.
/// `ok` when at least one recipient was reached; otherwise `failed` with the first recipient's
/// error (retryable when any recipient's error is).
pub fn assemble(
    subject: &Subject,
    recipients: &[Recipient],
    outcomes: &BTreeMap<usize, Result<Delivered, ResultError>>,
    degraded: bool,
) -> CommandResult {
    let missing = || ResultError {
        code: "internal".to_owned(),
        message: "the notifier recorded no outcome for this recipient".to_owned(),
        retryable: true,
    };
    let targets: Vec<TargetResult> = recipients
        .iter()
        .enumerate()
        .map(|(i, recipient)| match outcomes.get(&i) {
            Some(Ok(delivered)) => {
                let (process_query_key, card_biz_id) = ids_of(delivered);
                TargetResult {
                    recipient: recipient.clone(),
                    ok: true,
                    process_query_key,
                    card_biz_id,
                    error: None,
                }
            }
            Some(Err(error)) => TargetResult {
                recipient: recipient.clone(),
                ok: false,
                process_query_key: None,
                card_biz_id: None,
                error: Some(error.clone()),
            },
            None => TargetResult {
                recipient: recipient.clone(),
                ok: false,
                process_query_key: None,
                card_biz_id: None,
                error: Some(missing()),
            },
        })
        .collect();
    let delivered: Vec<&Delivered> = outcomes.values().filter_map(|o| o.as_ref().ok()).collect();
    let process_query_key = delivered.iter().find_map(|d| ids_of(d).0);
    let card_biz_id = delivered.iter().find_map(|d| ids_of(d).1);
    let any_ok = targets.iter().any(|t| t.ok);
    let error = (!any_ok).then(|| {
        let errors: Vec<&ResultError> = targets.iter().filter_map(|t| t.error.as_ref()).collect();
        match errors.first() {
            Some(first) => ResultError {
                code: first.code.clone(),
                message: if targets.len() == 1 {
                    first.message.clone()
                } else {
                    format!(
                        "no recipient was reached; the first failed with: {}",
                        first.message
                    )
                },
                retryable: errors.iter().any(|e| e.retryable),
            },
            None => ResultError {
                code: "no_recipients".to_owned(),
                message: "the command had no recipient to reach".to_owned(),
                retryable: false,
            },
        }
    });
    CommandResult {
        v: V1,
        command_id: subject.command_id.clone(),
        integration_id: subject.integration_id.clone(),
        op: subject.op,
        status: if any_ok { Status::Ok } else { Status::Failed },
        process_query_key,
        card_biz_id,
        targets,
        degraded,
        error,
        finished_at: Timestamp::now(),
    }
}

/// DingTalk's ids of one delivery: its `processQueryKey` and its card id, where it has them.
fn ids_of(delivered: &Delivered) -> (Option<String>, Option<String>) {
    match delivered {
        Delivered::OneToOne { process_query_key }
        | Delivered::Group {
            process_query_key, ..
        } => (Some(process_query_key.clone()), None),
        Delivered::StandardCard {
            card_biz_id,
            process_query_key,
            ..
        } => (process_query_key.clone(), Some(card_biz_id.clone())),
        Delivered::TemplateCard { out_track_id } => (None, Some(out_track_id.clone())),
        Delivered::CustomRobot | Delivered::SessionWebhook => (None, None),
    }
}

/// The `Dingtalk-Reason` of a result that is a permanent failure (failed, not retryable);
/// `None` for everything else. Partial failures of an `ok` result are not dead letters.
pub fn dead_letter_reason(result: &CommandResult) -> Option<String> {
    match (&result.status, &result.error) {
        (Status::Failed, Some(error)) if !error.retryable => {
            Some(format!("{}: {}", error.code, error.message))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::bus::command::RecipientType;

    fn subject() -> Subject {
        Subject {
            command_id: "c1".into(),
            integration_id: "acme".into(),
            op: Some(OpKind::Send),
        }
    }

    fn recipient(id: &str) -> Recipient {
        Recipient {
            kind: RecipientType::UserId,
            id: id.into(),
        }
    }

    fn error(code: &str, retryable: bool) -> ResultError {
        ResultError {
            code: code.into(),
            message: format!("{code} happened"),
            retryable,
        }
    }

    #[test]
    fn one_reached_recipient_makes_the_command_ok_with_per_target_failures() {
        let mut outcomes = BTreeMap::new();
        outcomes.insert(
            0,
            Ok(Delivered::OneToOne {
                process_query_key: "k1".into(),
            }),
        );
        outcomes.insert(1, Err(error("invalidStaffIdList", false)));
        let result = assemble(
            &subject(),
            &[recipient("u1"), recipient("bad")],
            &outcomes,
            false,
        );
        assert_eq!(result.status, Status::Ok);
        assert_eq!(result.process_query_key.as_deref(), Some("k1"));
        assert!(result.targets[0].ok);
        assert_eq!(
            result.targets[1].error.as_ref().unwrap().code,
            "invalidStaffIdList"
        );
        assert!(result.error.is_none());
        assert!(dead_letter_reason(&result).is_none());
    }

    #[test]
    fn no_reached_recipient_fails_the_command_with_the_first_error() {
        let mut outcomes = BTreeMap::new();
        outcomes.insert(0, Err(error("60011", false)));
        outcomes.insert(1, Err(error("outcome_unknown", true)));
        let result = assemble(
            &subject(),
            &[recipient("a"), recipient("b")],
            &outcomes,
            false,
        );
        assert_eq!(result.status, Status::Failed);
        let err = result.error.as_ref().unwrap();
        assert_eq!(err.code, "60011");
        assert!(err.retryable);
        assert!(dead_letter_reason(&result).is_none());
    }

    #[test]
    fn permanent_failures_are_dead_letters_and_superseded_updates_are_not() {
        let result = failed(&subject(), error("malformed", false));
        assert_eq!(
            dead_letter_reason(&result).unwrap(),
            "malformed: malformed happened"
        );
        let result = superseded(&subject(), 9);
        assert_eq!(result.status, Status::Superseded);
        assert!(dead_letter_reason(&result).is_none());
    }

    #[test]
    fn card_sends_report_their_card_biz_id() {
        let mut outcomes = BTreeMap::new();
        outcomes.insert(
            0,
            Ok(Delivered::StandardCard {
                card_biz_id: "c1".into(),
                chat_id: None,
                process_query_key: Some("k".into()),
            }),
        );
        let result = assemble(&subject(), &[recipient("u1")], &outcomes, false);
        assert_eq!(result.card_biz_id.as_deref(), Some("c1"));
        assert_eq!(result.process_query_key.as_deref(), Some("k"));
    }

    #[test]
    fn each_target_names_the_card_and_message_it_got() {
        let card = |id: &str, key: &str| {
            Ok(Delivered::StandardCard {
                card_biz_id: id.into(),
                chat_id: None,
                process_query_key: Some(key.into()),
            })
        };
        let mut outcomes = BTreeMap::new();
        outcomes.insert(0, card("c1", "k0"));
        outcomes.insert(1, card("c1:1", "k1"));
        outcomes.insert(2, Err(error("invalidStaffIdList", false)));
        outcomes.insert(3, Ok(Delivered::CustomRobot));
        let result = assemble(
            &subject(),
            &[
                recipient("u1"),
                recipient("u2"),
                recipient("bad"),
                recipient("hook"),
            ],
            &outcomes,
            false,
        );
        let ids: Vec<(Option<&str>, Option<&str>)> = result
            .targets
            .iter()
            .map(|t| (t.card_biz_id.as_deref(), t.process_query_key.as_deref()))
            .collect();
        assert_eq!(
            ids,
            [
                (Some("c1"), Some("k0")),
                (Some("c1:1"), Some("k1")),
                (None, None),
                (None, None)
            ]
        );
        assert_eq!(result.card_biz_id.as_deref(), Some("c1"));
    }
}
