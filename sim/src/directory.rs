//! The simulated organisation: departments, users and the groups robots sit in.
//!
//! The contact APIs (PROTOCOL §5) page through it, batchSend sorts `userIds` into known and
//! `invalidStaffIdList` with it, and group sends check robot membership against it.
//! [`Directory::seeded`] is a small default org every test can rely on.

use serde::{Deserialize, Serialize};

/// The root department's id (DingTalk's is always 1).
pub const ROOT_DEPT_ID: i64 = 1;

/// A department.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Department {
    /// `dept_id`.
    pub dept_id: i64,
    /// Display name.
    pub name: String,
    /// `parent_id`; `None` only for the root.
    pub parent_id: Option<i64>,
}

/// A member of the org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// `userid` (= staffId in robot APIs).
    pub userid: String,
    /// `unionid`, stable across orgs.
    pub unionid: String,
    /// Display name.
    pub name: String,
    /// Mobile number.
    #[serde(default)]
    pub mobile: String,
    /// E-mail.
    #[serde(default)]
    pub email: String,
    /// Job title.
    #[serde(default)]
    pub title: String,
    /// Departments the user belongs to, in the org's custom order.
    pub dept_ids: Vec<i64>,
    /// Org admin.
    #[serde(default)]
    pub admin: bool,
    /// Org boss.
    #[serde(default)]
    pub boss: bool,
    /// Whether the account is activated.
    #[serde(default = "yes")]
    pub active: bool,
}

/// Which robots a group contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "robotCodes")]
pub enum GroupRobots {
    /// Every registered app's robot (handy for a default group).
    Every,
    /// Only these robot codes.
    Only(Vec<String>),
}

/// A group chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// `openConversationId` (`cid…==`), also the callback's `conversationId`.
    pub open_conversation_id: String,
    /// Group name (`conversationTitle`).
    pub title: String,
    /// Robots in the group.
    pub robots: GroupRobots,
    /// Members' userIds.
    #[serde(default)]
    pub member_ids: Vec<String>,
}

impl Group {
    /// Whether `robot_code` sits in this group.
    pub fn has_robot(&self, robot_code: &str) -> bool {
        match &self.robots {
            GroupRobots::Every => true,
            GroupRobots::Only(codes) => codes.iter().any(|code| code == robot_code),
        }
    }
}

/// The whole simulated org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Directory {
    /// The org's corpId (`senderCorpId`, `chatbotCorpId`).
    pub corp_id: String,
    /// Departments, root first.
    pub departments: Vec<Department>,
    /// Users, in the org's custom order.
    pub users: Vec<User>,
    /// Group chats.
    pub groups: Vec<Group>,
    /// External contacts (customers, partners): `getbyunionid` knows them (`contact_type` 1),
    /// robot messages to their userid do not reach them, and no department lists them.
    #[serde(default)]
    pub external_contacts: Vec<ExternalContact>,
}

/// An external contact of the org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalContact {
    /// The id DingTalk gives it in this org.
    pub userid: String,
    /// `unionid`.
    pub unionid: String,
}

fn yes() -> bool {
    true
}

/// A seeded user.
fn user(userid: &str, name: &str, title: &str, dept_ids: &[i64]) -> User {
    User {
        userid: userid.to_owned(),
        unionid: format!("union-{userid}"),
        name: name.to_owned(),
        mobile: String::new(),
        email: format!("{userid}@example.com"),
        title: title.to_owned(),
        dept_ids: dept_ids.to_vec(),
        admin: false,
        boss: false,
        active: true,
    }
}

/// A seeded department.
fn dept(dept_id: i64, name: &str, parent_id: Option<i64>) -> Department {
    Department {
        dept_id,
        name: name.to_owned(),
        parent_id,
    }
}

impl Directory {
    /// The group every robot is in.
    pub const OPS_GROUP: &'static str = "cidSimOps00000000000000==";
    /// A group no robot is in (for "robot not in group").
    pub const NO_ROBOT_GROUP: &'static str = "cidSimNoRobot000000000000==";

