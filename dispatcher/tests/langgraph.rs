//! The dispatcher against LangGraph's own Agent Protocol server (`langgraph dev`), serving the
//! deterministic graph in `tests/langgraph/`. Needs the server, so it is `#[ignore]`d:
//! `scripts/check-langgraph` installs `langgraph-cli[inmem]`, starts the server and runs these
//! with `LANGGRAPH_URL` set.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{of_event, private, Replica, World};

fn langgraph_url() -> String {
    std::env::var("LANGGRAPH_URL").expect("LANGGRAPH_URL: run scripts/check-langgraph")
}

async fn runs_of(thread: &str) -> Vec<Value> {
    reqwest::Client::new()
        .get(format!("{}/threads/{thread}/runs", langgraph_url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn thread_of(world: &World, staff_id: &str) -> String {
    let key = common::registry::ConversationKey::new(
        "acme".parse().unwrap(),
        format!("cid-{staff_id}"),
        staff_id,
    )
    .unwrap();
    world
        .registry
        .get_binding(&key)
        .await
        .unwrap()
        .unwrap()
        .thread_id
        .to_string()
}

/// A dispatcher whose expert is the LangGraph server.
async fn on_langgraph(world: &World) -> Replica {
    let url = langgraph_url();
    world
        .dispatcher(&[("EXPERT_API_URL", &url), ("THINKING_DELAY", "0s")])
        .await
}

/// Sends message `s1` of `who` to a dispatcher that is killed once the run has begun (its
/// first command is out), and returns its successor.
async fn dies_mid_run(world: &World, who: &str, text: &str) -> Replica {
    let mut first = on_langgraph(world).await;
    world.publish(&private("acme", "s1", who, text), None).await;
    world
        .wait_commands(Duration::from_secs(10), |c| {
            !of_event(c, "acme:s1").is_empty()
        })
        .await;
    first.kill();
    on_langgraph(world).await
}

#[tokio::test]
#[ignore = "needs a LangGraph server: scripts/check-langgraph"]
async fn langgraph_answers_streams_and_keeps_the_thread_across_turns() {
    let world = World::start().await;
    world.integration("acme", Some("echo"), None).await;
    let _d = on_langgraph(&world).await;
    // A unique sender per run: the in-memory server keeps threads while it runs.
    let who = format!("u{}", std::process::id());

    assert_eq!(world.say("m1", &who, "hello").await, "echo #1: hello");
    assert_eq!(world.say("m2", &who, "again").await, "echo #2: again");

    let thread = thread_of(&world, &who).await;
    let runs = runs_of(&thread).await;
    assert_eq!(runs.len(), 2, "{runs:#?}");
    let mut events: Vec<&str> = runs
        .iter()
        .map(|r| r["metadata"]["dingtalk_event_id"].as_str().unwrap())
        .collect();
    events.sort();
    assert_eq!(events, ["acme:m1", "acme:m2"]);
    assert_eq!(runs[0]["metadata"]["dingtalkRecipientId"], who.as_str());
}

#[tokio::test]
#[ignore = "needs a LangGraph server: scripts/check-langgraph"]
async fn langgraph_run_is_joined_after_a_dispatcher_dies_mid_run() {
    let world = World::start().await;
    world.integration("acme", Some("echo"), None).await;
    let who = format!("k{}", std::process::id());
    let _second = dies_mid_run(&world, &who, "slow one").await;
    assert_eq!(world.answer("acme:s1").await, "echo #1: slow one");
    let runs = runs_of(&thread_of(&world, &who).await).await;
    assert_eq!(
        runs.len(),
        1,
        "the expert must see the message once: {runs:#?}"
    );
}

#[tokio::test]
#[ignore = "needs a LangGraph server: scripts/check-langgraph"]
async fn langgraph_interrupt_is_asked_and_the_reply_resumes_it() {
    let world = World::start().await;
    world.integration("acme", Some("echo"), Some("en")).await;
    let _d = on_langgraph(&world).await;
    let who = format!("h{}", std::process::id());

    assert_eq!(world.say("t1", &who, "plan a trip").await, "Which day?");
    // Resumed, not a second message: the graph saw one human message.
    assert_eq!(
        world.say("t2", &who, "Friday").await,
        "echo #1: plan a trip on Friday"
    );
    assert_eq!(world.say("t3", &who, "thanks").await, "echo #2: thanks");
}

#[tokio::test]
#[ignore = "needs a LangGraph server: scripts/check-langgraph"]
async fn langgraph_interrupt_of_a_joined_run_is_asked_by_the_successor() {
    let world = World::start().await;
    world.integration("acme", Some("echo"), Some("en")).await;
    let who = format!("j{}", std::process::id());
    let _second = dies_mid_run(&world, &who, "slow trip").await;
    assert_eq!(world.answer("acme:s1").await, "Which day?");
    assert_eq!(
        world.say("s2", &who, "Monday").await,
        "echo #1: slow trip on Monday"
    );
}

#[tokio::test]
#[ignore = "needs a LangGraph server: scripts/check-langgraph"]
async fn langgraph_tool_review_is_approved_or_rejected_as_the_middleware_expects() {
    let world = World::start().await;
    world.integration("acme", Some("review"), Some("en")).await;
    let _d = on_langgraph(&world).await;
    let who = format!("r{}", std::process::id());
    let question = "Email the report to Li\n\n```json\n{\n  \"to\": \"li\"\n}\n```\n\n\
                    Reply \"yes\" to go ahead; \"no\" to decline; \
                    anything else to decline, with your words as the reason.";
    let turns = [
        ("r1", "mail the report", question.to_owned()),
        ("r2", "yes", "done: sent to li".to_owned()),
        ("r3", "mail it again", question.to_owned()),
        (
            "r4",
            "not to Li",
            "done: User rejected the tool call for `send_email` with reason: not to Li".to_owned(),
        ),
        ("r5", "and again", question.to_owned()),
    ];
    for (id, text, expected) in turns {
        assert_eq!(world.say(id, &who, text).await, expected, "{text}");
    }
    let declined = world.say("r6", &who, "no").await;
    assert!(
        declined.starts_with("done: User rejected the tool call for `send_email` with id"),
        "{declined}"
    );
}

#[tokio::test]
#[ignore = "needs a LangGraph server: scripts/check-langgraph"]
async fn langgraph_unknown_expert_is_named_not_taken_for_a_lost_thread() {
    let world = World::start().await;
    // A UUID the server has no assistant for: LangGraph answers "Thread or assistant not found."
    let ghost = "33333333-1111-1111-1111-111111111111";
    world.integration("acme", Some(ghost), Some("en")).await;
    let _d = on_langgraph(&world).await;
    let who = format!("g{}", std::process::id());
    assert!(world.say("g1", &who, "hello").await.starts_with("Sorry"));
    let letters = world.wait_dead_letters(Duration::from_secs(10)).await;
    let reason = letters[0]
        .1
        .get(common::bus::dlq_headers::REASON)
        .unwrap()
        .as_str()
        .to_owned();
    assert!(reason.starts_with("expert_not_found:"), "{reason}");
    assert!(runs_of(&thread_of(&world, &who).await).await.is_empty());
}

#[tokio::test]
#[ignore = "needs a LangGraph server: scripts/check-langgraph"]
async fn langgraph_per_call_approval_is_answered_within_its_response_schema() {
    let world = World::start().await;
    world
        .integration("acme", Some("review_per_call"), Some("en"))
        .await;
    let _d = on_langgraph(&world).await;
    let who = format!("p{}", std::process::id());
    let question = "Email the report to Li\n\n```json\n{\n  \"to\": \"li\"\n}\n```\n\n\
                    Reply \"yes\" to go ahead; anything else to answer in your own words.";
    let turns = [
        ("p1", "mail the report", question.to_owned()),
        ("p2", "yes", "done: sent to li".to_owned()),
        ("p3", "mail it again", question.to_owned()),
        // Rejecting is not among its decisions: refused here, not failed at the server.
        (
            "p4",
            "no",
            format!("That reply does not fit this question.\n\n{question}"),
        ),
        (
            "p5",
            "already sent it myself",
            "done: already sent it myself".to_owned(),
        ),
    ];
    for (id, text, expected) in turns {
        assert_eq!(world.say(id, &who, text).await, expected, "{text}");
    }
}
