//! A robot message callback body as DingTalk posts it to a robot's HTTP receiving address
//! (PROTOCOL §2.2), with a `sessionWebhook` pointing back at the simulator.

use std::time::Duration;

use serde_json::{json, Value};

use crate::directory::Directory;
use crate::ids;
use crate::session::Session;

/// How long a callback's session webhook stays valid (DingTalk's sample: about 90 minutes).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(90 * 60);

/// Where the message was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chat {
    /// A 1:1 chat with the robot (`conversationType` "1").
    Private,
    /// A group chat (`conversationType` "2").
    Group {
        /// The group's openConversationId.
        open_conversation_id: String,
        /// The group's name.
        title: String,
    },
}

/// What the user sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// `msgtype` `text`.
    Text(String),
    /// `msgtype` `picture`, with a download code the simulator resolves.
    Picture {
        /// From [`crate::SimState::add_download`] or `POST /_sim/downloads`.
        download_code: String,
    },
    /// `msgtype` `file`.
    File {
        /// As for pictures.
        download_code: String,
        /// The file name shown in the chat.
        file_name: String,
    },
}

/// A robot message callback, built from a few choices; every other field is derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotMessage {
    /// `msgId`; kept across redeliveries.
    pub msg_id: String,
    /// `robotCode` (the app's AppKey unless configured otherwise).
    pub robot_code: String,
    /// The org's corpId.
    pub corp_id: String,
    /// The sender's userId (`senderStaffId`).
    pub sender_staff_id: String,
    /// The sender's display name.
    pub sender_nick: String,
    /// Private or group chat.
    pub chat: Chat,
    /// What was sent.
    pub content: Content,
    /// Whether the robot was @-mentioned (groups).
    pub at_robot: bool,
    /// Base URL of the simulator that serves the `sessionWebhook`.
    pub session_base_url: String,
}

impl RobotMessage {
    /// A private text message from the seeded user `user001` to `robot_code`, whose session
    /// webhook points at the simulator at `session_base_url`.
    pub fn text(
        robot_code: impl Into<String>,
        text: impl Into<String>,
        session_base_url: impl Into<String>,
    ) -> Self {
        let directory = Directory::seeded();
        let (staff_id, nick) = directory
            .user("user001")
            .map(|user| (user.userid.clone(), user.name.clone()))
            .unwrap_or_else(|| ("user001".to_owned(), "Li Lei".to_owned()));
        Self {
            msg_id: ids::msg_id(),
            robot_code: robot_code.into(),
            corp_id: directory.corp_id,
            sender_staff_id: staff_id,
            sender_nick: nick,
            chat: Chat::Private,
            content: Content::Text(text.into()),
            at_robot: false,
            session_base_url: session_base_url.into(),
        }
    }

    /// The same message written in a group, @-mentioning the robot.
    pub fn in_group(
        mut self,
        open_conversation_id: impl Into<String>,
        title: impl Into<String>,
    ) -> Self {
        self.chat = Chat::Group {
            open_conversation_id: open_conversation_id.into(),
            title: title.into(),
        };
        self.at_robot = true;
        self
    }

    /// The same message from another sender.
    pub fn from_user(mut self, staff_id: impl Into<String>, nick: impl Into<String>) -> Self {
        self.sender_staff_id = staff_id.into();
        self.sender_nick = nick.into();
        self
    }

    /// The same message with other content.
    pub fn with_content(mut self, content: Content) -> Self {
        self.content = content;
        self
    }

    /// The same message under a fresh `msgId` (a new message, not a redelivery).
    pub fn renewed(mut self) -> Self {
        self.msg_id = ids::msg_id();
        self
    }

    /// `conversationId`: the group's id, or a stable per-user id for 1:1 chats.
    pub fn conversation_id(&self) -> String {
        match &self.chat {
            Chat::Group {
                open_conversation_id,
                ..
            } => open_conversation_id.clone(),
            Chat::Private => format!("cidSimP2p{}==", self.sender_staff_id),
        }
    }

