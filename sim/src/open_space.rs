//! Card `openSpaceId` parsing (PROTOCOL §4.6): `dtv1.card//IM_GROUP.<cid>` or
//! `dtv1.card//IM_ROBOT.<userId>`, several spaces joined with `;`.

use crate::error::ApiError;

/// The fixed prefix of every open space id.
const PREFIX: &str = "dtv1.card//";

/// Where a card is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenSpace {
    /// A group chat, by `openConversationId`.
    ImGroup(String),
    /// The 1:1 chat between the robot and a user, by userId.
    ImRobot(String),
}

impl OpenSpace {
    /// The space type as DingTalk names it in deliver results.
    pub fn space_type(&self) -> &'static str {
        match self {
            OpenSpace::ImGroup(_) => "IM_GROUP",
            OpenSpace::ImRobot(_) => "IM_ROBOT",
        }
    }

    /// The id inside the space.
    pub fn space_id(&self) -> &str {
        match self {
            OpenSpace::ImGroup(id) | OpenSpace::ImRobot(id) => id,
        }
    }

    /// Parses an `openSpaceId`. The space type is matched without regard to case (SDK examples
    /// write it in lower case, working code in upper case).
    pub fn parse_list(text: &str) -> Result<Vec<OpenSpace>, ApiError> {
        let invalid = |reason: String| ApiError::invalid("openSpaceId", reason);
        let rest = text.strip_prefix(PREFIX).ok_or_else(|| {
            invalid(format!(
                "{text:?} must start with {PREFIX:?}, e.g. dtv1.card//IM_GROUP.cid…"
            ))
        })?;
        rest.split(';')
            .map(|space| {
                let (kind, id) = space.split_once('.').ok_or_else(|| {
                    invalid(format!(
                        "space {space:?} must look like IM_GROUP.<id> or IM_ROBOT.<id>"
                    ))
                })?;
                if id.is_empty() {
                    return Err(invalid(format!("space {space:?} has an empty id")));
                }
                match kind.to_ascii_uppercase().as_str() {
                    "IM_GROUP" => Ok(OpenSpace::ImGroup(id.to_owned())),
                    "IM_ROBOT" => Ok(OpenSpace::ImRobot(id.to_owned())),
                    _ => Err(invalid(format!(
                        "space type {kind:?} is not supported; allowed: IM_GROUP, IM_ROBOT"
                    ))),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_and_robot_spaces_parse_in_either_case() {
        assert_eq!(
            OpenSpace::parse_list("dtv1.card//IM_GROUP.cidA==;im_robot.user001"),
            Ok(vec![
                OpenSpace::ImGroup("cidA==".into()),
                OpenSpace::ImRobot("user001".into())
            ])
        );
    }

    #[test]
    fn malformed_open_space_ids_are_refused() {
        for bad in [
            "IM_GROUP.cid",
            "dtv1.card//",
            "dtv1.card//IM_GROUP",
            "dtv1.card//IM_GROUP.",
            "dtv1.card//DOC.x",
        ] {
            assert!(OpenSpace::parse_list(bad).is_err(), "{bad}");
        }
    }
}
