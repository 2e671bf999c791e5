//! What the events of a run stream mean, and the answer they add up to. Pure: the SSE framing
//! (multi-line data, comments, keep-alives) is `eventsource-stream`'s job, this reads one event's
//! name and data.
//!
//! A run is requested with `stream_mode: ["messages-tuple", "values"]`, so servers send:
//! `metadata` (the run id), `messages` (`[chunk, metadata]`: a piece of an AI message), `values`
//! (the whole state after a step; its last message is the answer once the run is done), `error`
//! and `end`. LangGraph's `messages` mode (`messages/partial` with the message so far,
//! `messages/complete`, `messages/metadata`) is understood too, and unknown events are ignored.
//! A run that stops to ask the user says so in a `values` event with `__interrupt__`.

use serde_json::Value;

use super::interrupt::{self, Interrupt};

/// One event of a run stream, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    /// The run's id.
    Metadata {
        /// The run id.
        run_id: String,
    },
    /// A new piece of AI message `message_id`.
    Delta {
        /// Which message it belongs to.
        message_id: Option<String>,
        /// The piece.
        text: String,
    },
    /// AI message `message_id` so far, whole.
    Snapshot {
        /// Which message.
        message_id: Option<String>,
        /// Its whole text so far.
        text: String,
    },
    /// The state's last message is this AI answer.
    Values(String),
    /// The run stopped to ask the user (`__interrupt__`); the state's answer so far, if any.
    Interrupted {
        /// The state's answer, as for [`RunEvent::Values`].
        answer: Option<String>,
        /// What it asks.
        interrupts: Vec<Interrupt>,
    },
    /// The run failed.
    Error(String),
    /// The stream is over.
    End,
    /// Nothing the dispatcher needs (human or tool messages, other stream modes).
    Ignored,
}

/// Reads one event; `Err` when its data is not what its name promises.
pub fn interpret(event: &str, data: &str) -> Result<RunEvent, String> {
    let json = || -> Result<Value, String> {
        serde_json::from_str(data).map_err(|e| format!("{event} event is not JSON: {e}"))
    };
    match event {
        "metadata" => Ok(json()?["run_id"]
            .as_str()
            .map(|id| RunEvent::Metadata {
                run_id: id.to_owned(),
            })
            .unwrap_or(RunEvent::Ignored)),
        "messages" => {
            let value = json()?;
            let chunk = value.get(0).unwrap_or(&value);
            Ok(ai_text(chunk)
                .map(|(message_id, text)| RunEvent::Delta { message_id, text })
                .unwrap_or(RunEvent::Ignored))
        }
        "messages/partial" | "messages/complete" => {
            let value = json()?;
            let last = value.as_array().and_then(|m| m.last()).unwrap_or(&value);
            Ok(ai_text(last)
                .map(|(message_id, text)| RunEvent::Snapshot { message_id, text })
                .unwrap_or(RunEvent::Ignored))
        }
        "values" => {
            let value = json()?;
            let interrupts = interrupt::from_state(&value);
            let answer = final_text(&value);
            Ok(if !interrupts.is_empty() {
                RunEvent::Interrupted { answer, interrupts }
            } else {
                answer.map(RunEvent::Values).unwrap_or(RunEvent::Ignored)
            })
        }
        "error" => {
            let message = serde_json::from_str::<Value>(data)
                .ok()
                .and_then(|v| {
                    v["message"]
                        .as_str()
                        .or_else(|| v["error"].as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| data.to_owned());
            Ok(RunEvent::Error(message))
        }
        "end" => Ok(RunEvent::End),
        _ => Ok(RunEvent::Ignored),
    }
}

/// The answer a state holds: its last message, when that is an AI message, or a tool's output
/// (a graph that ends on a tool that answers directly; in a state mid-run, the next state
/// replaces it). `None` when the state ends on the human message.
pub(crate) fn final_text(state: &Value) -> Option<String> {
    let last = state["messages"].as_array()?.last()?;
    match ai_text(last) {
        Some((_, text)) => Some(text),
        None if last["type"] == "tool" => Some(content_text(&last["content"])),
        None => None,
    }
}

/// The id and text of an AI message (or chunk); `None` for any other message type.
fn ai_text(message: &Value) -> Option<(Option<String>, String)> {
    let kind = message["type"]
        .as_str()
        .or_else(|| message["role"].as_str())?;
    if !matches!(kind, "ai" | "AIMessageChunk" | "AIMessage" | "assistant") {
        return None;
    }
    let text = content_text(&message["content"]);
    Some((message["id"].as_str().map(str::to_owned), text))
}

/// Message content is a string or a list of blocks, of which the `text` ones count.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|block| match block {
                Value::String(text) => Some(text.as_str()),
                _ if block["type"] == "text" => block["text"].as_str(),
                _ => None,
            })
            .collect(),
        _ => String::new(),
    }
}

