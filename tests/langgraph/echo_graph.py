"""A deterministic Agent Protocol expert for checking the dispatcher against LangGraph's own server.

No model and no network: a fake chat model streams "echo #N: <text>" word by word, so the server
emits real `messages` chunks and `values`. A message starting with "slow" sleeps two seconds
first, long enough for a test to kill the dispatcher mid-run. A message containing "trip" stops
to ask "Which day?" (`interrupt()`, human in the loop) and answers with the reply:
"echo #N: <text> on <reply>".
"""

import time

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import interrupt


def answer(state: MessagesState):
    human = [m for m in state["messages"] if isinstance(m, HumanMessage)]
    text = human[-1].content if human else ""
    if isinstance(text, str) and text.startswith("slow"):
        time.sleep(2)
    day = ""
    if isinstance(text, str) and "trip" in text:
        day = f" on {interrupt({'question': 'Which day?'})}"
    reply = AIMessage(content=f"echo #{len(human)}: {text}{day}")
    model = GenericFakeChatModel(messages=iter([reply]))
    return {"messages": [model.invoke(state["messages"])]}


builder = StateGraph(MessagesState)
builder.add_node("answer", answer)
builder.add_edge(START, "answer")
builder.add_edge("answer", END)
graph = builder.compile()
