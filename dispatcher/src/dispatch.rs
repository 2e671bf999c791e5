//! One event's work: pick the expert, find or open the conversation's thread, run the expert
//! (retrying what may succeed later), and answer. The consumer around it handles claims, order,
//! acks and dead letters.

use std::time::{Duration, Instant};

use common::bus::event::Event;
use common::registry::{
    ConversationKey, Language, Registry, RegistryError, ThreadId, WaitingQuestion, XpertId,
};
use futures::StreamExt;
use serde_json::Value;

use crate::answer::{Commands, PublishError, Reply};
use crate::expert::interrupt::{self, UserReply};
use crate::expert::stream::{final_text, Answer, RunAnswer, RunEvent};
use crate::expert::{ExpertClient, ExpertError, RunLookup, RunRequest};
use crate::routing::{choose_expert, Facts, Intent, Press, Source, Work};
use crate::texts::{decision_hint, Text};
use crate::throttle::Throttle;

/// The namespace of thread ids (UUID v5), fixed forever: changing it would fork every
/// conversation.
const THREAD_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d1f_3c0a_9b2e_4f57_8a41_2c7e_55d0_b913);

/// The thread of a conversation at a generation: the same inputs always give the same UUID, so a
/// crash between creating a thread and binding it cannot fork the conversation.
pub fn thread_id(key: &ConversationKey, generation: u64) -> String {
    let name = format!("{}#{generation}", key.encoded());
    uuid::Uuid::new_v5(&THREAD_NAMESPACE, name.as_bytes()).to_string()
}

/// How an event ended, when it ended for good.
#[derive(Debug)]
pub enum Outcome {
    /// The expert answered and the answer is on the bus.
    Answered,
    /// The conversation was reset and the reset confirmed.
    Reset,
    /// No expert is configured; the user was told.
    Unrouted,
    /// The expert failed for good; the user got an apology, the event goes to the DLQ.
    Failed(ExpertError),
}

/// A failure of the dispatcher's own dependencies: the event is redelivered.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// Redis (registry) failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A command could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Why a run attempt failed.
#[derive(Debug)]
enum Failure {
    Expert(ExpertError),
    Dispatch(DispatchError),
}

impl From<ExpertError> for Failure {
    fn from(err: ExpertError) -> Self {
        Self::Expert(err)
    }
}

impl From<PublishError> for Failure {
    fn from(err: PublishError) -> Self {
        Self::Dispatch(err.into())
    }
}

impl From<RegistryError> for Failure {
    fn from(err: RegistryError) -> Self {
        Self::Dispatch(err.into())
    }
}

/// Settings of the work on one event.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `STREAM_UPDATE_INTERVAL`.
    pub update_interval: Duration,
    /// `THINKING_DELAY`.
    pub thinking_delay: Duration,
    /// `EXPERT_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// `EXPERT_RETRY_BACKOFF`.
    pub retry_backoff: Duration,
}

/// What every event's work needs (shared by the workers).
#[derive(Debug, Clone)]
pub struct Dispatcher {
    /// Integrations, triggers, bindings.
    pub registry: Registry,
    /// The expert server.
    pub expert: ExpertClient,
    /// Where answers go.
    pub commands: Commands,
    /// Update pacing under throttling.
    pub throttle: Throttle,
    /// Timings and retries.
    pub settings: Settings,
}

