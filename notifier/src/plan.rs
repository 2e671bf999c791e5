//! Which DingTalk calls a send makes (pure): recipients × content → [`Step`]s.
//!
//! - `user_id` → 1:1 `batchSend`, at most 20 ids per call ([`MAX_USER_IDS`]);
//! - `open_id` → `batchSend` with `openIds` ([`Action::OpenIdBatchSend`], UNVERIFIED);
//! - `chat_id` → group send;
//! - cards (interactive, or text/markdown that is updatable or mentions someone) → one
//!   StandardCard per recipient, the first with `cardBizId` = the command id;
//! - template cards → one card instance (`outTrackId` = the command id) delivered to every
//!   user and group recipient at once;
//! - `webhook` / `session_webhook` → classic robot bodies (text and markdown only).
//!
//! `union_id` recipients reach the planner already resolved to userIds. A recipient the content
//! cannot reach (a card to a webhook, a file to a session webhook…) fails alone, with a message
//! saying which combination is unsupported.

use std::collections::HashMap;

use common::bus::command::{Mentions, RecipientType};
use common::bus::result::ResultError;
use serde_json::{Map, Value};

use crate::content::{Content, RobotMessage, CUSTOM_ROBOT_MAX_BODY_BYTES};

/// At most this many userIds per batchSend (PROTOCOL §4.2).
pub const MAX_USER_IDS: usize = 20;

/// A recipient as the planner sees it: its kind and id, placeholders filled and unionIds
/// resolved (then the kind is [`RecipientType::UserId`]).
pub type Resolved = (RecipientType, String);

/// One DingTalk action and the recipients (indices into the command's list) it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Indices of the recipients whose outcome this step decides.
    pub targets: Vec<usize>,
    /// What to call.
    pub action: Action,
}

/// Where a StandardCard goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardReceiver {
    /// The 1:1 chat with this userId.
    User(String),
    /// This group (openConversationId).
    Group(String),
}

/// One delivery space of a template card, in the order of [`Step::targets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Space {
    /// `IM_ROBOT.<userId>`.
    Robot(String),
    /// `IM_GROUP.<openConversationId>`.
    Group(String),
}

/// One thing to ask DingTalk.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `oToMessages/batchSend` to up to 20 distinct userIds.
    BatchSend {
        /// The userIds.
        user_ids: Vec<String>,
        /// What to send.
        message: RobotMessage,
    },
    /// `oToMessages/batchSend` with `openIds` instead of `userIds`.
    OpenIdBatchSend {
        /// The openIds.
        open_ids: Vec<String>,
        /// What to send.
        message: RobotMessage,
    },
    /// `groupMessages/send`.
    GroupSend {
        /// The openConversationId.
        chat_id: String,
        /// What to send.
        message: RobotMessage,
    },
    /// A StandardCard.
    CardSend {
        /// The card's id for later updates.
        card_biz_id: String,
        /// Where it goes.
        receiver: CardReceiver,
        /// `cardData` (an object; JSON-encoded on the wire).
        card_data: Value,
        /// @-mentions (groups only).
        mentions: Mentions,
    },
    /// A template card instance, created then delivered to every space.
    TemplateCard {
        /// `outTrackId`.
        out_track_id: String,
        /// `cardTemplateId`.
        template_id: String,
        /// `cardParamMap`.
        params: Map<String, Value>,
        /// Where it goes, one per target.
        spaces: Vec<Space>,
        /// @-mentions in the group spaces.
        mentions: Mentions,
    },
    /// A custom group robot (webhook), one call per body.
    CustomRobot {
        /// The robot's access token.
        access_token: String,
        /// The bodies, each within 20,000 bytes.
        bodies: Vec<Value>,
    },
    /// A session webhook, one call per body.
    SessionWebhook {
        /// The webhook URL (checked to be DingTalk's).
        url: String,
        /// The bodies.
        bodies: Vec<Value>,
    },
}

/// The steps of a send, and the recipients that fail before any call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// What to call, in order.
    pub steps: Vec<Step>,
    /// Recipients the content cannot reach, with why.
    pub unsupported: Vec<(usize, ResultError)>,
}

