//! Pure decisions about one event: whether the dispatcher handles it, what the user asked, who
//! is answered, and which expert answers. No I/O here; the caller fetches the bindings.

use common::bus::command::{Mentions, Recipient, RecipientType};
use common::bus::event::{ConversationType, Event, EventBody};
use common::bus::Timestamp;
use common::registry::{ConversationKey, IdError, XpertId};

/// Card action id (or `params.action`) of the "end conversation" button.
pub const END_CONVERSATION_ACTION: &str = "end_conversation";

/// Messages that end the conversation binding, compared after trimming, case-insensitively.
const RESET_COMMANDS: [&str; 2] = ["/new", "新对话"];

/// What the dispatcher does with an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not for the dispatcher (another kind, or a group message without an @-mention): ack it.
    Skip(&'static str),
    /// Work on a conversation.
    Handle(Box<Work>),
}

/// A piece of work for one conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// The conversation binding's key (one thread per person per chat).
    pub key: ConversationKey,
    /// What to do.
    pub intent: Intent,
    /// Who the answer goes to.
    pub reply_to: ReplyTarget,
    /// Facts passed to the expert (`dingtalk_*` run metadata).
    pub facts: Facts,
}

/// What the user wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Ask the expert.
    Ask(String),
    /// A button pressed on a card (other than the end button).
    Press(Press),
    /// End the conversation binding and start afresh.
    Reset,
}

/// A button pressed on a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Press {
    /// The button: its action id, or `params.action` when it sets one.
    pub action: String,
    /// What the expert gets: `{"card": out_track_id, "action": id, "params": {…}}`.
    pub card_action: serde_json::Value,
}

impl Press {
    /// The press as the message the expert reads: `{"card_action": {…}}` as JSON text.
    pub fn input(&self) -> String {
        serde_json::json!({ "card_action": self.card_action }).to_string()
    }
}

/// The conversation's facts, as the expert's notify tools read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The integration.
    pub integration_id: String,
    /// DingTalk's conversation id.
    pub conversation_id: String,
    /// `private` or `group`.
    pub conversation_type: &'static str,
    /// The group's name.
    pub conversation_title: Option<String>,
    /// The sender's userId, when a member of the organization.
    pub sender_staff_id: Option<String>,
    /// The sender's display name.
    pub sender_nick: String,
    /// What a reply to this conversation should target: the staff id in a private chat, the
    /// chat id in a group.
    pub recipient_id: String,
    /// How `recipient_id` is to be read: `user_id`, `chat_id` or `session_webhook` (the bus
    /// recipient type), so that a notify tool can address the conversation without guessing.
    pub recipient_type: RecipientType,
}

/// Where the dispatcher's answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTarget {
    /// The recipient.
    pub recipient: Recipient,
    /// Who to @-mention (groups only).
    pub mention: Option<String>,
    /// When the recipient stops taking messages (a session webhook's expiry).
    pub expires_at: Option<Timestamp>,
}

impl ReplyTarget {
    /// Whether the recipient no longer takes messages at `now`: a session webhook that expired
    /// while the expert was running.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whether the answer can be a card updated as it grows (a session webhook cannot carry
    /// cards, so its answer is one message).
    pub fn can_stream(&self) -> bool {
        self.recipient.kind != RecipientType::SessionWebhook
    }

    /// The `mentions` of a send command.
    pub fn mentions(&self) -> Option<Mentions> {
        self.mention.as_ref().map(|user| Mentions {
            user_ids: vec![user.clone()],
            all: false,
        })
    }
}

