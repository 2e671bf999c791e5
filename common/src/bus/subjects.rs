//! Subject names of the bus. Every subject starts with `dingtalk.`; integration ids are single
//! subject tokens (their alphabet excludes `.`, `*`, `>` and spaces).

use crate::registry::IntegrationId;

use super::command::OpKind;
use super::event::EventKind;

/// All inbound events: `dingtalk.events.{integration_id}.{kind}`.
pub const EVENTS_ALL: &str = "dingtalk.events.>";
/// All commands: `dingtalk.commands.{integration_id}.{op}`.
pub const COMMANDS_ALL: &str = "dingtalk.commands.>";
/// All command results: `dingtalk.results.{integration_id}.{op}`.
pub const RESULTS_ALL: &str = "dingtalk.results.>";
/// All dead letters: `dingtalk.dlq.{stage}.{integration_id}`.
pub const DLQ_ALL: &str = "dingtalk.dlq.>";

/// Where the ingress publishes a normalized event (once per callback, so without `format!`).
pub fn event(integration: &IntegrationId, kind: EventKind) -> String {
    ["dingtalk.events.", integration.as_str(), ".", kind.as_str()].concat()
}

/// Where a system publishes a command for the notifier.
pub fn command(integration: &IntegrationId, op: OpKind) -> String {
    format!("dingtalk.commands.{integration}.{}", op.as_str())
}

/// Where the notifier publishes the one result of a command.
pub fn result(integration: &IntegrationId, op: OpKind) -> String {
    format!("dingtalk.results.{integration}.{}", op.as_str())
}

/// Where a stage (`dispatcher`, `notifier`) parks a message it gave up on.
pub fn dlq(stage: &str, integration: &str) -> String {
    format!("dingtalk.dlq.{stage}.{integration}")
}

/// Request/reply subject of a query (`list_users`, `list_chats`); plain NATS, not a stream.
pub fn query(integration: &IntegrationId, query: &str) -> String {
    format!("dingtalk.query.{integration}.{query}")
}

/// The integration and op tokens of a command subject, as raw strings, so that even a command
/// whose body cannot be read can be answered on the matching result subject.
pub fn split_command(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("dingtalk.commands.")?;
    let (integration, op) = rest.split_once('.')?;
    (!integration.is_empty() && !op.is_empty() && !op.contains('.')).then_some((integration, op))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_documented_patterns() {
        let id: IntegrationId = "acme-hr".parse().unwrap();
        assert_eq!(
            event(&id, EventKind::Message),
            "dingtalk.events.acme-hr.message"
        );
        assert_eq!(
            event(&id, EventKind::CardAction),
            "dingtalk.events.acme-hr.card_action"
        );
        assert_eq!(command(&id, OpKind::Send), "dingtalk.commands.acme-hr.send");
        assert_eq!(
            result(&id, OpKind::Recall),
            "dingtalk.results.acme-hr.recall"
        );
        assert_eq!(dlq("notifier", "acme-hr"), "dingtalk.dlq.notifier.acme-hr");
        assert_eq!(
            query(&id, "list_users"),
            "dingtalk.query.acme-hr.list_users"
        );
    }

    #[test]
    fn command_subjects_split_into_their_tokens() {
        assert_eq!(
            split_command("dingtalk.commands.a.send"),
            Some(("a", "send"))
        );
        assert_eq!(split_command("dingtalk.commands.a.b.c"), None);
        assert_eq!(split_command("dingtalk.commands.a"), None);
        assert_eq!(split_command("dingtalk.events.a.send"), None);
    }
}
