"""A tool-calling agent whose tool waits for the user's approval, built the way LangChain builds
one (`create_agent` with `HumanInTheLoopMiddleware`), for checking the dispatcher's answers to a
tool-call review against the middleware itself.

No model and no network: a scripted chat model calls `send_email` for every human message and,
once the tool has answered (or the call was rejected), repeats the tool's message: "done: <it>".
"""

from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool


@tool
def send_email(to: str) -> str:
    """Send the report by email."""
    return f"sent to {to}"


class ScriptedModel(BaseChatModel):
    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        last = messages[-1]
        if isinstance(last, ToolMessage):
            reply = AIMessage(content=f"done: {last.content}")
        else:
            call = {"name": "send_email", "args": {"to": "li"}, "id": f"call-{len(messages)}"}
            reply = AIMessage(content="", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=reply)])


def agent(allowed_decisions, **middleware):
    """The agent, its tool gated by the middleware with `allowed_decisions`."""
    gate = {"allowed_decisions": allowed_decisions, "description": "Email the report to Li"}
    return create_agent(
        ScriptedModel(),
        tools=[send_email],
        middleware=[HumanInTheLoopMiddleware(interrupt_on={"send_email": gate}, **middleware)],
    )


graph = agent(["approve", "reject"])

# The same agent in `per_call` mode: one `tool_approval` interrupt per call, whose allowed
# decisions (here approve, or respond in the tool's place) come in its `response_schema`.
per_call_graph = agent(["approve", "respond"], interrupt_mode="per_call")
