//! Card action callbacks (PROTOCOL §4.6b): what DingTalk posts when a user presses a button on a
//! card the robot sent. `content` is a JSON *string*, as on the wire.

use serde_json::{json, Map, Value};

/// A button press.
#[derive(Debug, Clone, PartialEq)]
pub struct CardAction {
    /// The card's `outTrackId` (or `cardBizId`).
    pub out_track_id: String,
    /// The org's corpId.
    pub corp_id: String,
    /// Who pressed (userId).
    pub user_id: String,
    /// `IM_GROUP` or `IM_ROBOT`.
    pub space_type: String,
    /// The group or user id of the space.
    pub space_id: String,
    /// The button's action id.
    pub action_id: String,
    /// The button's parameters.
    pub params: Map<String, Value>,
}

impl CardAction {
    /// A press of `action_id` by `user_id` on the card `out_track_id` in group `space_id`.
    pub fn in_group(
        out_track_id: impl Into<String>,
        space_id: impl Into<String>,
        user_id: impl Into<String>,
        action_id: impl Into<String>,
    ) -> Self {
        let action_id = action_id.into();
        let mut params = Map::new();
        params.insert("action".to_owned(), Value::from(action_id.clone()));
        Self {
            out_track_id: out_track_id.into(),
            corp_id: crate::directory::Directory::seeded().corp_id,
            user_id: user_id.into(),
            space_type: "IM_GROUP".to_owned(),
            space_id: space_id.into(),
            action_id,
            params,
        }
    }

    /// The callback body.
    pub fn to_json(&self) -> Value {
        let content = json!({
            "cardPrivateData": { "actionIds": [self.action_id], "params": self.params }
        });
        json!({
            "type": "actionCallback",
            "outTrackId": self.out_track_id,
            "corpId": self.corp_id,
            "userId": self.user_id,
            "userIdType": 1,
            "spaceType": self.space_type,
            "spaceId": self.space_id,
            "content": content.to_string(),
            "extension": "{}",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_a_json_string_naming_the_button() {
        let body = CardAction::in_group("track1", "cid==", "user001", "confirm").to_json();
        let content: Value = serde_json::from_str(body["content"].as_str().unwrap()).unwrap();
        assert_eq!(content["cardPrivateData"]["actionIds"][0], "confirm");
        assert_eq!(content["cardPrivateData"]["params"]["action"], "confirm");
        assert_eq!(body["type"], "actionCallback");
    }
}
