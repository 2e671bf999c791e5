//! The cards the gateway sent, and where: written by the notifier before it sends a card, read
//! by the ingress to check a card callback that carries no signature.
//!
//! DingTalk's way of signing the button presses it posts to an HTTP card callback URL is not
//! documented (PROTOCOL §4.6b). Such a press is only believed when it names a card this gateway
//! sent for the integration, pressed where the card went: in its group, or by the user it was
//! sent to. Otherwise anyone who knows an integration id could speak to its experts as any user.
//!
//! | key | type | what |
//! |---|---|---|
//! | `dtg:card:{integration}:{out_track_id}` | string, TTL the notifier's record retention | JSON [`SentCard`] |

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a card went: a 1:1 chat with a user, or a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardSpace {
    /// The 1:1 chat of the robot with this userId (staff id).
    User(String),
    /// This group (openConversationId).
    Group(String),
}

/// A card the gateway sent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SentCard {
    /// Every space it was sent to.
    pub spaces: Vec<CardSpace>,
}

impl SentCard {
    /// Whether a press reported in group `group` (`None`: a 1:1 chat) by user `user` can come
    /// from this card.
    pub fn admits(&self, group: Option<&str>, user: &str) -> bool {
        self.spaces.iter().any(|space| match (space, group) {
            (CardSpace::Group(sent), Some(group)) => sent == group,
            (CardSpace::User(sent), None) => sent == user,
            _ => false,
        })
    }
}

/// The key of card `out_track_id` (a StandardCard's cardBizId or a template card's outTrackId).
pub fn card_key(integration: &str, out_track_id: &str) -> String {
    format!("dtg:card:{integration}:{out_track_id}")
}

/// Remembers `card` for `ttl`.
pub async fn remember(
    redis: &mut (impl redis::aio::ConnectionLike + Send),
    integration: &str,
    out_track_id: &str,
    card: &SentCard,
    ttl: Duration,
) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(card_key(integration, out_track_id))
        .arg(serde_json::to_string(card).expect("sent cards serialize"))
        .arg("PX")
        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
        .query_async(redis)
        .await
}

/// The card `out_track_id` of `integration`, if the gateway sent it (and still remembers it);
/// an unreadable record counts as none.
pub async fn lookup(
    redis: &mut (impl redis::aio::ConnectionLike + Send),
    integration: &str,
    out_track_id: &str,
) -> redis::RedisResult<Option<SentCard>> {
    let json: Option<String> = redis::cmd("GET")
        .arg(card_key(integration, out_track_id))
        .query_async(redis)
        .await?;
    Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_press_is_admitted_only_where_the_card_went() {
        let card = SentCard {
            spaces: vec![
                CardSpace::Group("cid1".into()),
                CardSpace::User("user7".into()),
            ],
        };
        assert!(card.admits(Some("cid1"), "anyone"));
        assert!(!card.admits(Some("cid2"), "anyone"));
        assert!(card.admits(None, "user7"));
        assert!(!card.admits(None, "user8"));
        assert!(!SentCard::default().admits(None, "user7"));
        assert_eq!(
            serde_json::to_string(&card).unwrap(),
            r#"{"spaces":[{"group":"cid1"},{"user":"user7"}]}"#
        );
    }
}