impl Dispatcher {
    /// Does `work` for `event`; `redelivered` says an earlier delivery may have started a run.
    pub async fn handle(
        &self,
        event: &Event,
        work: &Work,
        received: Instant,
        redelivered: bool,
    ) -> Result<Outcome, DispatchError> {
        let integration = self.registry.get_integration(&event.integration_id).await?;
        let language = integration
            .as_ref()
            .map(|i| i.preferred_language())
            .unwrap_or_default();
        let mut reply = Reply::new(
            &self.commands,
            &self.throttle,
            &event.id,
            &event.integration_id,
            &work.reply_to,
            language,
            self.settings.update_interval,
            received,
        );
        let (text, press) = match &work.intent {
            Intent::Reset => {
                let generation = self.registry.unbind(&work.key).await?;
                tracing::info!(conversation = %work.key, generation, "conversation reset");
                reply.say(Text::NewConversation).await?;
                return Ok(Outcome::Reset);
            }
            Intent::Ask(text) => (text.clone(), None),
            Intent::Press(press) => (press.input(), Some(press)),
        };
        let input = text.as_str();
        let binding = self.registry.get_binding(&work.key).await?;
        let trigger = self.registry.get_trigger(&event.integration_id).await?;
        let fallback = integration.as_ref().and_then(|i| i.xpert_id());
        let Some((xpert, source)) = choose_expert(
            binding.as_ref().map(|b| &b.xpert_id),
            trigger.as_ref(),
            fallback,
        ) else {
            tracing::warn!(
                integration = %event.integration_id,
                event = %event.id,
                "no expert is bound to this integration (no conversation binding, trigger or fallback xpert_id); told the user"
            );
            crate::metrics::unrouted();
            reply.say(Text::NotSetUp).await?;
            return Ok(Outcome::Unrouted);
        };
        tracing::debug!(expert = %xpert, source = source.as_str(), "expert chosen");
        let started = Instant::now();
        let mut thread = binding.map(|b| b.thread_id);
        let (mut xpert, mut source) = (xpert, source);
        let mut replaced = false;
        let (result, thread, preface, ran_nothing, recorded) = loop {
            // The expert may have stopped to ask this user something: then this message
            // answers it.
            let question = match &thread {
                Some(thread) => self
                    .registry
                    .waiting_question(&work.key)
                    .await?
                    .filter(|question| question.thread_id == *thread),
                None => None,
            };
            let recorded = question.is_some();
            let mut run = RunInput {
                key: &work.key,
                xpert: &xpert,
                thread,
                input,
                press,
                resume: None,
                check_waiting: question.is_some(),
                question,
                preface: None,
                ran_nothing: false,
                event_id: &event.id,
                facts: &work.facts,
                redelivered,
                reply: &mut reply,
            };
            let result = self.run(&mut run).await;
            // The expert the conversation was bound to is gone from the expert server (deleted
            // or replaced): the conversation starts over with the integration's expert, once.
            if let (Err(Failure::Expert(ExpertError::UnknownExpert(_))), Source::Binding) =
                (&result, source)
            {
                if let Some((current, current_source)) =
                    choose_expert(None, trigger.as_ref(), fallback)
                        .filter(|(current, _)| *current != xpert)
                {
                    let generation = self.registry.unbind(&work.key).await?;
                    tracing::warn!(conversation = %work.key, gone = %xpert, expert = %current, generation,
                        "the conversation's expert is unknown to the expert server; starting over with the integration's expert");
                    (xpert, source, thread) = (current, current_source, None);
                    replaced = true;
                    continue;
                }
            }
            break (result, run.thread, run.preface, run.ran_nothing, recorded);
        };
        match result {
            Ok(answer) => {
                if !ran_nothing {
                    crate::metrics::expert_run("answered", started.elapsed());
                }
                // Before the answer goes out: the user's reply to it must find the question.
                let asked = match (&thread, answer.interrupts.is_empty()) {
                    (Some(thread), false) => Some(WaitingQuestion {
                        thread_id: thread.clone(),
                        interrupts: answer
                            .interrupts
                            .iter()
                            .map(interrupt::Interrupt::fingerprint)
                            .collect(),
                        asked_by: event.id.clone(),
                    }),
                    _ => None,
                };
                if asked.is_some() || recorded {
                    self.registry
                        .set_waiting_question(&work.key, asked.as_ref())
                        .await?;
                }
                if asked.is_some() && !ran_nothing {
                    crate::metrics::interrupt("asked");
                }
                let mut text = shown(answer, language);
                for said in [preface, replaced.then_some(Text::ExpertReplaced)]
                    .into_iter()
                    .flatten()
                {
                    text = format!("{}\n\n{text}", said.in_language(language));
                }
                reply.finish(&text).await?;
                Ok(Outcome::Answered)
            }
            Err(Failure::Expert(err)) => {
                crate::metrics::expert_run("failed", started.elapsed());
                tracing::warn!(event = %event.id, %err, "the expert failed for good; apologizing");
                if let (true, Some(thread)) = (recorded, &thread) {
                    // A reply that failed leaves its question open: the next message shows it
                    // again rather than answer it unseen (nothing recorded as shown).
                    let unanswered = WaitingQuestion {
                        thread_id: thread.clone(),
                        interrupts: Vec::new(),
                        asked_by: event.id.clone(),
                    };
                    self.registry
                        .set_waiting_question(&work.key, Some(&unanswered))
                        .await?;
                }
                reply.say(Text::Apology).await?;
                Ok(Outcome::Failed(err))
            }
            Err(Failure::Dispatch(err)) => Err(err),
        }
    }

