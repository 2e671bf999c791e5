//! Reading the bot's answer to a robot message callback back from a simulator over HTTP
//! (`GET /_sim/cards`, `GET /_sim/messages`), as the person who wrote it would see it: the card
//! whose `cardBizId` names the message (`…:{msgId}:reply`, the gateway's command id), or a plain
//! message delivered to the sender's chat after the callback was sent.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::robot_message::{Chat, RobotMessage};

/// How often the simulator is asked.
const POLL: Duration = Duration::from_millis(200);

/// Why the answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The simulator's control API did not answer.
    #[error("cannot read the simulator's record at {url}: {reason}")]
    Simulator {
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// The text shown in the chat for `message` (sent at `sent_at_ms`), if the simulator holds an
/// answer to it yet.
pub async fn current_reply(
    http: &reqwest::Client,
    sim_url: &str,
    message: &RobotMessage,
    sent_at_ms: i64,
) -> Result<Option<String>, ReplyError> {
    let base = sim_url.trim_end_matches('/');
    let cards = get_json(http, &format!("{base}/_sim/cards")).await?;
    let marker = format!(":{}:reply", message.msg_id);
    let card_text = cards["standardCards"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|card| {
            card["cardBizId"]
                .as_str()
                .is_some_and(|id| id.contains(&marker))
        })
        .map(|card| markdown_blocks(&card["cardData"]));
    if card_text.is_some() {
        return Ok(card_text);
    }
    let messages = get_json(http, &format!("{base}/_sim/messages")).await?;
    Ok(messages["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|sent| sent["sentAtMs"].as_i64().unwrap_or(0) >= sent_at_ms)
        .filter(|sent| goes_to(&sent["recipient"], message))
        .find_map(|sent| message_text(&sent["content"])))
}

/// Waits (at most `timeout`) for the answer to `message` and until it has not changed for
/// `settle` (a streamed answer is updated in place); calls `on_change` with every version seen.
/// A version for which `pending` is true (a "thinking…" placeholder) is never taken as the
/// answer, however long it stays. `None`: no answer within `timeout`.
#[allow(clippy::too_many_arguments)]
pub async fn await_reply(
    http: &reqwest::Client,
    sim_url: &str,
    message: &RobotMessage,
    sent_at_ms: i64,
    timeout: Duration,
    settle: Duration,
    pending: impl Fn(&str) -> bool,
    mut on_change: impl FnMut(&str),
) -> Result<Option<String>, ReplyError> {
    let started = Instant::now();
    let mut last: Option<(String, Instant)> = None;
    loop {
        if let Some(text) = current_reply(http, sim_url, message, sent_at_ms).await? {
            match &last {
                Some((seen, since)) if *seen == text => {
                    if since.elapsed() >= settle && !pending(&text) {
                        return Ok(Some(text));
                    }
                }
                _ => {
                    on_change(&text);
                    last = Some((text, Instant::now()));
                }
            }
        }
        if started.elapsed() >= timeout {
            return Ok(last.map(|(text, _)| text));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, ReplyError> {
    let failed = |reason: String| ReplyError::Simulator {
        url: url.to_owned(),
        reason,
    };
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|err| failed(err.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    response.json().await.map_err(|err| failed(err.to_string()))
}

/// Whether a delivered message's recipient is the chat `message` was written in.
fn goes_to(recipient: &Value, message: &RobotMessage) -> bool {
    match (recipient["channel"].as_str(), &message.chat) {
        (Some("oneToOne"), Chat::Private) => recipient["userIds"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|id| id == &message.sender_staff_id)),
        (
            Some("group"),
            Chat::Group {
                open_conversation_id,
                ..
            },
        ) => recipient["openConversationId"] == open_conversation_id.as_str(),
        (Some("session"), _) => recipient["conversationId"] == message.conversation_id().as_str(),
        _ => false,
    }
}

/// The text blocks of a StandardCard's `cardData`, one per line.
fn markdown_blocks(card_data: &Value) -> String {
    card_data["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|block| block["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text of a delivered message: an app robot's `msgParam` (`sampleText`, `sampleMarkdown`)
/// or a webhook body (`text`, `markdown`).
fn message_text(content: &Value) -> Option<String> {
    [
        &content["content"],
        &content["text"],
        &content["text"]["content"],
        &content["markdown"]["text"],
    ]
    .into_iter()
    .find_map(|value| value.as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn card_text_joins_its_markdown_blocks() {
        let data =
            json!({"contents": [{"type": "markdown", "text": "echo #1: hi", "id": "content"}]});
        assert_eq!(markdown_blocks(&data), "echo #1: hi");
    }

    #[test]
    fn message_text_reads_app_and_webhook_shapes() {
        assert_eq!(
            message_text(&json!({"content": "plain"})).as_deref(),
            Some("plain")
        );
        assert_eq!(
            message_text(&json!({"title": "T", "text": "md"})).as_deref(),
            Some("md")
        );
        assert_eq!(
            message_text(&json!({"msgtype": "text", "text": {"content": "hook"}})).as_deref(),
            Some("hook")
        );
        assert_eq!(message_text(&json!({"mediaId": "x"})), None);
    }

    #[test]
    fn a_private_message_is_answered_in_the_senders_chat_only() {
        let message = RobotMessage::text("app", "hi", "http://sim");
        assert!(goes_to(
            &json!({"channel": "oneToOne", "userIds": ["user001"]}),
            &message
        ));
        assert!(!goes_to(
            &json!({"channel": "oneToOne", "userIds": ["user002"]}),
            &message
        ));
        assert!(!goes_to(
            &json!({"channel": "group", "openConversationId": "cidX"}),
            &message
        ));
    }
}
