"""Tool calling as OpenAI defines it, through the real openai SDK and langchain-openai against a real
`shard serve` (the tiny random model: a call it is forced to make must still parse), and the parser
for the formats models write calls in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests

from harness import ServedNode, start_node
from shard.api.tools import ToolStream, parse

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "note": {"type": "string", "maxLength": 8},
            },
            "required": ["city", "days", "metric"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 6}},
            "required": ["zone"],
        },
    },
}
ASK = [{"role": "user", "content": "weather in paris?"}]
NAMES = {"get_weather", "get_time"}


@pytest.fixture(scope="module")
def tool_node(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    # The Hermes tool block is long in the tiny model's letter-level tokens: a larger context.
    node = start_node(tiny_model, tmp_path_factory.mktemp("tools"), "--parallel", "2", "--ctx-size", "4096")
    yield node
    node.stop()


def _check_weather(args: dict) -> None:
    assert (
        args["city"] in ("Paris", "Oslo", "Lima") and isinstance(args["days"], int) and isinstance(args["metric"], bool)
    )
    assert set(args) <= {"city", "days", "metric", "note"}


# -- the parser (pure functions) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,content,calls",
    [
        (
            '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>',
            "",
            [("get_time", {"zone": "UTC"})],
        ),
        (
            'Let me see.\n<tool_call>{"name": "get_time", "arguments": {"zone": "A"}}</tool_call>\n<tool_call>{"name": '
            '"get_weather", '
            '"arguments": {"city": "Oslo"}}</tool_call>',
            "Let me see.",
            [("get_time", {"zone": "A"}), ("get_weather", {"city": "Oslo"})],
        ),
        (
            '<tool_call>{"name": "get_time", "arguments": {"zone": "A"}}</tool_call>\n<tool_call>{"name": "get_ti',
            "",
            [("get_time", {"zone": "A"})],
        ),  # cut off by max_tokens inside a second call: the whole one counts
        ('{"name": "get_time", "parameters": {"zone": "B"}}', "", [("get_time", {"zone": "B"})]),  # Llama 3.x
        ('<|python_tag|>{"name": "get_time", "parameters": {"zone": "C"}}', "", [("get_time", {"zone": "C"})]),
        (
            '[TOOL_CALLS] [{"name": "get_time", "arguments": {"zone": "D"}}]',
            "",
            [("get_time", {"zone": "D"})],
        ),  # Mistral
        (
            '[{"name": "get_time", "arguments": "{\\"zone\\": \\"E\\"}"}]',
            "",
            [("get_time", {"zone": "E"})],
        ),  # generic, args as text
        ('```json\n{"name": "get_time", "arguments": {"zone": "F"}}\n```', "", [("get_time", {"zone": "F"})]),
        ('{"name": "rm_rf", "arguments": {}}', '{"name": "rm_rf", "arguments": {}}', []),  # not a declared tool: text
        ('{"answer": 42}', '{"answer": 42}', []),  # JSON that is not a call: text
        ("plain words", "plain words", []),
    ],
)
def test_parse_formats(text: str, content: str, calls: list) -> None:
    got_content, got = parse(text, NAMES)
    assert got_content == content
    assert [(c.name, json.loads(c.arguments)) for c in got] == calls


def test_tool_stream_sends_text_and_holds_a_call() -> None:
    s = ToolStream(NAMES)
    out = [s.push(p) for p in ["Hi", " there <to", 'ol_call>{"name": "get_time", ', '"arguments": {}}</tool_call>']]
    assert "".join(out) == "Hi there "  # the marker's start was held back, then the call
    assert s.finish()[1][0].name == "get_time"
    s = ToolStream(NAMES)
    assert s.push('  {"x') == "" and s.push('": 1} and more') == ""  # may be JSON: held to the end
    assert s.finish() == ('  {"x": 1} and more', [])  # not a call after all: it goes out as text
    s = ToolStream(NAMES)
    assert s.push("<tool") == "" and s.push("box> ok") == "<toolbox> ok"


# -- the endpoint ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_required_tool_call_always_parses(tool_node: ServedNode, seed: int) -> None:
    client = openai.OpenAI(base_url=tool_node.api, api_key="x")
    r = client.chat.completions.create(
        model="tiny",
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice="required",
        temperature=1.0,
        seed=seed,
        max_tokens=400,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls and all(c.type == "function" and c.id.startswith("call_") for c in calls)
    for c in calls:
        args = json.loads(c.function.arguments)
        if c.function.name == "get_weather":
            _check_weather(args)
        else:
            # (maxLength is counted by llama.cpp in code points; random byte tokens may decode to more U+FFFD)
            assert c.function.name == "get_time" and list(args) == ["zone"] and isinstance(args["zone"], str)


def test_named_tool_choice_streamed_as_deltas(tool_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tool_node.api, api_key="x")
    stream = client.chat.completions.create(
        model="tiny",
        messages=ASK,
        tools=[TIME, WEATHER],
        stream=True,
        seed=3,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0.9,
        max_tokens=400,
    )
    chunks = [c for c in stream if c.choices]
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas and {d.function.name for d in deltas if d.function.name} == {"get_weather"}
    assert len({d.index for d in deltas}) == 1  # a named choice is one call
    _check_weather(json.loads("".join(d.function.arguments or "" for d in deltas)))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks)


def test_parallel_tool_calls_false_gives_one_call(tool_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tool_node.api, api_key="x")
    for seed in range(3):
        r = client.chat.completions.create(
            model="tiny",
            messages=ASK,
            tools=[WEATHER, TIME],
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=1.0,
            seed=seed,
            max_tokens=400,
        )
        assert len(r.choices[0].message.tool_calls) == 1


def test_tool_choice_none_and_auto_give_text(tool_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tool_node.api, api_key="x")
    for choice in ("none", "auto"):
        r = client.chat.completions.create(
            model="tiny", messages=ASK, tools=[WEATHER], tool_choice=choice, temperature=0, max_tokens=8
        )
        assert (
            r.choices[0].finish_reason in ("length", "stop")
            and r.choices[0].message.content
            and not r.choices[0].message.tool_calls
        )
    with_tools = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER], max_tokens=1)
    without = client.chat.completions.create(
        model="tiny", messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=1
    )
    assert with_tools.usage.prompt_tokens > without.usage.prompt_tokens + 100  # the tools are in the prompt


def test_tool_history_is_rendered_not_dropped(tool_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tool_node.api, api_key="x")

    def prompt_tokens(result: str, args: str = '{"city": "Paris", "days": 1, "metric": true}') -> int:
        history = [
            *ASK,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": args}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": result},
        ]
        return client.chat.completions.create(
            model="tiny", messages=history, tools=[WEATHER], max_tokens=1
        ).usage.prompt_tokens

    base = prompt_tokens("sunny")
    assert prompt_tokens("sunny and warm all week") > base  # the tool result is in the prompt
    assert (
        prompt_tokens("sunny", '{"city": "Paris", "days": 10000, "metric": false}') > base
    )  # so are the call's arguments


def test_bad_tool_requests_are_clear_400s(tool_node: ServedNode) -> None:
    url = tool_node.api + "/chat/completions"
    bad = [
        {"tools": [{"type": "function", "function": {"name": "has space"}}]},
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        {"tool_choice": "required"},
        {"tools": [WEATHER], "tool_choice": "sometimes"},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "https://evil.example/x"}}}]},
        {"tools": [WEATHER, WEATHER]},
    ]
    for extra in bad:
        r = requests.post(url, json={"messages": ASK, "max_tokens": 1, **extra}, timeout=30)
        assert r.status_code == 400, (extra, r.text)
        assert r.json()["error"]["param"] == "tools", r.text
    assert requests.post(url, json={"messages": ASK, "max_tokens": 1}, timeout=30).status_code == 200  # still serving


def test_langchain_bind_tools(tool_node: ServedNode) -> None:
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    class GetWeather(BaseModel):
        """The weather in a city."""

        city: str = Field(max_length=8)
        days: int

    llm = ChatOpenAI(base_url=tool_node.api, api_key="x", model="tiny", temperature=0.7, max_tokens=300, seed=1)
    msg = llm.bind_tools([GetWeather], tool_choice="GetWeather").invoke("weather in Oslo for two days?")
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "GetWeather"
    args = msg.tool_calls[0]["args"]
    assert isinstance(args["city"], str) and isinstance(args["days"], int)


def test_tool_calls_through_a_node_without_a_model(tiny_model: Path, tmp_path: Path) -> None:
    """The asker sends the tools; the Oracle renders them and compiles the grammar itself."""
    from test_remote import tcp_addr

    oracle = start_node(tiny_model, tmp_path / "o", "--parallel", "2", "--ctx-size", "4096", sidecar=True)
    consumer = start_node(None, tmp_path / "c", "--bootstrap", tcp_addr(oracle), sidecar=True)
    try:
        client = openai.OpenAI(base_url=consumer.api, api_key="x")
        r = client.chat.completions.create(
            model="tiny",
            messages=ASK,
            tools=[WEATHER, TIME],
            temperature=0.8,
            seed=5,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=300,
        )
        assert r.choices[0].finish_reason == "tool_calls"
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather"
        _check_weather(json.loads(call.function.arguments))
        chunks = [
            c
            for c in client.chat.completions.create(
                model="tiny", messages=ASK, tools=[TIME], tool_choice="required", stream=True, seed=2, max_tokens=300
            )
            if c.choices
        ]
        deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
        assert deltas and all(d.function.name == "get_time" for d in deltas)
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    finally:
        consumer.stop()
        oracle.stop()


def test_smollm2_answers_a_tool_result(smollm2: Path, tmp_path: Path) -> None:
    """A real instruct model (ChatML template without tools: the Hermes block): a forced call names the
    city asked about, and with the tool's result in the history it answers in words."""
    node = start_node(smollm2, tmp_path, "--parallel", "1", "--ctx-size", "2048")
    try:
        client = openai.OpenAI(base_url=node.api, api_key="x")
        r = client.chat.completions.create(
            model="default", messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=120
        )
        call = r.choices[0].message.tool_calls[0]
        args = json.loads(call.function.arguments)
        assert call.function.name == "get_weather" and args["city"] == "Paris"
        history = [
            *ASK,
            r.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "celsius": 21}'},
        ]
        answer = client.chat.completions.create(
            model="default", messages=history, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=40
        )
        assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    finally:
        node.stop()
