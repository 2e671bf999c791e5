//! Human in the loop: a run that stops to ask the user (LangGraph's `interrupt()`), and the
//! user's reply that lets it go on (`command.resume`). Pure: reading interrupts, showing them,
//! and turning a reply typed in DingTalk into the value the graph waits for.
//!
//! Four shapes of interrupt value are understood:
//! - **a tool-call review** (LangChain's human-in-the-loop middleware): `{"action_requests":
//!   [{"name", "args", "description"}], "review_configs": …}`, resumed with
//!   `{"decisions": [{"type": "approve"} | {"type": "reject", "message"?} | {"type":
//!   "respond", "message"}]}`, one per request;
//! - **a tool-call approval** (the same middleware in `per_call` mode): `{"type":
//!   "tool_approval", "name", "args", "description"}`, one interrupt per call, its allowed
//!   decisions in the interrupt's `response_schema`, resumed with one such decision;
//! - **an agent-inbox request** (LangGraph's prebuilt `HumanInterrupt`): `[{"action_request":
//!   {"action", "args"}, "config", "description"}]`, resumed with `[{"type": "accept" | "ignore"
//!   | "response", "args"}]`, one per request;
//! - **anything else** (a question as a string, or an object with a `question`, `message`, …
//!   field): shown as it is, and resumed with the reply's text.
//!
//! For the first two a reply of "yes" (同意, ok, …) approves, "no" (拒绝, cancel, …) declines,
//! and any other text declines with that text as the reason (review) or answers in the user's
//! words (agent inbox), each only where the interrupt allows it (`review_configs[].
//! allowed_decisions`, the agent-inbox `config.allow_*`): a reply it does not allow is not sent,
//! since the graph would fail on it.
//!
//! A card button pressed while the expert waits answers too: its action id (or `params.action`)
//! is read as yes or no, and a free question gets the press itself (`{"card", "action",
//! "params"}`); a button that says neither yes nor no cannot decide.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// One pending interrupt of a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupt {
    /// Its id, which a resume of several interrupts at once is keyed by (`interrupt_id` on
    /// older servers; absent on the oldest).
    pub id: Option<String>,
    /// What the graph passed to `interrupt()`.
    pub value: Value,
    /// The JSON Schema of the answer it takes, when the graph gave one (`response_schema`).
    pub schema: Option<Value>,
}

impl Interrupt {
    /// Its id and a hash of its value: what tells one question from another (ids alone do not
    /// always: LangGraph derives them from the task, so two questions a node asks one after the
    /// other share one).
    pub fn fingerprint(&self) -> String {
        let hash = Sha256::digest(self.value.to_string().as_bytes());
        let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}#{hex}", self.id.as_deref().unwrap_or(""))
    }

    fn read(item: &Value) -> Self {
        let id = item["id"]
            .as_str()
            .or_else(|| item["interrupt_id"].as_str())
            .map(str::to_owned);
        Self {
            id,
            value: item.get("value").cloned().unwrap_or(Value::Null),
            schema: item
                .get("response_schema")
                .filter(|schema| !schema.is_null())
                .cloned(),
        }
    }
}

/// The interrupts of a run stream's `values` event (`__interrupt__`: a list).
pub fn from_state(state: &Value) -> Vec<Interrupt> {
    state["__interrupt__"]
        .as_array()
        .map(|items| items.iter().map(Interrupt::read).collect())
        .unwrap_or_default()
}

/// The pending interrupts of a thread as `GET /threads/{id}` shows it: none unless its status is
/// `interrupted`; then its `interrupts` (task id → list). A thread is `interrupted` with no
/// interrupts too when a run of it was cancelled mid-step: nothing waits for the user then.
/// Only a server that does not list interrupts at all gets one without id or value.
pub fn from_thread(thread: &Value) -> Vec<Interrupt> {
    if thread["status"] != "interrupted" {
        return Vec::new();
    }
    match &thread["interrupts"] {
        Value::Object(tasks) => tasks
            .values()
            .filter_map(Value::as_array)
            .flatten()
            .map(Interrupt::read)
            .collect(),
        Value::Array(items) => items.iter().map(Interrupt::read).collect(),
        _ => vec![Interrupt {
            id: None,
            value: Value::Null,
            schema: None,
        }],
    }
}