/// What a run ended with: its answer, and what it asks the user when it stopped to ask.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunAnswer {
    /// The answer's text.
    pub text: String,
    /// The interrupts the run ended on (none when it finished).
    pub interrupts: Vec<Interrupt>,
}

/// The answer as it grows; what the user sees is the AI message being written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    message_id: Option<String>,
    text: String,
    last_values: Option<String>,
    interrupts: Vec<Interrupt>,
    streamed: bool,
}

impl Answer {
    /// Takes one event in; returns whether the visible text changed.
    pub fn apply(&mut self, event: &RunEvent) -> bool {
        match event {
            RunEvent::Delta { message_id, text } => {
                self.switch_to(message_id);
                self.streamed = true;
                self.text.push_str(text);
                !text.is_empty()
            }
            RunEvent::Snapshot { message_id, text } => {
                self.switch_to(message_id);
                self.streamed = true;
                let changed = self.text != *text;
                self.text.clone_from(text);
                changed
            }
            RunEvent::Values(text) => {
                self.last_values = Some(text.clone());
                false
            }
            RunEvent::Interrupted { answer, interrupts } => {
                if answer.is_some() {
                    self.last_values.clone_from(answer);
                }
                interrupt::merge(&mut self.interrupts, interrupts);
                false
            }
            _ => false,
        }
    }

    /// A new AI message (after a tool call, say) replaces the one shown.
    fn switch_to(&mut self, message_id: &Option<String>) {
        if message_id.is_some() && *message_id != self.message_id {
            self.message_id.clone_from(message_id);
            self.text.clear();
        }
    }

    /// The text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether any message chunk arrived (the expert streams).
    pub fn streamed(&self) -> bool {
        self.streamed
    }

