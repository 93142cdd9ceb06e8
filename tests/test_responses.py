"""OpenAI's Responses API (/v1/responses) through the real openai SDK against a real `shard serve`."""

from __future__ import annotations

import json

import openai
import pytest

from harness import ServedNode

TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
        "required": ["city"],
    },
}


TINY_NODE_ARGS = ("--parallel", "2", "--ctx-size", "4096")  # conftest.py's tiny_node starts with these


def test_text_input_and_instructions(tiny_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tiny_node.api, api_key="x")
    r = client.responses.create(
        model="tiny", input="hello there", instructions="be brief", max_output_tokens=6, temperature=0
    )
    assert r.id.startswith("resp_") and r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].type == "message" and r.output_text and r.usage.output_tokens == 6
    chat = client.chat.completions.create(
        model="tiny",
        max_tokens=6,
        temperature=0,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
    )
    assert r.output_text == chat.choices[0].message.content  # the same prompt as the chat it stands for
    items = client.responses.create(
        model="tiny",
        max_output_tokens=6,
        temperature=0,
        input=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "input_text", "text": "hello there"}]},
        ],
    )
    assert items.output_text == r.output_text


def test_streaming_events(tiny_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tiny_node.api, api_key="x")
    events = list(
        client.responses.create(model="tiny", input="hello there", max_output_tokens=8, temperature=0, stream=True)
    )
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.incomplete"
    assert {
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    } <= set(kinds)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text
    with client.responses.stream(model="tiny", input="hello there", max_output_tokens=8, temperature=0) as stream:
        # The SDK's helper parses every event (a cut-off answer ends in response.incomplete, as OpenAI's do).
        assert "".join(e.delta for e in stream if e.type == "response.output_text.delta") == text


def test_function_tools_and_their_results(tiny_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tiny_node.api, api_key="x")
    r = client.responses.create(
        model="tiny",
        input="weather in Paris?",
        tools=[TOOL],
        tool_choice="required",
        max_output_tokens=200,
        temperature=0.7,
    )
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and json.loads(calls[0].arguments)["city"] in ("Paris", "Oslo")
    follow = client.responses.create(
        model="tiny",
        tools=[TOOL],
        max_output_tokens=4,
        input=[
            {"role": "user", "content": "weather in Paris?"},
            calls[0].model_dump(include={"type", "call_id", "name", "arguments"}),
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
        ],
    )
    assert follow.output[0].type == "message"
    events = list(
        client.responses.create(
            model="tiny",
            input="weather?",
            tools=[TOOL],
            max_output_tokens=200,
            stream=True,
            tool_choice={"type": "function", "name": "get_weather"},
        )
    )
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done and json.loads(done[0].arguments)["city"] in ("Paris", "Oslo")


def test_structured_output_via_text_format(tiny_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tiny_node.api, api_key="x")
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    r = client.responses.create(
        model="tiny",
        input="ok?",
        max_output_tokens=40,
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema}},
    )
    assert isinstance(json.loads(r.output_text)["ok"], bool)


def test_previous_response_id_and_store(tiny_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tiny_node.api, api_key="x")
    first = client.responses.create(model="tiny", input="hello there", max_output_tokens=4, temperature=0)
    second = client.responses.create(
        model="tiny", input="and then?", previous_response_id=first.id, max_output_tokens=4, temperature=0
    )
    alone = client.responses.create(model="tiny", input="and then?", max_output_tokens=4, temperature=0)
    assert (
        second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    )  # the earlier turn is in the prompt
    assert client.responses.retrieve(first.id).output_text == first.output_text
    assert (tiny_node.data_dir / "responses" / f"{first.id}.json").exists()
    unstored = client.responses.create(model="tiny", input="x", max_output_tokens=2, store=False)
    assert not (tiny_node.data_dir / "responses" / f"{unstored.id}.json").exists()
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="tiny", input="x", previous_response_id=unstored.id, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model="tiny", input="x", previous_response_id="resp_../../etc/passwd", max_output_tokens=2
        )
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_bad_input_is_a_400(tiny_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tiny_node.api, api_key="x")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="tiny", input=[{"type": "input_image", "image_url": "x"}], max_output_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="tiny", input="x", tools=[{"type": "web_search"}], max_output_tokens=2)