/// Adds `more` to `interrupts`, leaving out those already there (LangGraph sends one `values`
/// event per task that stopped).
pub fn merge(interrupts: &mut Vec<Interrupt>, more: &[Interrupt]) {
    for interrupt in more {
        if !interrupts.contains(interrupt) {
            interrupts.push(interrupt.clone());
        }
    }
}

/// What an interrupt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Tool calls to approve or reject (LangChain's middleware).
    Review,
    /// One tool call to approve or reject (the middleware's `per_call` mode).
    Approval,
    /// Agent-inbox requests to accept, ignore or answer.
    Inbox,
    /// A free question.
    Question,
}

impl Shape {
    fn of(value: &Value) -> Self {
        if value["action_requests"].is_array() {
            Self::Review
        } else if value["type"] == "tool_approval" {
            Self::Approval
        } else if inbox_requests(value).is_some() {
            Self::Inbox
        } else {
            Self::Question
        }
    }
}

/// The requests of an agent-inbox interrupt: a list of objects with `action_request` (or one).
fn inbox_requests(value: &Value) -> Option<Vec<&Value>> {
    match value {
        Value::Array(items)
            if !items.is_empty() && items.iter().all(|i| i["action_request"].is_object()) =>
        {
            Some(items.iter().collect())
        }
        Value::Object(_) if value["action_request"].is_object() => Some(vec![value]),
        _ => None,
    }
}

/// The decisions LangChain's middleware allows for one tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Allowed {
    approve: bool,
    reject: bool,
    respond: bool,
}

impl Allowed {
    /// What a tool without a configuration (or with `True`) allows.
    const ALL: Self = Self {
        approve: true,
        reject: true,
        respond: true,
    };

    /// From a list of decision types (`allowed_decisions`).
    fn listed(decisions: &[Value]) -> Self {
        let has = |name: &str| decisions.iter().any(|d| d == name);
        Self {
            approve: has("approve"),
            reject: has("reject"),
            respond: has("respond"),
        }
    }

    /// From a `response_schema`: the decision types it names (`const` or `enum` values); `None`
    /// when it names none.
    fn from_schema(schema: &Value) -> Option<Self> {
        fn collect<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
            match value {
                Value::Object(fields) => {
                    if let Some(constant) = fields.get("const") {
                        found.push(constant);
                    }
                    if let Some(Value::Array(values)) = fields.get("enum") {
                        found.extend(values);
                    }
                    fields.values().for_each(|v| collect(v, found));
                }
                Value::Array(items) => items.iter().for_each(|v| collect(v, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        collect(schema, &mut found);
        let decisions: Vec<Value> = found.into_iter().cloned().collect();
        let allowed = Self::listed(&decisions);
        (allowed.approve
            || allowed.reject
            || allowed.respond
            || decisions.iter().any(|d| d == "edit"))
        .then_some(allowed)
    }

    fn choices(self) -> Choices {
        Choices {
            yes: self.approve,
            no: self.reject,
            other: if self.reject {
                Some(OtherReply::Declines)
            } else if self.respond {
                Some(OtherReply::Answers)
            } else {
                None
            },
        }
    }

    /// The decision a reply makes (one the tool allows: checked before).
    fn decision(self, verdict: Verdict, words: &str) -> Value {
        match verdict {
            Verdict::Yes => json!({"type": "approve"}),
            Verdict::No | Verdict::Unclear => json!({"type": "reject"}),
            Verdict::Other if self.reject => json!({"type": "reject", "message": words}),
            Verdict::Other => json!({"type": "respond", "message": words}),
        }
    }
}

/// What each tool call of a review allows, in the order of its `action_requests`.
fn review_allowed(value: &Value) -> Vec<Allowed> {
    let configs = value["review_configs"].as_array();
    value["action_requests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|request| {
            let name = request["name"].as_str().or(request["action"].as_str());
            // A tool without a config (or a config without a list) allows every decision.
            configs
                .and_then(|configs| {
                    configs
                        .iter()
                        .find(|config| config["action_name"].as_str() == name)
                })
                .and_then(|config| config["allowed_decisions"].as_array())
                .map_or(Allowed::ALL, |decisions| Allowed::listed(decisions))
        })
        .collect()
}

/// What a `per_call` approval allows: its schema's decisions, else every one.
fn approval_allowed(interrupt: &Interrupt) -> Allowed {
    interrupt
        .schema
        .as_ref()
        .and_then(Allowed::from_schema)
        .unwrap_or(Allowed::ALL)
}

/// What a decision lets the user reply (for several decisions: what every one of them allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choices {
    /// "yes" approves (accepts).
    pub yes: bool,
    /// "no" declines (rejects, ignores).
    pub no: bool,
    /// What any other reply does, if it is allowed.
    pub other: Option<OtherReply>,
}

/// What a reply other than yes or no does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherReply {
    /// Declines, with the reply as the reason (a tool-call review).
    Declines,
    /// Answers in the user's words (an agent-inbox request).
    Answers,
    /// Both, for a review and an agent-inbox request asked at once.
    DeclinesAndAnswers,
}