    /// The JSON body DingTalk would post at `now_ms`.
    pub fn to_json(&self, now_ms: i64) -> Value {
        let expires_at_ms = now_ms + i64::try_from(SESSION_LIFETIME.as_millis()).unwrap_or(0);
        let session = Session {
            conversation_id: self.conversation_id(),
            robot_code: self.robot_code.clone(),
            expires_at_ms,
        };
        let chatbot_user_id = format!("$:LWCP_v1:$sim-bot-{}", self.robot_code);
        let mut body = json!({
            "msgId": self.msg_id,
            "conversationId": self.conversation_id(),
            "senderId": format!("$:LWCP_v1:$sim-{}", self.sender_staff_id),
            "senderStaffId": self.sender_staff_id,
            "senderNick": self.sender_nick,
            "senderCorpId": self.corp_id,
            "chatbotUserId": chatbot_user_id,
            "chatbotCorpId": self.corp_id,
            "robotCode": self.robot_code,
            "isAdmin": false,
            "isInAtList": self.at_robot,
            "createAt": now_ms,
            "sessionWebhook": session.webhook_url(&self.session_base_url),
            "sessionWebhookExpiredTime": expires_at_ms,
        });
        match &self.chat {
            Chat::Private => body["conversationType"] = json!("1"),
            Chat::Group { title, .. } => {
                body["conversationType"] = json!("2");
                body["conversationTitle"] = json!(title);
                body["atUsers"] = if self.at_robot {
                    json!([{ "dingtalkId": chatbot_user_id }])
                } else {
                    json!([])
                };
            }
        }
        match &self.content {
            Content::Text(text) => {
                body["msgtype"] = json!("text");
                // DingTalk strips the @robot mention and leaves the space that followed it.
                let shown = if self.at_robot {
                    format!(" {text}")
                } else {
                    text.clone()
                };
                body["text"] = json!({ "content": shown });
            }
            Content::Picture { download_code } => {
                body["msgtype"] = json!("picture");
                body["content"] =
                    json!({ "downloadCode": download_code, "pictureDownloadCode": download_code });
            }
            Content::File {
                download_code,
                file_name,
            } => {
                body["msgtype"] = json!("file");
                body["content"] = json!({ "downloadCode": download_code, "fileName": file_name });
            }
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_text_message_has_the_protocol_fields() {
        let body = RobotMessage::text("dingapp", "hello", "http://sim").to_json(1_700_000_000_000);
        for field in [
            "msgId",
            "msgtype",
            "conversationId",
            "conversationType",
            "senderStaffId",
            "senderNick",
            "senderCorpId",
            "chatbotUserId",
            "robotCode",
            "createAt",
            "sessionWebhook",
            "sessionWebhookExpiredTime",
        ] {
            assert!(body.get(field).is_some(), "{field} missing");
        }
        assert_eq!(body["conversationType"], "1");
        assert_eq!(body["text"]["content"], "hello");
        assert_eq!(
            body["sessionWebhookExpiredTime"],
            1_700_000_000_000i64 + 5_400_000
        );
    }

    #[test]
    fn group_message_mentions_the_robot_and_its_session_names_the_group() {
        let message =
            RobotMessage::text("dingapp", "hi", "http://sim").in_group(Directory::OPS_GROUP, "ops");
        let body = message.to_json(0);
        assert_eq!(body["conversationType"], "2");
        assert_eq!(body["conversationId"], Directory::OPS_GROUP);
        assert_eq!(body["text"]["content"], " hi");
        assert_eq!(body["atUsers"][0]["dingtalkId"], body["chatbotUserId"]);
        let url = body["sessionWebhook"].as_str().unwrap();
        let token = url.split("session=").nth(1).unwrap();
        let session = Session::decode(token, 1).unwrap();
        assert_eq!(session.conversation_id, Directory::OPS_GROUP);
    }
}
