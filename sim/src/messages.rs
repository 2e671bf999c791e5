//! Robot messages the simulator "delivered": app robot sends (1:1 and group), custom robot
//! webhooks and session-webhook replies. Recall and read status work on this store, and tests
//! can list it (`GET /_sim/messages`) to see what a chat would show.

use serde::Serialize;
use serde_json::Value;

use crate::bounded::BoundedMap;

/// Where a message went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "channel", rename_all = "camelCase")]
pub enum Recipient {
    /// 1:1 chats with these users (the ones actually sent to).
    #[serde(rename_all = "camelCase")]
    OneToOne {
        /// userIds.
        user_ids: Vec<String>,
    },
    /// A group chat.
    #[serde(rename_all = "camelCase")]
    Group {
        /// openConversationId.
        open_conversation_id: String,
    },
    /// A custom robot's group.
    #[serde(rename_all = "camelCase")]
    CustomRobot {
        /// The webhook's access token.
        access_token: String,
    },
    /// The conversation behind a session webhook.
    #[serde(rename_all = "camelCase")]
    Session {
        /// conversationId.
        conversation_id: String,
    },
}

/// One delivered message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SentMessage {
    /// `processQueryKey` (webhook messages get one too, for listing).
    pub process_query_key: String,
    /// The robot that sent it (custom robots: empty).
    pub robot_code: String,
    /// Where it went.
    pub recipient: Recipient,
    /// `msgKey` for app robots, `msgtype` for webhook robots.
    pub kind: String,
    /// Decoded `msgParam`, or the webhook body.
    pub content: Value,
    /// When it was accepted, ms since the epoch.
    pub sent_at_ms: i64,
    /// Whether it was recalled.
    pub recalled: bool,
}

/// Why one key of a recall failed (the value in `failedResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecallFailure {
    /// Unknown key, or a key of another robot.
    NotFound,
    /// The key names a message of the other kind (1:1 vs group) or another group.
    WrongConversation,
    /// Already recalled.
    AlreadyRecalled,
}

impl RecallFailure {
    /// The reason text put into `failedResult`.
    pub fn reason(&self) -> &'static str {
        match self {
            RecallFailure::NotFound => "processQueryKey not found",
            RecallFailure::WrongConversation => "processQueryKey belongs to another conversation",
            RecallFailure::AlreadyRecalled => "message already recalled",
        }
    }
}

/// The delivered messages, bounded.
#[derive(Debug)]
pub struct MessageStore {
    messages: BoundedMap<String, SentMessage>,
}

impl MessageStore {
    /// A store keeping the newest `cap` messages.
    pub fn new(cap: usize) -> Self {
        Self {
            messages: BoundedMap::new(cap),
        }
    }

    /// Stores a message under its processQueryKey.
    pub fn push(&mut self, message: SentMessage) {
        self.messages
            .insert(message.process_query_key.clone(), message);
    }

    /// The message sent by `robot_code` under `key`.
    pub fn get(&self, robot_code: &str, key: &str) -> Option<&SentMessage> {
        self.messages
            .get(&key.to_owned())
            .filter(|message| message.robot_code == robot_code)
    }

    /// Recalls `key` if `robot_code` sent it to `conversation` (`None` = a 1:1 message).
    pub fn recall(
        &mut self,
        robot_code: &str,
        key: &str,
        group: Option<&str>,
    ) -> Result<(), RecallFailure> {
        let message = self
            .messages
            .get_mut(&key.to_owned())
            .filter(|message| message.robot_code == robot_code)
            .ok_or(RecallFailure::NotFound)?;
        let same_place = match (&message.recipient, group) {
            (Recipient::OneToOne { .. }, None) => true,
            (
                Recipient::Group {
                    open_conversation_id,
                },
                Some(wanted),
            ) => open_conversation_id == wanted,
            _ => false,
        };
        if !same_place {
            return Err(RecallFailure::WrongConversation);
        }
        if message.recalled {
            return Err(RecallFailure::AlreadyRecalled);
        }
        message.recalled = true;
        Ok(())
    }

    /// Every stored message, oldest first.
    pub fn list(&self) -> Vec<SentMessage> {
        self.messages.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(key: &str, recipient: Recipient) -> SentMessage {
        SentMessage {
            process_query_key: key.into(),
            robot_code: "robot".into(),
            recipient,
            kind: "sampleText".into(),
            content: json!({}),
            sent_at_ms: 0,
            recalled: false,
        }
    }

    #[test]
    fn recall_checks_robot_conversation_and_repetition() {
        let mut store = MessageStore::new(10);
        store.push(message(
            "k1",
            Recipient::OneToOne {
                user_ids: vec!["u".into()],
            },
        ));
        store.push(message(
            "k2",
            Recipient::Group {
                open_conversation_id: "cid".into(),
            },
        ));
        assert_eq!(
            store.recall("other", "k1", None),
            Err(RecallFailure::NotFound)
        );
        assert_eq!(
            store.recall("robot", "k2", None),
            Err(RecallFailure::WrongConversation)
        );
        assert_eq!(
            store.recall("robot", "k2", Some("cid2")),
            Err(RecallFailure::WrongConversation)
        );
        assert_eq!(store.recall("robot", "k2", Some("cid")), Ok(()));
        assert_eq!(
            store.recall("robot", "k2", Some("cid")),
            Err(RecallFailure::AlreadyRecalled)
        );
        assert_eq!(store.recall("robot", "k1", None), Ok(()));
    }
}