impl Choices {
    fn allows(self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Yes => self.yes,
            Verdict::No => self.no,
            Verdict::Other => self.other.is_some(),
            Verdict::Unclear => false,
        }
    }

    fn and(self, other: Self) -> Self {
        Self {
            yes: self.yes && other.yes,
            no: self.no && other.no,
            other: match (self.other, other.other) {
                (Some(a), Some(b)) if a == b => Some(a),
                (Some(_), Some(_)) => Some(OtherReply::DeclinesAndAnswers),
                _ => None,
            },
        }
    }

    /// The choices of one interrupt; `None` for a free question.
    fn of(interrupt: &Interrupt) -> Option<Self> {
        let value = &interrupt.value;
        match Shape::of(value) {
            Shape::Question => None,
            Shape::Review => review_allowed(value)
                .into_iter()
                .map(Allowed::choices)
                .reduce(Self::and)
                .or(Some(Allowed::ALL.choices())),
            Shape::Approval => Some(approval_allowed(interrupt).choices()),
            Shape::Inbox => {
                let requests = inbox_requests(value).unwrap_or_default();
                let every = |flag: &str| {
                    requests
                        .iter()
                        .all(|r| r["config"][flag].as_bool().unwrap_or(true))
                };
                Some(Self {
                    yes: every("allow_accept"),
                    no: every("allow_ignore"),
                    other: every("allow_respond").then_some(OtherReply::Answers),
                })
            }
        }
    }
}

/// What the decisions among `interrupts` allow; `None` when none is a decision.
pub fn choices(interrupts: &[Interrupt]) -> Option<Choices> {
    interrupts
        .iter()
        .filter_map(Choices::of)
        .reduce(Choices::and)
}

/// What the user answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserReply<'a> {
    /// A message.
    Text(&'a str),
    /// A card button.
    Press {
        /// Its action id (or `params.action`).
        action: &'a str,
        /// The press as the expert reads it.
        card_action: &'a Value,
    },
}

impl<'a> UserReply<'a> {
    fn verdict(self) -> Verdict {
        match self {
            Self::Text(text) => Verdict::of(text),
            Self::Press { action, .. } => match Verdict::of(action) {
                // A button has no words to pass on.
                Verdict::Other => Verdict::Unclear,
                verdict => verdict,
            },
        }
    }

    /// The reply as words (a press has none but its action).
    fn words(self) -> &'a str {
        match self {
            Self::Text(text) => text,
            Self::Press { action, .. } => action,
        }
    }
}

/// A reply read as a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Yes,
    No,
    /// Words that say neither: a reason, or an answer.
    Other,
    /// A button that says neither.
    Unclear,
}

const YES: [&str; 30] = [
    "yes",
    "y",
    "yep",
    "yeah",
    "sure",
    "ok",
    "okay",
    "approve",
    "approved",
    "accept",
    "confirm",
    "go",
    "go ahead",
    "do it",
    "yes please",
    "是",
    "是的",
    "对",
    "好",
    "好的",
    "行",
    "嗯",
    "同意",
    "确认",
    "确定",
    "可以",
    "可以的",
    "没问题",
    "批准",
    "继续",
];
const NO: [&str; 22] = [
    "no",
    "n",
    "nope",
    "reject",
    "deny",
    "decline",
    "cancel",
    "stop",
    "don't",
    "no thanks",
    "ignore",
    "否",
    "不",
    "不要",
    "不行",
    "不用",
    "不可以",
    "拒绝",
    "取消",
    "不同意",
    "算了",
    "别",
];

impl Verdict {
    fn of(reply: &str) -> Self {
        let word = reply
            .trim()
            .trim_end_matches(['.', '!', '。', '！', '~', '，', ',', ' '])
            .trim()
            .to_lowercase();
        if YES.contains(&word.as_str()) {
            Self::Yes
        } else if NO.contains(&word.as_str()) {
            Self::No
        } else {
            Self::Other
        }
    }
}

