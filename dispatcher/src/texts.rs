//! Every text the dispatcher itself says to a user, in both languages an integration can prefer.
//!
//! One `match` per text over [`Language`]: adding a language is a compile error until every text
//! has it, so no system text can exist in one language only.

use common::registry::Language;

use crate::expert::interrupt::{Choices, OtherReply};

/// The system texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// Shown on the card while the expert has not answered yet.
    Thinking,
    /// No expert is bound to the integration.
    NotSetUp,
    /// The conversation was reset (`/new`, `新对话`, or the card's end button).
    NewConversation,
    /// The expert failed for good.
    Apology,
    /// The expert finished without saying anything.
    EmptyAnswer,
    /// How to answer a decision: "yes" goes ahead.
    HintYes,
    /// How to answer a decision: "no" declines.
    HintNo,
    /// How to answer a decision: other words decline, with them as the reason.
    HintOtherDeclines,
    /// How to answer a decision: other words are the answer.
    HintOtherAnswers,
    /// How to answer a review and a request at once: other words answer the one and decline
    /// the other.
    HintOtherDeclinesAndAnswers,
    /// A decision that allows no answer typed in DingTalk (only an edit, say).
    CannotDecideHere,
    /// The reply is not one the expert's decision allows; the question follows again.
    ReplyNotAllowed,
    /// The expert stopped to wait for the user without saying what it asks.
    WaitingForReply,
    /// A message came while the expert waits on a question the user has not seen: shown first.
    StillWaiting,
    /// The conversation's expert is gone from the expert server: another took over.
    ExpertReplaced,
}

impl Text {
    /// The text in `language`.
    pub fn in_language(self, language: Language) -> &'static str {
        use Language::{En, ZhHans};
        match (self, language) {
            (Self::Thinking, ZhHans) => "思考中…",
            (Self::Thinking, En) => "Thinking…",
            (Self::NotSetUp, ZhHans) => "这个机器人还没有配置好，请联系管理员为它绑定一个专家。",
            (Self::NotSetUp, En) => {
                "This bot is not set up yet: ask an administrator to bind an expert to it."
            }
            (Self::NewConversation, ZhHans) => "好的，已开始新的对话。",
            (Self::NewConversation, En) => "OK, a new conversation has started.",
            (Self::Apology, ZhHans) => "抱歉，专家暂时无法回答，请稍后再试。",
            (Self::Apology, En) => {
                "Sorry, the expert cannot answer right now. Please try again later."
            }
            (Self::EmptyAnswer, ZhHans) => "（专家没有给出回答）",
            (Self::EmptyAnswer, En) => "(The expert gave no answer.)",
            (Self::HintYes, ZhHans) => "“同意”继续",
            (Self::HintYes, En) => "\"yes\" to go ahead",
            (Self::HintNo, ZhHans) => "“拒绝”取消",
            (Self::HintNo, En) => "\"no\" to decline",
            (Self::HintOtherDeclines, ZhHans) => "其他内容即拒绝，并作为理由转告专家",
            (Self::HintOtherDeclines, En) => "anything else to decline, with your words as the reason",
            (Self::HintOtherAnswers, ZhHans) => "其他内容将作为您的答复转告专家",
            (Self::HintOtherAnswers, En) => "anything else to answer in your own words",
            (Self::HintOtherDeclinesAndAnswers, ZhHans) => {
                "其他内容将作为您的答复转告专家，并作为理由拒绝工具调用"
            }
            (Self::HintOtherDeclinesAndAnswers, En) => {
                "anything else to answer in your own words and decline the tool calls with them as the reason"
            }
            (Self::CannotDecideHere, ZhHans) => {
                "这一步无法在钉钉中确认：请在专家的应用中处理，或发送 /new 开始新的对话。"
            }
            (Self::CannotDecideHere, En) => {
                "This step cannot be decided from DingTalk: answer it in the expert's own app, or send /new to start over."
            }
            (Self::ReplyNotAllowed, ZhHans) => "这个回复不适用于当前的确认。",
            (Self::ReplyNotAllowed, En) => "That reply does not fit this question.",
            (Self::WaitingForReply, ZhHans) => "专家正在等待您的回复。",
            (Self::WaitingForReply, En) => "The expert is waiting for your reply.",
            (Self::StillWaiting, ZhHans) => "专家仍在等待您对以下问题的答复：",
            (Self::StillWaiting, En) => "The expert is still waiting for your answer to this:",
            (Self::ExpertReplaced, ZhHans) => {
                "这个对话原来的专家已不可用，已由当前的专家开始新的对话。"
            }
            (Self::ExpertReplaced, En) => {
                "This conversation's expert is no longer available; a new conversation has started with the current one."
            }
        }
    }
}

/// How to answer a decision that allows `choices`, in `language`.
pub fn decision_hint(choices: Choices, language: Language) -> String {
    let mut options = Vec::new();
    if choices.yes {
        options.push(Text::HintYes);
    }
    if choices.no {
        options.push(Text::HintNo);
    }
    match choices.other {
        Some(OtherReply::Declines) => options.push(Text::HintOtherDeclines),
        Some(OtherReply::Answers) => options.push(Text::HintOtherAnswers),
        Some(OtherReply::DeclinesAndAnswers) => options.push(Text::HintOtherDeclinesAndAnswers),
        None => {}
    }
    if options.is_empty() {
        return Text::CannotDecideHere.in_language(language).to_owned();
    }
    let options: Vec<&str> = options.iter().map(|t| t.in_language(language)).collect();
    match language {
        Language::ZhHans => format!("请回复{}。", options.join("；")),
        Language::En => format!("Reply {}.", options.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_exists_in_both_languages_and_differs() {
        for text in [
            Text::Thinking,
            Text::NotSetUp,
            Text::NewConversation,
            Text::Apology,
            Text::EmptyAnswer,
            Text::HintYes,
            Text::HintNo,
            Text::HintOtherDeclines,
            Text::HintOtherAnswers,
            Text::HintOtherDeclinesAndAnswers,
            Text::CannotDecideHere,
            Text::ReplyNotAllowed,
            Text::WaitingForReply,
            Text::StillWaiting,
            Text::ExpertReplaced,
        ] {
            let zh = text.in_language(Language::ZhHans);
            let en = text.in_language(Language::En);
            assert!(!zh.is_empty() && !en.is_empty());
            assert_ne!(zh, en, "{text:?}");
            assert!(!zh.is_ascii(), "{text:?} zh-Hans should be Chinese");
        }
    }

    #[test]
    fn a_decision_hint_names_only_the_allowed_replies() {
        let all = Choices {
            yes: true,
            no: true,
            other: Some(OtherReply::Declines),
        };
        assert_eq!(
            decision_hint(all, Language::En),
            "Reply \"yes\" to go ahead; \"no\" to decline; anything else to decline, with your words as the reason."
        );
        assert_eq!(
            decision_hint(all, Language::ZhHans),
            "请回复“同意”继续；“拒绝”取消；其他内容即拒绝，并作为理由转告专家。"
        );
        let only_yes = Choices {
            yes: true,
            no: false,
            other: None,
        };
        assert_eq!(
            decision_hint(only_yes, Language::En),
            "Reply \"yes\" to go ahead."
        );
        let none = Choices {
            yes: false,
            no: false,
            other: None,
        };
        assert_eq!(
            decision_hint(none, Language::En),
            Text::CannotDecideHere.in_language(Language::En)
        );
    }
}