/// Decides what to do with `event`; `now` decides whether a session webhook is still valid.
pub fn decide(event: &Event, now: Timestamp) -> Result<Decision, IdError> {
    match &event.body {
        EventBody::Message(message) => {
            let group = message.conversation.kind == ConversationType::Group;
            if group && !message.message.mentions_bot {
                return Ok(Decision::Skip("group_without_mention"));
            }
            let text = message.message.text.trim();
            if text.is_empty() {
                return Ok(Decision::Skip("empty"));
            }
            let staff_id = message.sender.staff_id.clone().filter(|s| !s.is_empty());
            let sender = staff_id
                .clone()
                .unwrap_or_else(|| message.sender.id.clone());
            let key = ConversationKey::new(
                event.integration_id.clone(),
                &message.conversation.id,
                sender,
            )?;
            let reply_to = if group {
                Some(ReplyTarget {
                    recipient: recipient(RecipientType::ChatId, &message.conversation.id),
                    mention: staff_id.clone(),
                    expires_at: None,
                })
            } else if let Some(staff_id) = &staff_id {
                Some(ReplyTarget {
                    recipient: recipient(RecipientType::UserId, staff_id),
                    mention: None,
                    expires_at: None,
                })
            } else {
                // An external contact has no staff id; the session webhook is the only way back.
                message
                    .reply
                    .as_ref()
                    .filter(|reply| reply.expires_at > now)
                    .map(|reply| ReplyTarget {
                        recipient: recipient(RecipientType::SessionWebhook, &reply.session_webhook),
                        mention: None,
                        expires_at: Some(reply.expires_at),
                    })
            };
            let Some(reply_to) = reply_to else {
                return Ok(Decision::Skip("no_way_to_answer"));
            };
            let intent = if is_reset(text) {
                Intent::Reset
            } else {
                Intent::Ask(text.to_owned())
            };
            Ok(Decision::Handle(Box::new(Work {
                facts: Facts {
                    integration_id: event.integration_id.to_string(),
                    conversation_id: message.conversation.id.clone(),
                    conversation_type: conversation_type(message.conversation.kind),
                    conversation_title: message.conversation.title.clone(),
                    sender_staff_id: staff_id,
                    sender_nick: message.sender.nick.clone(),
                    recipient_id: reply_to.recipient.id.clone(),
                    recipient_type: reply_to.recipient.kind,
                },
                key,
                intent,
                reply_to,
            })))
        }
        EventBody::CardAction(action) => {
            let group = action.conversation.kind == ConversationType::Group;
            let staff_id = action.user.staff_id.clone();
            let key = ConversationKey::new(
                event.integration_id.clone(),
                &action.conversation.id,
                &staff_id,
            )?;
            let reply_to = if group {
                ReplyTarget {
                    recipient: recipient(RecipientType::ChatId, &action.conversation.id),
                    mention: Some(staff_id.clone()),
                    expires_at: None,
                }
            } else {
                ReplyTarget {
                    recipient: recipient(RecipientType::UserId, &staff_id),
                    mention: None,
                    expires_at: None,
                }
            };
            let button = action
                .action
                .params
                .get("action")
                .and_then(|a| a.as_str())
                .unwrap_or(&action.action.id);
            let intent = if action.action.id == END_CONVERSATION_ACTION
                || button == END_CONVERSATION_ACTION
            {
                Intent::Reset
            } else {
                // The expert gets the button as a message it can read and act on.
                Intent::Press(Press {
                    action: button.to_owned(),
                    card_action: serde_json::json!({
                        "card": action.card.out_track_id,
                        "action": action.action.id,
                        "params": action.action.params,
                    }),
                })
            };
            Ok(Decision::Handle(Box::new(Work {
                facts: Facts {
                    integration_id: event.integration_id.to_string(),
                    conversation_id: action.conversation.id.clone(),
                    conversation_type: conversation_type(action.conversation.kind),
                    conversation_title: action.conversation.title.clone(),
                    sender_staff_id: Some(staff_id),
                    sender_nick: String::new(),
                    recipient_id: reply_to.recipient.id.clone(),
                    recipient_type: reply_to.recipient.kind,
                },
                key,
                intent,
                reply_to,
            })))
        }
        EventBody::Event(_) => Ok(Decision::Skip("subscription_event")),
        EventBody::Other => Ok(Decision::Skip("other_kind")),
    }
}

fn recipient(kind: RecipientType, id: &str) -> Recipient {
    Recipient {
        kind,
        id: id.to_owned(),
    }
}

fn conversation_type(kind: ConversationType) -> &'static str {
    match kind {
        ConversationType::Private => "private",
        ConversationType::Group => "group",
    }
}