/// The `command.resume` value answering `interrupts` with the user's `reply`: the answer itself
/// for one interrupt, a map of answers by interrupt id for several (without distinct ids they
/// cannot be told apart, and the first is answered). `Err` with what is allowed when a decision does not
/// allow this reply.
pub fn resume_value(interrupts: &[Interrupt], reply: UserReply<'_>) -> Result<Value, Choices> {
    if let Some(choices) = choices(interrupts) {
        if !choices.allows(reply.verdict()) {
            return Err(choices);
        }
    }
    Ok(match interrupts {
        [] => free_answer(reply),
        [only] => answer(only, reply),
        several => several
            .iter()
            .map(|i| i.id.clone().map(|id| (id, answer(i, reply))))
            .collect::<Option<Map<_, _>>>()
            .filter(|by_id| by_id.len() == several.len())
            .map_or_else(|| answer(&several[0], reply), Value::Object),
    })
}

/// The answer to a free question: the message, or the press.
fn free_answer(reply: UserReply<'_>) -> Value {
    match reply {
        UserReply::Text(text) => Value::String(text.to_owned()),
        UserReply::Press { card_action, .. } => card_action.clone(),
    }
}

/// The answer to one interrupt (for a decision, a reply it allows).
fn answer(interrupt: &Interrupt, reply: UserReply<'_>) -> Value {
    let value = &interrupt.value;
    let verdict = reply.verdict();
    let reply_words = reply.words();
    match Shape::of(value) {
        // One decision per tool call, each as that tool allows.
        Shape::Review => {
            let decisions: Vec<Value> = review_allowed(value)
                .into_iter()
                .map(|allowed| allowed.decision(verdict, reply_words))
                .collect();
            json!({ "decisions": decisions })
        }
        Shape::Approval => approval_allowed(interrupt).decision(verdict, reply_words),
        Shape::Inbox => {
            let response = match verdict {
                Verdict::Yes => json!({"type": "accept", "args": null}),
                Verdict::No | Verdict::Unclear => json!({"type": "ignore", "args": null}),
                Verdict::Other => json!({"type": "response", "args": reply_words}),
            };
            // A list of requests gets a list of answers, one request (not in a list) one answer.
            match value {
                Value::Array(requests) => Value::Array(vec![response; requests.len()]),
                _ => response,
            }
        }
        Shape::Question => free_answer(reply),
    }
}

