"""logprobs/top_logprobs, n > 1 and suffix through the openai SDK against a real `shard serve`."""

from __future__ import annotations

import math
from pathlib import Path

import openai
import pytest

from harness import ServedNode, start_node

MSG = [{"role": "user", "content": "hello there"}]


TINY_NODE_ARGS = ("--parallel", "3", "--ctx-size", "512")  # conftest.py's tiny_node starts with these


def test_chat_logprobs_whole_and_streamed(tiny_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tiny_node.api, api_key="x")
    r = client.chat.completions.create(
        model="tiny", messages=MSG, max_tokens=8, temperature=0, logprobs=True, top_logprobs=5
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 8
    for e in content:
        assert e.logprob <= 0 and len(e.top_logprobs) == 5
        assert e.top_logprobs[0].logprob >= e.top_logprobs[-1].logprob
        assert e.token == e.top_logprobs[0].token and math.isclose(
            e.logprob, e.top_logprobs[0].logprob
        )  # greedy: the top one
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token
    stream = client.chat.completions.create(
        model="tiny", messages=MSG, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2, stream=True
    )
    streamed = [e for c in stream if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e.token, round(e.logprob, 4)) for e in content]
    plain = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=8, temperature=0)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == r.choices[0].message.content
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=MSG, max_tokens=1, logprobs=True, top_logprobs=21)


def test_completion_logprobs_legacy_shape(tiny_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tiny_node.api, api_key="x")
    r = client.completions.create(model="tiny", prompt="once upon", max_tokens=5, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == r.choices[0].text and lp.text_offset[0] == 0
    assert all(len(t) <= 3 for t in lp.top_logprobs)


def test_n_choices_side_by_side(tiny_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tiny_node.api, api_key="x")
    r = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=10, temperature=1.0, seed=4, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 3  # own seeds: different answers
    assert r.usage.completion_tokens == 30
    again = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=10, temperature=1.0, seed=4, n=3)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]  # and reproducible
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=MSG,
            max_tokens=10,
            temperature=1.0,
            seed=4,
            n=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
        for i in range(3)
    ]
    assert texts == [c.message.content for c in r.choices]
    assert (
        sum(1 for c in chunks if c.choices and c.choices[0].finish_reason) == 3
        and chunks[-1].usage.completion_tokens == 30
    )
    legacy = client.completions.create(model="tiny", prompt="once", max_tokens=4, n=2, temperature=1.0, seed=1)
    assert len(legacy.choices) == 2


def test_suffix_needs_fim_tokens(tiny_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tiny_node.api, api_key="x")
    with pytest.raises(openai.BadRequestError, match="fill-in-the-middle"):
        client.completions.create(model="tiny", prompt="def f(", suffix="    return x\n", max_tokens=4)


def test_suffix_with_fim_tokens(tiny_model: Path, tmp_path: Path) -> None:
    from harness.tiny_gguf import write_tiny_gguf

    fim = write_tiny_gguf(tmp_path / "fim.gguf", seed=1, fim=True)
    n = start_node(fim, tmp_path, "--parallel", "1", "--ctx-size", "256")
    try:
        client = openai.OpenAI(base_url=n.api, api_key="x")
        with_suffix = client.completions.create(
            model="fim", prompt="once upon", suffix=" the end", max_tokens=6, temperature=0
        )
        without = client.completions.create(model="fim", prompt="once upon", max_tokens=6, temperature=0)
        assert with_suffix.usage.prompt_tokens > without.usage.prompt_tokens + 3  # FIM markers + the suffix
        assert with_suffix.choices[0].text
    finally:
        n.stop()