/// Whether a message asks to start a new conversation.
pub fn is_reset(text: &str) -> bool {
    let text = text.trim();
    RESET_COMMANDS.iter().any(|c| text.eq_ignore_ascii_case(c))
}

/// Where an expert came from, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The conversation's existing binding.
    Binding,
    /// The integration's trigger binding.
    Trigger,
    /// The integration's fallback `xpert_id`.
    Fallback,
}

impl Source {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Binding => "binding",
            Self::Trigger => "trigger",
            Self::Fallback => "fallback",
        }
    }
}

/// The seed's priority: the conversation binding, then the trigger, then the fallback.
pub fn choose_expert(
    bound: Option<&XpertId>,
    trigger: Option<&XpertId>,
    fallback: Option<&XpertId>,
) -> Option<(XpertId, Source)> {
    bound
        .map(|x| (x.clone(), Source::Binding))
        .or_else(|| trigger.map(|x| (x.clone(), Source::Trigger)))
        .or_else(|| fallback.map(|x| (x.clone(), Source::Fallback)))
}

/// Deterministic command ids: a redelivered event republishes the same ids, and JetStream's
/// duplicate window drops them.
pub mod command_id {
    /// The first (and for a one-shot answer, only) message of the answer.
    pub fn reply(event_id: &str) -> String {
        format!("{event_id}:reply")
    }

    /// The `n`-th intermediate update of the answer card.
    pub fn update(event_id: &str, n: u32) -> String {
        format!("{event_id}:update:{n}")
    }

    /// The final update carrying the whole answer.
    pub fn last(event_id: &str) -> String {
        format!("{event_id}:final")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: serde_json::Value) -> Event {
        Event::from_slice(value.to_string().as_bytes()).unwrap()
    }

    fn message(kind: &str, staff_id: Option<&str>, mentions_bot: bool, text: &str) -> Event {
        let mut sender = json!({"id": "$:LWCP_v1:$abc", "nick": "Li"});
        if let Some(staff_id) = staff_id {
            sender["staff_id"] = json!(staff_id);
        }
        event(json!({
            "v": 1, "id": "acme:m1", "integration_id": "acme", "kind": "message",
            "received_at": "2026-11-25T10:00:00Z",
            "conversation": {"id": "cid1", "type": kind, "title": "ops"},
            "sender": sender,
            "message": {"id": "m1", "type": "text", "text": text, "mentions_bot": mentions_bot},
            "reply": {"session_webhook": "https://hook/s1", "expires_at": "2026-11-25T11:30:00Z"}
        }))
    }

    fn at(rfc3339: &str) -> Timestamp {
        Timestamp(
            time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
                .unwrap(),
        )
    }

    fn handled(decision: Decision) -> Work {
        match decision {
            Decision::Handle(work) => *work,
            other => panic!("not handled: {other:?}"),
        }
    }

    #[test]
    fn a_private_message_is_answered_to_the_senders_staff_id() {
        let work = handled(
            decide(
                &message("private", Some("u1"), false, " hi "),
                at("2026-11-25T10:00:00Z"),
            )
            .unwrap(),
        );
        assert_eq!(work.intent, Intent::Ask("hi".into()));
        assert_eq!(work.reply_to.recipient.kind, RecipientType::UserId);
        assert_eq!(work.reply_to.recipient.id, "u1");
        assert_eq!(work.reply_to.mention, None);
        assert_eq!(work.key.sender(), "u1");
        assert_eq!(work.facts.recipient_id, "u1");
        assert_eq!(work.facts.recipient_type, RecipientType::UserId);
        assert_eq!(work.facts.conversation_type, "private");
    }