    /// Runs the expert with retries; returns the whole answer.
    async fn run(&self, input: &mut RunInput<'_, '_>) -> Result<RunAnswer, Failure> {
        let mut recreated = false;
        let mut look_first = input.redelivered;
        let max_attempts = self.settings.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let result = self.attempt(input, look_first).await;
            let err = match result {
                Ok(answer) => return Ok(answer),
                Err(Failure::Expert(err)) => err,
                Err(other) => return Err(other),
            };
            if let (true, Some(thread)) = (err.is_not_found(), &input.thread) {
                // LangGraph's 404 says "thread or assistant not found": a thread the server
                // still has (also one created again after a first 404) means it does not know
                // the expert.
                let known = self.expert.get_thread(thread.as_str()).await;
                if let Ok(Some(_)) = known {
                    let unknown = ExpertError::UnknownExpert(input.xpert.to_string());
                    tracing::error!(thread = %thread, "{unknown}");
                    return Err(Failure::Expert(unknown));
                }
                if let (Ok(None), false) = (known, recreated) {
                    // The expert lost the thread: create it again (same id), once.
                    tracing::warn!(thread = %thread, "the expert no longer knows the thread; creating it again");
                    recreated = true;
                    self.expert
                        .create_thread(thread.as_str(), input.facts)
                        .await?;
                    // A new thread waits for nothing: the message is a message again.
                    input.resume = None;
                    input.check_waiting = false;
                    input.question = None;
                    continue;
                }
            }
            if !err.retryable() || attempt >= max_attempts {
                if err.run_may_live() {
                    if let Some(thread) = &input.thread {
                        self.abandon(thread.as_str(), input.event_id).await;
                    }
                }
                return Err(Failure::Expert(err));
            }
            crate::metrics::expert_retry(err.code());
            let backoff = self.settings.retry_backoff * 2u32.saturating_pow(attempt - 1);
            tracing::info!(attempt, %err, backoff_ms = backoff.as_millis() as u64, "expert call failed; retrying");
            tokio::time::sleep(backoff).await;
            attempt += 1;
            // The failed attempt may have started a run: find it rather than start another.
            look_first = true;
            // And a resume it sent may have been taken, the thread asking something new since:
            // the thread is asked again before anything answers it.
            if input.resume.take().is_some() {
                input.check_waiting = true;
            }
        }
    }

    /// Gives up on the event's run, if it is still going at the server (past `EXPERT_TIMEOUT`,
    /// or its stream broke): cancelled, so that it stops spending and the thread is free for
    /// the conversation's next message. Best effort.
    async fn abandon(&self, thread: &str, event_id: &str) {
        let run = match self.expert.find_run(thread, event_id).await {
            Ok(RunLookup::Found { run_id, status })
                if matches!(status.as_str(), "pending" | "running") =>
            {
                run_id
            }
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(%err, "cannot look for the abandoned run to cancel it");
                return;
            }
        };
        match self.expert.cancel_run(thread, &run, false).await {
            Ok(()) => {
                crate::metrics::run_cancelled("abandoned");
                tracing::info!(run = %run, "cancelled the run given up on");
            }
            Err(err) => tracing::warn!(run = %run, %err, "cannot cancel the run given up on"),
        }
    }

    /// The thread is busy with runs of other events (given up on by a replica that died, or
    /// left running before their cancellation): they are cancelled, waiting for each to stop.
    /// Returns how many active runs were found.
    async fn free_thread(&self, thread: &str, event_id: &str) -> Result<usize, ExpertError> {
        let runs = self.expert.list_runs(thread).await?.unwrap_or_default();
        let mut cancelled = 0;
        for run in runs
            .iter()
            .filter(|run| run.is_active() && run.event_id.as_deref() != Some(event_id))
        {
            tracing::warn!(run = %run.run_id, earlier_event = run.event_id.as_deref().unwrap_or("?"),
                "the thread is busy with a run of an earlier message; cancelling it");
            // A run that ended meanwhile cannot be cancelled (an error): the thread is free.
            match self.expert.cancel_run(thread, &run.run_id, true).await {
                Ok(()) => crate::metrics::run_cancelled("blocking"),
                Err(err) => {
                    tracing::info!(run = %run.run_id, %err, "the blocking run could not be cancelled; trying the thread again")
                }
            }
            cancelled += 1;
        }
        Ok(cancelled)
    }

    /// One attempt: the thread, then either the run an earlier attempt started, or a new run.
    async fn attempt(
        &self,
        input: &mut RunInput<'_, '_>,
        look_first: bool,
    ) -> Result<RunAnswer, Failure> {
        let thread = match &input.thread {
            Some(thread) => thread.clone(),
            None => {
                let (thread, waits) = self
                    .open_thread(input.key, input.xpert, input.facts)
                    .await?;
                // A thread bound again (its binding expired) may still wait on a question the
                // user was never reminded of: it is asked again below rather than overrun.
                input.check_waiting |= waits;
                input.thread = Some(thread.clone());
                thread
            }
        };
        if look_first {
            match self
                .expert
                .find_run(thread.as_str(), input.event_id)
                .await?
            {
                RunLookup::Found { run_id, status }
                    if !matches!(status.as_str(), "error" | "timeout" | "interrupted") =>
                {
                    tracing::info!(run = %run_id, %status, "joining the run an earlier delivery started");
                    crate::metrics::run_lookup("joined");
                    // Keep the answer a card: the earlier delivery may have sent it already.
                    input.reply.thinking().await?;
                    return Ok(self.expert.join_run(thread.as_str(), &run_id).await?);
                }
                RunLookup::Found { .. } | RunLookup::Absent => {
                    crate::metrics::run_lookup("absent");
                }
                RunLookup::Unsupported => {
                    tracing::warn!(
                        "the expert cannot list runs; starting the run again (at-least-once)"
                    );
                    crate::metrics::run_lookup("unsupported");
                }
            }
            input.reply.thinking().await?;
        }
        if input.check_waiting {
            // The thread is asked, not told: it may have been answered elsewhere, or the
            // run that asked may have been cancelled.
            let state = self
                .expert
                .get_thread(thread.as_str())
                .await?
                .unwrap_or_default();
            let pending = interrupt::from_thread(&state);
            input.check_waiting = false;
            if pending.is_empty() {
                tracing::info!(thread = %thread, "the expert no longer waits for the user; the message is sent as a new one");
                crate::metrics::interrupt("stale");
            } else {
                let shown = input.question.as_ref();
                // This very event showed the question (a redelivery the run listing could not
                // place), or the thread waits on something the user was not shown (answered and
                // asked anew elsewhere, or a binding bound again): show it instead of answering.
                let asked_here = shown.is_some_and(|q| q.asked_by == input.event_id);
                let seen = shown.is_some_and(|q| same_interrupts(&q.interrupts, &pending));
                if asked_here || !seen {
                    crate::metrics::interrupt("reasked");
                    input.ran_nothing = true;
                    // The asking event's answer, as it would have been: what the run said too.
                    let text = if asked_here {
                        final_text(&state["values"]).unwrap_or_default()
                    } else {
                        input.preface = Some(Text::StillWaiting);
                        String::new()
                    };
                    return Ok(RunAnswer {
                        text,
                        interrupts: pending,
                    });
                }
                let reply = match input.press {
                    Some(press) => UserReply::Press {
                        action: &press.action,
                        card_action: &press.card_action,
                    },
                    None => UserReply::Text(input.input),
                };
                match interrupt::resume_value(&pending, reply) {
                    Ok(resume) => {
                        crate::metrics::interrupt("resumed");
                        input.resume = Some(resume);
                    }
                    // The graph would fail on it: nothing is run, the question is asked again.
                    Err(_) => {
                        crate::metrics::interrupt("refused");
                        input.ran_nothing = true;
                        input.preface = Some(Text::ReplyNotAllowed);
                        return Ok(RunAnswer {
                            text: String::new(),
                            interrupts: pending,
                        });
                    }
                }
            }
        }
        match self.stream(thread.as_str(), input).await {
            // Our own run is never the one in the way: it was looked for above whenever it
            // could exist, and joined.
            Err(Failure::Expert(err)) if err.is_busy() => {
                if self.free_thread(thread.as_str(), input.event_id).await? == 0 {
                    return Err(Failure::Expert(err));
                }
                self.stream(thread.as_str(), input).await
            }
            other => other,
        }
    }

    /// Creates the conversation's thread (deterministic id) and binds it; says whether the
    /// thread (an existing one, bound again) waits for the user.
    async fn open_thread(
        &self,
        key: &ConversationKey,
        xpert: &XpertId,
        facts: &Facts,
    ) -> Result<(ThreadId, bool), Failure> {
        // A concurrent reset moves the generation on; derive again from the new one (bounded).
        let mut tries = 0;
        loop {
            tries += 1;
            let generation = self.registry.generation(key).await?;
            let id = thread_id(key, generation);
            let created = self.expert.create_thread(&id, facts).await?;
            let waits = !interrupt::from_thread(&created).is_empty();
            let thread: ThreadId = id.parse().map_err(|e| {
                Failure::Expert(ExpertError::Protocol(format!("thread id {id}: {e}")))
            })?;
            match self
                .registry
                .bind(key, xpert.clone(), thread, generation)
                .await
            {
                Ok(binding) => return Ok((binding.thread_id, waits)),
                Err(RegistryError::StaleGeneration { .. }) if tries < 3 => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Streams a new run, showing the answer as it grows.
    async fn stream(
        &self,
        thread: &str,
        input: &mut RunInput<'_, '_>,
    ) -> Result<RunAnswer, Failure> {
        let request = RunRequest {
            assistant_id: input.xpert.as_str(),
            input: input.input,
            resume: input.resume.as_ref(),
            event_id: input.event_id,
            facts: input.facts,
        };
        let deadline = tokio::time::Instant::now() + self.expert.run_timeout();
        let mut events = self.expert.stream_run(thread, &request).await?;
        let mut answer = Answer::default();
        let mut run_id: Option<String> = None;
        let mut ended = false;
        let thinking = tokio::time::sleep(self.settings.thinking_delay);
        tokio::pin!(thinking);
        let mut thinking_due = true;
        loop {
            tokio::select! {
                () = &mut thinking, if thinking_due => {
                    thinking_due = false;
                    input.reply.thinking().await?;
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(ExpertError::Timeout(self.expert.run_timeout()).into());
                }
                event = events.next() => match event {
                    Some(Ok(RunEvent::End)) => {
                        ended = true;
                        break;
                    }
                    None => break,
                    Some(Err(err)) => return Err(err.into()),
                    Some(Ok(RunEvent::Error(message))) => {
                        return Err(ExpertError::Run(message).into())
                    }
                    Some(Ok(RunEvent::Metadata { run_id: id })) => run_id = Some(id),
                    Some(Ok(event)) => {
                        if answer.apply(&event) {
                            input.reply.progress(answer.text()).await?;
                        }
                    }
                }
            }
        }
        // A stream that closed without `end` may have been cut (a proxy, a server restart)
        // while the run goes on: what it carried would be published as the whole answer. The
        // run's own status tells; one still going is joined for its final answer.
        if let (false, Some(run_id)) = (ended, &run_id) {
            match self.expert.run_status(thread, run_id).await {
                Ok(status) => match status.as_str() {
                    "success" => {}
                    "pending" | "running" => {
                        tracing::warn!(run = %run_id, "the run's stream closed before the run ended; joining it");
                        return Ok(self.expert.join_run(thread, run_id).await?);
                    }
                    other => {
                        return Err(ExpertError::Run(format!(
                            "the run's stream closed and the run ended {other}"
                        ))
                        .into())
                    }
                },
                // A server that cannot say: what the stream carried stands.
                Err(err) => {
                    tracing::warn!(run = %run_id, %err, "cannot read the run's status after its stream closed");
                }
            }
        }
        Ok(answer.finish())
    }
}

/// Whether the thread waits on the interrupts the user was shown (`shown`: their fingerprints).
fn same_interrupts(shown: &[String], pending: &[interrupt::Interrupt]) -> bool {
    let mut pending: Vec<String> = pending
        .iter()
        .map(interrupt::Interrupt::fingerprint)
        .collect();
    let mut shown = shown.to_vec();
    pending.sort_unstable();
    shown.sort_unstable();
    pending == shown
}

/// What the user sees of an answer: its text and, when the expert stopped to ask, what it asks
/// and (for a decision) how to answer.
fn shown(answer: RunAnswer, language: Language) -> String {
    if answer.interrupts.is_empty() {
        return answer.text;
    }
    let (question, choices) = interrupt::prompt(&answer.interrupts);
    let mut parts = Vec::new();
    for part in [answer.text, question] {
        if !part.trim().is_empty() {
            parts.push(part);
        }
    }
    if let Some(choices) = choices {
        parts.push(decision_hint(choices, language));
    } else if parts.is_empty() {
        parts.push(Text::WaitingForReply.in_language(language).to_owned());
    }
    parts.join("\n\n")
}

/// Everything one run needs.
struct RunInput<'r, 'a> {
    key: &'r ConversationKey,
    xpert: &'r XpertId,
    thread: Option<ThreadId>,
    input: &'r str,
    /// The card button pressed, when the message is a press.
    press: Option<&'r Press>,
    /// The `command.resume` answering the thread's interrupts, once known.
    resume: Option<Value>,
    /// Whether the thread may wait for this message (it asked the user), still to be checked.
    check_waiting: bool,
    /// What the user was shown of the thread's question, if it waits on one.
    question: Option<WaitingQuestion>,
    /// Said before the answer: set when the message ran nothing and the question is shown again
    /// (a reply it does not allow, or a question the user had not seen).
    preface: Option<Text>,
    /// The message ran nothing: the thread's question is shown again.
    ran_nothing: bool,
    event_id: &'r str,
    facts: &'r Facts,
    redelivered: bool,
    reply: &'r mut Reply<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_ids_are_stable_per_conversation_and_generation() {
        let key = |conversation: &str| {
            ConversationKey::new("acme".parse().unwrap(), conversation, "u1").unwrap()
        };
        assert_eq!(thread_id(&key("cid1"), 0), thread_id(&key("cid1"), 0));
        assert_ne!(thread_id(&key("cid1"), 0), thread_id(&key("cid1"), 1));
        assert_ne!(thread_id(&key("cid1"), 0), thread_id(&key("cid2"), 0));
        assert!(uuid::Uuid::parse_str(&thread_id(&key("cid1"), 0)).is_ok());
    }

    #[test]
    fn a_question_is_told_from_another_by_what_it_asks_not_only_by_its_id() {
        use interrupt::Interrupt;
        let asking = |id: &str, value: &str| Interrupt {
            id: Some(id.to_owned()),
            value: value.into(),
            schema: None,
        };
        let shown: Vec<String> = [asking("a", "Which day?"), asking("b", "Who?")]
            .iter()
            .map(Interrupt::fingerprint)
            .collect();
        let pending = [asking("b", "Who?"), asking("a", "Which day?")];
        assert!(same_interrupts(&shown, &pending));
        // LangGraph gives the second question a node asks the id of the first.
        let asked_next = [asking("a", "Confirm $900?"), asking("b", "Who?")];
        assert!(!same_interrupts(&shown, &asked_next));
        assert!(!same_interrupts(&shown, &pending[..1]));
    }

    #[test]
    fn an_answer_that_asks_shows_the_question_and_how_to_decide() {
        use interrupt::Interrupt;
        let asking = |text: &str, value: Value| RunAnswer {
            text: text.to_owned(),
            interrupts: vec![Interrupt {
                id: None,
                value,
                schema: None,
            }],
        };
        assert_eq!(
            shown(
                asking("I will email Li.", "Send it now?".into()),
                Language::En
            ),
            "I will email Li.\n\nSend it now?"
        );
        let review = serde_json::json!({"action_requests": [{"name": "send_email", "description": "Email Li"}]});
        assert_eq!(
            shown(asking("", review), Language::En),
            "Email Li\n\nReply \"yes\" to go ahead; \"no\" to decline; anything else to decline, with your words as the reason."
        );
        assert_eq!(
            shown(asking(" ", Value::Null), Language::ZhHans),
            Text::WaitingForReply.in_language(Language::ZhHans)
        );
        let plain = RunAnswer {
            text: "hi".into(),
            interrupts: Vec::new(),
        };
        assert_eq!(shown(plain, Language::En), "hi");
    }
}