/// The `cardBizId` of the `n`-th card of a command: the command id itself for the first (so a
/// single-recipient card is addressable by the command id), `{id}:{n}` after it.
pub fn card_biz_id(command_id: &str, n: usize) -> String {
    if n == 0 {
        command_id.to_owned()
    } else {
        format!("{command_id}:{n}")
    }
}

/// Plans a send. `recipients[i]` is `None` when recipient `i` already failed (e.g. its unionId
/// did not resolve).
pub fn plan_send(
    command_id: &str,
    recipients: &[Option<Resolved>],
    content: &Content,
    mentions: &Mentions,
) -> Plan {
    let mut plan = Plan::default();
    let robot = content.robot_message();
    let mut users = Unique::default();
    let mut open_ids = Unique::default();
    let mut template_spaces: Vec<(usize, Space)> = Vec::new();
    let mut cards = 0;
    for (index, recipient) in recipients.iter().enumerate() {
        let Some((kind, id)) = recipient else {
            continue;
        };
        let mut unsupported = |what: &str| {
            plan.unsupported
                .push((index, unsupported(content, kind, what)));
        };
        match kind {
            RecipientType::UserId | RecipientType::UnionId | RecipientType::ChatId => {
                let group = *kind == RecipientType::ChatId;
                if let Content::Template { .. } = content {
                    let space = if group {
                        Space::Group(id.clone())
                    } else {
                        Space::Robot(id.clone())
                    };
                    template_spaces.push((index, space));
                } else if let Some(card_data) = content.standard_card() {
                    let receiver = if group {
                        CardReceiver::Group(id.clone())
                    } else {
                        CardReceiver::User(id.clone())
                    };
                    plan.steps.push(Step {
                        targets: vec![index],
                        action: Action::CardSend {
                            card_biz_id: card_biz_id(command_id, cards),
                            receiver,
                            card_data,
                            mentions: if group {
                                mentions.clone()
                            } else {
                                Mentions::default()
                            },
                        },
                    });
                    cards += 1;
                } else if let Some(message) = &robot {
                    if group {
                        plan.steps.push(Step {
                            targets: vec![index],
                            action: Action::GroupSend {
                                chat_id: id.clone(),
                                message: message.clone(),
                            },
                        });
                    } else {
                        users.add(index, id);
                    }
                } else {
                    unsupported("this message");
                }
            }
            RecipientType::OpenId => match &robot {
                Some(_) => open_ids.add(index, id),
                None => unsupported("cards; only plain robot messages are sent to openIds"),
            },
            RecipientType::Webhook | RecipientType::SessionWebhook => {
                let bodies = content.classic_bodies(mentions, CUSTOM_ROBOT_MAX_BODY_BYTES);
                match bodies {
                    Some(bodies) if *kind == RecipientType::Webhook => plan.steps.push(Step {
                        targets: vec![index],
                        action: Action::CustomRobot {
                            access_token: id.clone(),
                            bodies,
                        },
                    }),
                    Some(bodies) => plan.steps.push(Step {
                        targets: vec![index],
                        action: Action::SessionWebhook {
                            url: id.clone(),
                            bodies,
                        },
                    }),
                    None => unsupported("anything but text and markdown"),
                }
            }
        }
    }
    if let Some(message) = &robot {
        for (targets, user_ids) in users.chunks() {
            plan.steps.push(Step {
                targets,
                action: Action::BatchSend {
                    user_ids,
                    message: message.clone(),
                },
            });
        }
        for (targets, open_ids) in open_ids.chunks() {
            plan.steps.push(Step {
                targets,
                action: Action::OpenIdBatchSend {
                    open_ids,
                    message: message.clone(),
                },
            });
        }
    }
    if let Content::Template {
        template_id,
        params,
    } = content
    {
        if !template_spaces.is_empty() {
            plan.steps.push(Step {
                targets: template_spaces.iter().map(|(i, _)| *i).collect(),
                action: Action::TemplateCard {
                    out_track_id: command_id.to_owned(),
                    template_id: template_id.clone(),
                    params: params.clone(),
                    spaces: template_spaces.into_iter().map(|(_, s)| s).collect(),
                    mentions: mentions.clone(),
                },
            });
        }
    }
    plan.unsupported.sort_by_key(|(i, _)| *i);
    plan
}