    /// The whole answer: the final state's AI message, else what was streamed; and the
    /// interrupts the run ended on.
    pub fn finish(self) -> RunAnswer {
        RunAnswer {
            text: self.last_values.unwrap_or(self.text),
            interrupts: self.interrupts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_tuples_add_up_and_values_have_the_last_word() {
        let mut answer = Answer::default();
        for data in [
            r#"[{"type":"AIMessageChunk","id":"m1","content":"Hel"},{"langgraph_node":"agent"}]"#,
            r#"[{"type":"AIMessageChunk","id":"m1","content":[{"type":"text","text":"lo"}]},{}]"#,
        ] {
            assert!(answer.apply(&interpret("messages", data).unwrap()));
        }
        assert_eq!(answer.text(), "Hello");
        assert!(answer.streamed());
        let values = "{\n\"messages\": [\n{\"type\":\"human\",\"content\":\"hi\"},\n{\"type\":\"ai\",\"content\":\"Hello!\"}]}";
        answer.apply(&interpret("values", values).unwrap());
        assert_eq!(answer.finish().text, "Hello!");
    }

    #[test]
    fn partial_messages_replace_and_a_new_message_restarts_the_text() {
        let mut answer = Answer::default();
        answer.apply(
            &interpret(
                "messages/partial",
                r#"[{"type":"ai","id":"a","content":"Hi th"}]"#,
            )
            .unwrap(),
        );
        answer.apply(
            &interpret(
                "messages/partial",
                r#"[{"type":"ai","id":"a","content":"Hi there"}]"#,
            )
            .unwrap(),
        );
        assert_eq!(answer.text(), "Hi there");
        answer.apply(
            &interpret(
                "messages",
                r#"[{"type":"AIMessageChunk","id":"b","content":"Done"},{}]"#,
            )
            .unwrap(),
        );
        assert_eq!(answer.text(), "Done");
        assert_eq!(answer.finish().text, "Done");
    }

    #[test]
    fn human_and_tool_messages_and_unknown_events_are_ignored() {
        assert_eq!(
            interpret("messages", r#"[{"type":"tool","content":"42"},{}]"#).unwrap(),
            RunEvent::Ignored
        );
        assert_eq!(
            interpret(
                "values",
                r#"{"messages":[{"type":"human","content":"hi"}]}"#
            )
            .unwrap(),
            RunEvent::Ignored
        );
        assert_eq!(interpret("updates", "{}").unwrap(), RunEvent::Ignored);
        assert_eq!(interpret("end", "").unwrap(), RunEvent::End);
        assert_eq!(
            interpret("metadata", r#"{"run_id":"r1","attempt":1}"#).unwrap(),
            RunEvent::Metadata {
                run_id: "r1".into()
            }
        );
    }

    #[test]
    fn a_state_that_ends_on_a_tool_output_answers_with_it() {
        let mut answer = Answer::default();
        answer.apply(
            &interpret(
                "messages",
                r#"[{"type":"AIMessageChunk","id":"m1","content":"Let me look"},{}]"#,
            )
            .unwrap(),
        );
        let values = r#"{"messages":[{"type":"human","content":"weather?"},
            {"type":"ai","content":"","tool_calls":[{"name":"weather"}]},
            {"type":"tool","content":"Sunny, 21 °C"}]}"#;
        answer.apply(&interpret("values", values).unwrap());
        assert_eq!(answer.finish().text, "Sunny, 21 °C");
    }

    #[test]
    fn a_run_that_stops_to_ask_ends_with_its_interrupts() {
        let mut answer = Answer::default();
        answer.apply(
            &interpret(
                "messages",
                r#"[{"type":"AIMessageChunk","id":"m1","content":"I will email Li."},{}]"#,
            )
            .unwrap(),
        );
        // The interrupt comes alone in a values event, after the state so far.
        let state = r#"{"messages":[{"type":"human","content":"mail Li"},
            {"type":"ai","id":"m1","content":"I will email Li.","tool_calls":[{"name":"send_email"}]}]}"#;
        answer.apply(&interpret("values", state).unwrap());
        let asked = interpret(
            "values",
            r#"{"__interrupt__":[{"value":"Send it?","id":"i1","resumable":true}]}"#,
        )
        .unwrap();
        assert_eq!(
            asked,
            RunEvent::Interrupted {
                answer: None,
                interrupts: vec![Interrupt {
                    id: Some("i1".into()),
                    value: "Send it?".into(),
                    schema: None
                }]
            }
        );
        answer.apply(&asked);
        let finished = answer.finish();
        assert_eq!(finished.text, "I will email Li.");
        assert_eq!(finished.interrupts.len(), 1);
        assert_eq!(Answer::default().finish().interrupts, vec![]);
    }

    #[test]
    fn errors_carry_the_servers_message() {
        assert_eq!(
            interpret("error", r#"{"error":"ValueError","message":"boom"}"#).unwrap(),
            RunEvent::Error("boom".into())
        );
        assert_eq!(
            interpret("error", "plain words").unwrap(),
            RunEvent::Error("plain words".into())
        );
        assert!(interpret("messages", "not json").is_err());
    }
}