    #[test]
    fn group_messages_count_only_when_they_mention_the_bot() {
        let now = at("2026-11-25T10:00:00Z");
        assert_eq!(
            decide(&message("group", Some("u1"), false, "hi"), now).unwrap(),
            Decision::Skip("group_without_mention")
        );
        let work = handled(decide(&message("group", Some("u1"), true, "hi"), now).unwrap());
        assert_eq!(work.reply_to.recipient.kind, RecipientType::ChatId);
        assert_eq!(work.reply_to.recipient.id, "cid1");
        assert_eq!(work.reply_to.mention.as_deref(), Some("u1"));
        assert_eq!(work.facts.recipient_id, "cid1");
        assert_eq!(work.facts.recipient_type, RecipientType::ChatId);
        assert_eq!(work.facts.conversation_title.as_deref(), Some("ops"));
    }

    #[test]
    fn an_external_contact_is_answered_through_the_session_webhook_while_it_lasts() {
        let external = message("private", None, false, "hi");
        let work = handled(decide(&external, at("2026-11-25T10:00:00Z")).unwrap());
        assert_eq!(work.reply_to.recipient.kind, RecipientType::SessionWebhook);
        assert!(!work.reply_to.can_stream());
        assert_eq!(work.key.sender(), "$:LWCP_v1:$abc");
        assert_eq!(
            decide(&external, at("2026-11-25T12:00:00Z")).unwrap(),
            Decision::Skip("no_way_to_answer")
        );
    }

    #[test]
    fn new_and_its_chinese_twin_reset_the_conversation() {
        for text in ["/new", " /NEW ", "新对话"] {
            let work = handled(
                decide(
                    &message("private", Some("u1"), false, text),
                    at("2026-11-25T10:00:00Z"),
                )
                .unwrap(),
            );
            assert_eq!(work.intent, Intent::Reset, "{text}");
        }
        assert!(!is_reset("/new thread please"));
    }

    #[test]
    fn card_actions_go_to_the_expert_and_the_end_button_resets() {
        let card = |action: &str| {
            event(json!({
                "v": 1, "id": "acme:c1", "integration_id": "acme", "kind": "card_action",
                "received_at": "2026-11-25T10:00:00Z", "card": {"out_track_id": "acme:m1:reply"},
                "action": {"id": action, "params": {"choice": "yes"}}, "user": {"staff_id": "u1"},
                "conversation": {"id": "cid1", "type": "group"}
            }))
        };
        let now = at("2026-11-25T10:00:00Z");
        let work = handled(decide(&card("confirm"), now).unwrap());
        let Intent::Press(press) = work.intent else {
            panic!("not a press")
        };
        assert_eq!(press.action, "confirm");
        let input = press.input();
        assert!(input.contains("\"confirm\"") && input.contains("\"choice\""));
        assert_eq!(work.key.sender(), "u1");
        let work = handled(decide(&card(END_CONVERSATION_ACTION), now).unwrap());
        assert_eq!(work.intent, Intent::Reset);
    }

    #[test]
    fn other_kinds_are_skipped() {
        let other = event(
            json!({"v": 1, "id": "a:1", "integration_id": "a", "kind": "reaction",
            "received_at": "2026-11-25T10:00:00Z"}),
        );
        assert!(matches!(
            decide(&other, at("2026-11-25T10:00:00Z")).unwrap(),
            Decision::Skip(_)
        ));
    }

    #[test]
    fn the_expert_comes_from_the_binding_then_the_trigger_then_the_fallback() {
        let x = |s: &str| s.parse::<XpertId>().unwrap();
        let (b, t, f) = (x("bound"), x("trigger"), x("fallback"));
        assert_eq!(
            choose_expert(Some(&b), Some(&t), Some(&f)),
            Some((b.clone(), Source::Binding))
        );
        assert_eq!(
            choose_expert(None, Some(&t), Some(&f)),
            Some((t.clone(), Source::Trigger))
        );
        assert_eq!(
            choose_expert(None, None, Some(&f)),
            Some((f.clone(), Source::Fallback))
        );
        assert_eq!(choose_expert(None, None, None), None);
    }

    #[test]
    fn command_ids_are_deterministic() {
        assert_eq!(command_id::reply("acme:m1"), "acme:m1:reply");
        assert_eq!(command_id::update("acme:m1", 3), "acme:m1:update:3");
        assert_eq!(command_id::last("acme:m1"), "acme:m1:final");
    }
}