/// Distinct ids in first-seen order, each with every recipient index that named it (an id
/// listed twice is sent once and both recipients share its outcome).
#[derive(Default)]
pub(crate) struct Unique {
    ids: Vec<(String, Vec<usize>)>,
    /// Where each id is in `ids` (a command may list many thousands of recipients).
    positions: HashMap<String, usize>,
}

impl Unique {
    pub(crate) fn add(&mut self, index: usize, id: &str) {
        match self.positions.get(id) {
            Some(&position) => self.ids[position].1.push(index),
            None => {
                self.positions.insert(id.to_owned(), self.ids.len());
                self.ids.push((id.to_owned(), vec![index]));
            }
        }
    }

    /// Chunks of at most [`MAX_USER_IDS`] distinct ids: (recipient indices, ids).
    pub(crate) fn chunks(&self) -> Vec<(Vec<usize>, Vec<String>)> {
        self.ids
            .chunks(MAX_USER_IDS)
            .map(|chunk| {
                let targets = chunk.iter().flat_map(|(_, t)| t.iter().copied()).collect();
                let ids = chunk.iter().map(|(id, _)| id.clone()).collect();
                (targets, ids)
            })
            .collect()
    }
}

/// The per-recipient error of a combination DingTalk cannot deliver.
fn unsupported(content: &Content, kind: &RecipientType, what: &str) -> ResultError {
    let kind = serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let message_kind = match content {
        Content::Text { .. } => "text",
        Content::Markdown { .. } => "markdown",
        Content::Card(_) => "interactive",
        Content::Template { .. } => "template",
        Content::File { .. } => "file",
        Content::Image { .. } => "image",
    };
    ResultError {
        code: "unsupported_message".to_owned(),
        message: format!(
            "a {message_kind} message cannot be sent to a {kind} recipient: DingTalk does not deliver {what} there"
        ),
        retryable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::bus::command::OutboundMessage;
    use serde_json::json;

    fn text(as_card: bool) -> Content {
        Content::new(&OutboundMessage::Text { text: "hi".into() }, as_card, None)
    }

    fn users(n: usize) -> Vec<Option<Resolved>> {
        (0..n)
            .map(|i| Some((RecipientType::UserId, format!("u{i:02}"))))
            .collect()
    }

    #[test]
    fn forty_five_user_ids_are_three_batch_sends_of_at_most_twenty() {
        let plan = plan_send("c1", &users(45), &text(false), &Mentions::default());
        let sizes: Vec<usize> = plan.steps.iter().map(|s| s.targets.len()).collect();
        assert_eq!(sizes, [20, 20, 5]);
        let Action::BatchSend { user_ids, message } = &plan.steps[2].action else {
            panic!()
        };
        assert_eq!(user_ids, &["u40", "u41", "u42", "u43", "u44"]);
        assert_eq!(message.msg_key, "sampleText");
        assert_eq!(plan.steps[2].targets, [40, 41, 42, 43, 44]);
        assert!(plan.unsupported.is_empty());
    }

    #[test]
    fn an_id_listed_twice_is_sent_once_for_both_recipients() {
        let mut recipients = users(2);
        recipients.push(Some((RecipientType::UserId, "u00".to_owned())));
        let plan = plan_send("c1", &recipients, &text(false), &Mentions::default());
        assert_eq!(plan.steps.len(), 1);
        assert_eq!(plan.steps[0].targets, [0, 2, 1]);
        assert!(
            matches!(&plan.steps[0].action, Action::BatchSend { user_ids, .. } if user_ids == &["u00", "u01"])
        );
    }

    #[test]
    fn a_chat_gets_a_group_send_and_skipped_recipients_are_left_out() {
        let recipients = vec![
            None,
            Some((RecipientType::ChatId, "cid1".to_owned())),
            Some((RecipientType::OpenId, "open1".to_owned())),
        ];
        let plan = plan_send("c1", &recipients, &text(false), &Mentions::default());
        assert_eq!(plan.steps.len(), 2);
        assert!(
            matches!(&plan.steps[0].action, Action::GroupSend { chat_id, .. } if chat_id == "cid1")
        );
        assert_eq!(plan.steps[0].targets, [1]);
        assert!(
            matches!(&plan.steps[1].action, Action::OpenIdBatchSend { open_ids, .. } if open_ids == &["open1"])
        );
    }

    #[test]
    fn cards_go_one_per_recipient_with_the_command_id_first() {
        let recipients = vec![
            Some((RecipientType::UserId, "u1".to_owned())),
            Some((RecipientType::ChatId, "cid1".to_owned())),
        ];
        let mentions = Mentions {
            user_ids: vec!["u9".into()],
            all: false,
        };
        let plan = plan_send("c1", &recipients, &text(true), &mentions);
        let ids: Vec<_> = plan
            .steps
            .iter()
            .map(|s| match &s.action {
                Action::CardSend {
                    card_biz_id,
                    receiver,
                    mentions,
                    ..
                } => (
                    card_biz_id.clone(),
                    receiver.clone(),
                    mentions.user_ids.len(),
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("c1".to_owned(), CardReceiver::User("u1".into()), 0),
                ("c1:1".to_owned(), CardReceiver::Group("cid1".into()), 1)
            ]
        );
    }

    #[test]
    fn a_template_card_is_one_instance_delivered_to_every_space() {
        let content = Content::new(
            &OutboundMessage::Template {
                template_id: "tpl".into(),
                params: Map::new(),
            },
            false,
            None,
        );
        let recipients = vec![
            Some((RecipientType::ChatId, "cid1".to_owned())),
            Some((RecipientType::UserId, "u1".to_owned())),
            Some((RecipientType::Webhook, "tok".to_owned())),
        ];
        let plan = plan_send("c1", &recipients, &content, &Mentions::default());
        assert_eq!(plan.steps.len(), 1);
        let Action::TemplateCard {
            out_track_id,
            spaces,
            ..
        } = &plan.steps[0].action
        else {
            panic!()
        };
        assert_eq!(out_track_id, "c1");
        assert_eq!(
            spaces,
            &[Space::Group("cid1".into()), Space::Robot("u1".into())]
        );
        assert_eq!(plan.steps[0].targets, [0, 1]);
        assert_eq!(plan.unsupported.len(), 1);
        assert_eq!(plan.unsupported[0].0, 2);
        assert_eq!(plan.unsupported[0].1.code, "unsupported_message");
    }

    #[test]
    fn webhooks_take_classic_bodies_even_for_updatable_text() {
        let recipients = vec![
            Some((RecipientType::Webhook, "tok".to_owned())),
            Some((
                RecipientType::SessionWebhook,
                "https://oapi.dingtalk.com/robot/sendBySession?session=s".to_owned(),
            )),
        ];
        let plan = plan_send("c1", &recipients, &text(true), &Mentions::default());
        assert!(
            matches!(&plan.steps[0].action, Action::CustomRobot { access_token, bodies }
            if access_token == "tok" && bodies[0] == json!({"msgtype": "text", "text": {"content": "hi"}}))
        );
        assert!(
            matches!(&plan.steps[1].action, Action::SessionWebhook { bodies, .. } if bodies.len() == 1)
        );
    }

    #[test]
    fn cards_cannot_reach_open_ids_or_webhooks() {
        let recipients = vec![
            Some((RecipientType::OpenId, "o1".to_owned())),
            Some((RecipientType::Webhook, "tok".to_owned())),
        ];
        let plan = plan_send(
            "c1",
            &recipients,
            &Content::Card(json!({})),
            &Mentions::default(),
        );
        assert!(plan.steps.is_empty());
        assert_eq!(
            plan.unsupported.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 1]
        );
        assert!(plan.unsupported[0]
            .1
            .message
            .contains("interactive message cannot be sent to a open_id"));
    }
}
