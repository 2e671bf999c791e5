//! Every text the dispatcher itself says to a user, in both languages an integration can prefer.
//!
//! One `match` per text over [`Language`]: adding a language is a compile error until every text
//! has it, so no system text can exist in one language only.

use common::registry::Language;

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
    /// Under a tool call the expert asks the user to approve: how to answer.
    DecisionHint,
    /// The expert stopped to wait for the user without saying what it asks.
    WaitingForReply,
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
            (Self::DecisionHint, ZhHans) => {
                "回复“同意”继续，回复“拒绝”取消；回复其他内容将作为您的意见转告专家。"
            }
            (Self::DecisionHint, En) => {
                "Reply \"yes\" to go ahead or \"no\" to decline; anything else is passed on to the expert as your answer."
            }
            (Self::WaitingForReply, ZhHans) => "专家正在等待您的回复。",
            (Self::WaitingForReply, En) => "The expert is waiting for your reply.",
        }
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
            Text::DecisionHint,
            Text::WaitingForReply,
        ] {
            let zh = text.in_language(Language::ZhHans);
            let en = text.in_language(Language::En);
            assert!(!zh.is_empty() && !en.is_empty());
            assert_ne!(zh, en, "{text:?}");
            assert!(!zh.is_ascii(), "{text:?} zh-Hans should be Chinese");
        }
    }
}