    /// A small org: root (1) with Engineering (2, containing Platform 4) and Operations (3);
    /// five users; the groups [`Directory::OPS_GROUP`] and [`Directory::NO_ROBOT_GROUP`].
    pub fn seeded() -> Self {
        let mut boss = user("manager001", "Chen Jing", "CEO", &[ROOT_DEPT_ID]);
        boss.admin = true;
        boss.boss = true;
        Self {
            corp_id: "dingsimcorp0000000".to_owned(),
            departments: vec![
                dept(ROOT_DEPT_ID, "Sim Org", None),
                dept(2, "Engineering", Some(ROOT_DEPT_ID)),
                dept(3, "Operations", Some(ROOT_DEPT_ID)),
                dept(4, "Platform", Some(2)),
            ],
            users: vec![
                boss,
                user("user001", "Li Lei", "Engineer", &[2]),
                user("user002", "Han Meimei", "Engineer", &[2, 4]),
                user("user003", "Zhang Wei", "Operator", &[3]),
                user("user004", "Wang Fang", "SRE", &[4]),
            ],
            groups: vec![
                Group {
                    open_conversation_id: Self::OPS_GROUP.to_owned(),
                    title: "ops".to_owned(),
                    robots: GroupRobots::Every,
                    member_ids: vec!["user001".into(), "user003".into(), "user004".into()],
                },
                Group {
                    open_conversation_id: Self::NO_ROBOT_GROUP.to_owned(),
                    title: "no robots here".to_owned(),
                    robots: GroupRobots::Only(Vec::new()),
                    member_ids: vec!["user002".into()],
                },
            ],
            external_contacts: vec![ExternalContact {
                userid: "ext001".to_owned(),
                unionid: "union-ext001".to_owned(),
            }],
        }
    }

    /// The user with this userid.
    pub fn user(&self, userid: &str) -> Option<&User> {
        self.users.iter().find(|user| user.userid == userid)
    }

    /// The user with this unionid.
    pub fn user_by_unionid(&self, unionid: &str) -> Option<&User> {
        self.users.iter().find(|user| user.unionid == unionid)
    }

    /// The external contact with this unionid.
    pub fn external_by_unionid(&self, unionid: &str) -> Option<&ExternalContact> {
        self.external_contacts
            .iter()
            .find(|contact| contact.unionid == unionid)
    }

    /// The department with this id.
    pub fn department(&self, dept_id: i64) -> Option<&Department> {
        self.departments.iter().find(|dept| dept.dept_id == dept_id)
    }

    /// Direct sub-departments of `dept_id`.
    pub fn children(&self, dept_id: i64) -> impl Iterator<Item = &Department> {
        self.departments
            .iter()
            .filter(move |dept| dept.parent_id == Some(dept_id))
    }

    /// Direct members of `dept_id`, in custom order.
    pub fn members(&self, dept_id: i64) -> impl Iterator<Item = &User> {
        self.users
            .iter()
            .filter(move |user| user.dept_ids.contains(&dept_id))
    }

    /// The group with this openConversationId.
    pub fn group(&self, open_conversation_id: &str) -> Option<&Group> {
        self.groups
            .iter()
            .find(|group| group.open_conversation_id == open_conversation_id)
    }

    /// Adds a group, replacing one with the same id.
    pub fn upsert_group(&mut self, group: Group) {
        self.groups
            .retain(|known| known.open_conversation_id != group.open_conversation_id);
        self.groups.push(group);
    }
}

impl Default for Directory {
    fn default() -> Self {
        Self::seeded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_org_has_a_tree_under_the_root() {
        let dir = Directory::seeded();
        let subs: Vec<i64> = dir.children(ROOT_DEPT_ID).map(|d| d.dept_id).collect();
        assert_eq!(subs, vec![2, 3]);
        assert_eq!(dir.members(4).count(), 2);
        assert!(dir
            .group(Directory::OPS_GROUP)
            .unwrap()
            .has_robot("anything"));
        assert!(!dir
            .group(Directory::NO_ROBOT_GROUP)
            .unwrap()
            .has_robot("anything"));
    }

    #[test]
    fn every_seeded_user_belongs_to_existing_departments() {
        let dir = Directory::seeded();
        for user in &dir.users {
            assert!(user.dept_ids.iter().all(|id| dir.department(*id).is_some()));
        }
    }
}