/// What the user is shown for `interrupts` (markdown), and, when the reply is read as a
/// decision, what it may be (the caller says how to answer).
pub fn prompt(interrupts: &[Interrupt]) -> (String, Option<Choices>) {
    let parts: Vec<String> = interrupts
        .iter()
        .filter_map(|interrupt| {
            let value = &interrupt.value;
            let text = match Shape::of(value) {
                Shape::Review => value["action_requests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|request| {
                        describe(
                            &request["description"],
                            request["name"].as_str().or(request["action"].as_str()),
                            &request["args"],
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n\n"),
                Shape::Approval => describe(
                    &value["description"],
                    value["name"].as_str(),
                    &value["args"],
                ),
                Shape::Inbox => inbox_requests(value)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|request| {
                        describe(
                            &request["description"],
                            request["action_request"]["action"].as_str(),
                            &request["action_request"]["args"],
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n\n"),
                Shape::Question => question(value),
            };
            (!text.trim().is_empty()).then_some(text)
        })
        .collect();
    (parts.join("\n\n"), choices(interrupts))
}

/// A request to approve: its description (else the action), and its arguments, always: a fixed
/// description ("Email the report to Li") would not show that this call emails someone else.
fn describe(description: &Value, action: Option<&str>, args: &Value) -> String {
    let text = match description.as_str().filter(|t| !t.trim().is_empty()) {
        Some(text) => text.to_owned(),
        None => format!("**{}**", action.unwrap_or("?")),
    };
    let no_args = args.is_null() || args.as_object().is_some_and(Map::is_empty);
    if no_args {
        text
    } else {
        format!("{text}\n\n{}", code_block(args))
    }
}

/// A free question: a string as it is, an object's first text field, else the value as JSON.
fn question(value: &Value) -> String {
    const FIELDS: [&str; 7] = [
        "question",
        "message",
        "prompt",
        "description",
        "text",
        "content",
        "query",
    ];
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Object(fields) => FIELDS
            .iter()
            .find_map(|name| fields.get(*name).and_then(Value::as_str))
            .map(str::to_owned)
            .unwrap_or_else(|| code_block(value)),
        other => code_block(other),
    }
}

fn code_block(value: &Value) -> String {
    let json = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    format!("```json\n{json}\n```")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(value: Value) -> Vec<Interrupt> {
        vec![Interrupt {
            id: Some("i1".into()),
            value,
            schema: None,
        }]
    }

    #[test]
    fn interrupts_are_read_from_a_state_and_from_a_thread() {
        let state = json!({"__interrupt__": [
            {"value": "Send it?", "id": "a", "resumable": true},
            {"value": {"question": "Which day?"}, "interrupt_id": "b"}
        ]});
        let read = from_state(&state);
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].id.as_deref(), Some("a"));
        assert_eq!(read[1].id.as_deref(), Some("b"));
        assert_eq!(read[1].value["question"], "Which day?");
        assert!(from_state(&json!({"messages": []})).is_empty());

        let thread = json!({"status": "interrupted", "interrupts": {
            "task-1": [{"value": "Send it?", "id": "a"}]
        }});
        assert_eq!(from_thread(&thread), from_state(&state)[..1].to_vec());
        let idle = json!({"status": "idle", "interrupts": {"t": [{"value": "x", "id": "a"}]}});
        assert!(from_thread(&idle).is_empty());
        let unlisted = from_thread(&json!({"status": "interrupted"}));
        assert_eq!(unlisted.len(), 1);
        assert_eq!(unlisted[0].id, None);
        // What a run cancelled mid-step leaves: interrupted, with nothing to answer.
        let cancelled = json!({"status": "interrupted", "interrupts": {}});
        assert!(from_thread(&cancelled).is_empty());

        let mut merged = from_state(&state)[..1].to_vec();
        merge(&mut merged, &from_state(&state));
        assert_eq!(merged, from_state(&state));
    }

    #[test]
    fn everyday_yes_and_no_are_read_as_decisions() {
        for yes in ["Yes", "ok!", "好的，", "行", "没问题。", "go ahead", "确定"] {
            assert_eq!(Verdict::of(yes), Verdict::Yes, "{yes}");
        }
        for no in ["no", "不行", "算了", "Cancel.", "不用"] {
            assert_eq!(Verdict::of(no), Verdict::No, "{no}");
        }
        assert_eq!(Verdict::of("yes, but to Wang"), Verdict::Other);
    }

    #[test]
    fn a_question_is_answered_with_the_reply_itself() {
        assert_eq!(
            resume_value(&one(json!("Which day?")), UserReply::Text("Friday")).unwrap(),
            json!("Friday")
        );
        // Even a "yes": a free question has no decision to make.
        assert_eq!(
            resume_value(&one(json!({"question": "Sure?"})), UserReply::Text("yes")).unwrap(),
            json!("yes")
        );
        assert_eq!(
            prompt(&one(json!({"question": "Which day?", "options": [1, 2]}))),
            ("Which day?".to_owned(), None)
        );
        let (shown, _) = prompt(&one(json!({"amount": 3})));
        assert!(shown.starts_with("```json\n") && shown.contains("\"amount\": 3"));
    }

    #[test]
    fn a_tool_review_is_approved_or_rejected_with_the_reply_as_reason() {
        let review = json!({
            "action_requests": [
                {"name": "send_email", "args": {"to": "li@example.com"}, "description": "Send the report to Li"},
                {"name": "delete_file", "args": {"path": "/tmp/x"}}
            ],
            "review_configs": [{"action_name": "send_email", "allowed_decisions": ["approve", "reject"]}]
        });
        let interrupts = one(review);
        assert_eq!(
            resume_value(&interrupts, UserReply::Text(" 同意。")).unwrap(),
            json!({"decisions": [{"type": "approve"}, {"type": "approve"}]})
        );
        assert_eq!(
            resume_value(&interrupts, UserReply::Text("No!")).unwrap(),
            json!({"decisions": [{"type": "reject"}, {"type": "reject"}]})
        );
        assert_eq!(
            resume_value(&interrupts, UserReply::Text("not to Li, to Wang")).unwrap(),
            json!({"decisions": [
                {"type": "reject", "message": "not to Li, to Wang"},
                {"type": "reject", "message": "not to Li, to Wang"}
            ]})
        );
        let (shown, decides) = prompt(&interrupts);
        assert!(decides.is_some());
        // The arguments are shown under a description too: it may not say where the email goes.
        assert_eq!(
            shown,
            "Send the report to Li\n\n```json\n{\n  \"to\": \"li@example.com\"\n}\n```\n\n\
             **delete_file**\n\n```json\n{\n  \"path\": \"/tmp/x\"\n}\n```"
        );
    }

    #[test]
    fn an_agent_inbox_request_is_accepted_ignored_or_answered() {
        let inbox = json!([{
            "action_request": {"action": "book_flight", "args": {"to": "PEK"}},
            "config": {"allow_accept": true, "allow_ignore": true, "allow_respond": true},
            "description": "Book the 9:00 flight?"
        }]);
        let interrupts = one(inbox);
        assert_eq!(
            resume_value(&interrupts, UserReply::Text("ok")).unwrap(),
            json!([{"type": "accept", "args": null}])
        );
        assert_eq!(
            resume_value(&interrupts, UserReply::Text("取消")).unwrap(),
            json!([{"type": "ignore", "args": null}])
        );
        assert_eq!(
            resume_value(&interrupts, UserReply::Text("the 10:00 one")).unwrap(),
            json!([{"type": "response", "args": "the 10:00 one"}])
        );
        assert_eq!(
            prompt(&interrupts),
            (
                "Book the 9:00 flight?\n\n```json\n{\n  \"to\": \"PEK\"\n}\n```".to_owned(),
                Some(Choices {
                    yes: true,
                    no: true,
                    other: Some(OtherReply::Answers)
                })
            )
        );
        // One request, not in a list: one answer, not in a list.
        let single = one(json!({"action_request": {"action": "book_flight", "args": {}}}));
        assert_eq!(
            resume_value(&single, UserReply::Text("ok")).unwrap(),
            json!({"type": "accept", "args": null})
        );
    }

    #[test]
    fn a_reply_the_interrupt_does_not_allow_is_refused_with_what_it_allows() {
        let approve_or_edit = one(json!({
            "action_requests": [{"name": "send_email", "args": {}}],
            "review_configs": [{"action_name": "send_email", "allowed_decisions": ["approve", "edit"]}]
        }));
        let only_yes = Choices {
            yes: true,
            no: false,
            other: None,
        };
        assert_eq!(
            resume_value(&approve_or_edit, UserReply::Text("no")),
            Err(only_yes)
        );
        assert_eq!(
            resume_value(&approve_or_edit, UserReply::Text("to Wang")),
            Err(only_yes)
        );
        assert!(resume_value(&approve_or_edit, UserReply::Text("yes")).is_ok());
        assert_eq!(prompt(&approve_or_edit).1, Some(only_yes));

        // LangGraph's own example: accept, edit or respond, but not ignore.
        let no_ignore = one(json!([{
            "action_request": {"action": "t", "args": {}},
            "config": {"allow_accept": true, "allow_ignore": false, "allow_respond": true, "allow_edit": true}
        }]));
        assert!(resume_value(&no_ignore, UserReply::Text("取消")).is_err());
        assert_eq!(
            resume_value(&no_ignore, UserReply::Text("later")).unwrap(),
            json!([{"type": "response", "args": "later"}])
        );
        // A free question beside a decision does not narrow it.
        let mixed = vec![
            approve_or_edit[0].clone(),
            Interrupt {
                id: Some("q".into()),
                value: json!("Why?"),
                schema: None,
            },
        ];
        assert_eq!(choices(&mixed), Some(only_yes));
        assert_eq!(choices(&one(json!("Why?"))), None);
        // A review and an agent-inbox request at once: other words do both.
        let review = Interrupt {
            id: Some("r".into()),
            value: json!({"action_requests": [{"name": "t", "args": {}}]}),
            schema: None,
        };
        let inbox = Interrupt {
            id: Some("i".into()),
            value: json!({"action_request": {"action": "a", "args": {}}}),
            schema: None,
        };
        assert_eq!(
            choices(&[review, inbox]).and_then(|c| c.other),
            Some(OtherReply::DeclinesAndAnswers)
        );
    }

    #[test]
    fn a_per_call_approval_is_answered_with_one_decision_its_schema_allows() {
        // The shape of a `response_schema` for approve-or-respond: a union on `type`.
        let schema = json!({
            "oneOf": [
                {"properties": {"type": {"const": "approve"}}, "type": "object"},
                {"$ref": "#/$defs/RespondDecision"}
            ],
            "$defs": {"RespondDecision": {"properties": {
                "type": {"const": "respond"}, "message": {"type": "string"}}}}
        });
        let approval = vec![Interrupt {
            id: Some("i1".into()),
            value: json!({"type": "tool_approval", "tool_call_id": "c1", "name": "send_email",
                "args": {"to": "li"}, "description": "Email Li"}),
            schema: Some(schema),
        }];
        assert_eq!(
            resume_value(&approval, UserReply::Text("ok")).unwrap(),
            json!({"type": "approve"})
        );
        assert_eq!(
            resume_value(&approval, UserReply::Text("sent it myself")).unwrap(),
            json!({"type": "respond", "message": "sent it myself"})
        );
        let only = Choices {
            yes: true,
            no: false,
            other: Some(OtherReply::Answers),
        };
        assert_eq!(resume_value(&approval, UserReply::Text("no")), Err(only));
        let (shown, choices) = prompt(&approval);
        assert!(shown.starts_with("Email Li\n\n```json"), "{shown}");
        assert_eq!(choices, Some(only));

        // Without a schema: every decision, reject first for other words.
        let unschemed = vec![Interrupt {
            schema: None,
            ..approval[0].clone()
        }];
        assert_eq!(
            resume_value(&unschemed, UserReply::Text("not now")).unwrap(),
            json!({"type": "reject", "message": "not now"})
        );
    }

    #[test]
    fn a_review_that_allows_respond_but_not_reject_takes_other_words_as_the_response() {
        let review = one(json!({
            "action_requests": [{"name": "lookup", "args": {}}],
            "review_configs": [{"action_name": "lookup", "allowed_decisions": ["approve", "respond"]}]
        }));
        assert_eq!(
            resume_value(&review, UserReply::Text("it is 42")).unwrap(),
            json!({"decisions": [{"type": "respond", "message": "it is 42"}]})
        );
        assert!(resume_value(&review, UserReply::Text("no")).is_err());
    }

    #[test]
    fn a_card_button_decides_by_its_action_and_answers_a_question_with_the_press() {
        let card_action = json!({"card": "c1", "action": "approve", "params": {}});
        let press = |action| UserReply::Press {
            action,
            card_action: &card_action,
        };
        let review = one(json!({"action_requests": [{"name": "t", "args": {}}]}));
        assert_eq!(
            resume_value(&review, press("approve")).unwrap(),
            json!({"decisions": [{"type": "approve"}]})
        );
        assert_eq!(
            resume_value(&review, press("reject")).unwrap(),
            json!({"decisions": [{"type": "reject"}]})
        );
        // A button has no words to give as a reason.
        assert!(resume_value(&review, press("details")).is_err());
        assert_eq!(
            resume_value(&one(json!("Which day?")), press("friday")).unwrap(),
            card_action
        );
    }

    #[test]
    fn several_interrupts_are_resumed_by_id_when_every_one_has_an_id() {
        let both = vec![
            Interrupt {
                id: Some("a".into()),
                value: json!("Name?"),
                schema: None,
            },
            Interrupt {
                id: Some("b".into()),
                value: json!({"action_requests": [{"name": "t", "args": {}}]}),
                schema: None,
            },
        ];
        assert_eq!(
            resume_value(&both, UserReply::Text("yes")).unwrap(),
            json!({"a": "yes", "b": {"decisions": [{"type": "approve"}]}})
        );
        let (shown, decides) = prompt(&both);
        assert!(shown.starts_with("Name?\n\n**t**"));
        assert!(decides.is_some());
        // With one id for both (LangGraph derives ids from the task) a map would lose one:
        // the first is answered, as without ids.
        let same_id: Vec<Interrupt> = both
            .iter()
            .map(|i| Interrupt {
                id: Some("t".into()),
                ..i.clone()
            })
            .collect();
        assert_eq!(
            resume_value(&same_id, UserReply::Text("Li")).unwrap(),
            json!("Li")
        );
        // Without ids they cannot be told apart: the first is answered.
        let anonymous: Vec<Interrupt> = both
            .into_iter()
            .map(|i| Interrupt { id: None, ..i })
            .collect();
        assert_eq!(
            resume_value(&anonymous, UserReply::Text("Li")).unwrap(),
            json!("Li")
        );
    }
}
