"""Ollama's API through the `ollama` Python package, and embeddings through the openai SDK, against a
real `shard serve` (the tiny model: its own embeddings, mean-pooled)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import ollama
import openai
import pytest
import requests

from harness import ServedNode, start_node

MSG = [{"role": "user", "content": "hello there"}]


TINY_NODE_ARGS = ("--parallel", "2", "--ctx-size", "4096")  # conftest.py's tiny_node starts with these


def test_ollama_listing_show_ps_version(tiny_node: ServedNode) -> None:
    client = ollama.Client(host=tiny_node.url)
    tags = client.list()
    assert [m.model for m in tags.models] == ["tiny:latest"]
    assert tags.models[0].size > 0 and tags.models[0].details.format == "gguf"
    shown = client.show("tiny")
    assert shown.details.family == "llama" and "tools" in shown.capabilities
    assert [m.model for m in client.ps().models] == ["tiny:latest"]
    assert requests.get(tiny_node.url + "/api/version", timeout=5).json()["version"]
    with pytest.raises(ollama.ResponseError) as err:
        client.show("nope")
    assert err.value.status_code == 404 and "tiny" in err.value.error


def test_ollama_chat_streams_like_openai(tiny_node: ServedNode) -> None:
    client = ollama.Client(host=tiny_node.url)
    whole = client.chat(model="tiny", messages=MSG, options={"temperature": 0, "num_predict": 12})
    assert whole.done and whole.done_reason == "length" and whole.eval_count == 12 and whole.prompt_eval_count > 0
    parts = list(
        client.chat(model="tiny:latest", messages=MSG, stream=True, options={"temperature": 0, "num_predict": 12})
    )
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].done and not any(p.done for p in parts[:-1]) and parts[-1].total_duration > 0
    oa = openai.OpenAI(base_url=tiny_node.api, api_key="x").chat.completions.create(
        model="tiny", messages=MSG, max_tokens=12, temperature=0
    )
    assert oa.choices[0].message.content == whole.message.content  # options mapped onto the same sampling


def test_ollama_generate_options_and_format(tiny_node: ServedNode) -> None:
    client = ollama.Client(host=tiny_node.url)
    a = client.generate(model="tiny", prompt="once upon", options={"temperature": 0.9, "seed": 7, "num_predict": 10})
    b = client.generate(model="tiny", prompt="once upon", options={"temperature": 0.9, "seed": 7, "num_predict": 10})
    assert a.response == b.response and a.eval_count == 10  # the seed reached the sampler
    raw = list(client.generate(model="tiny", prompt="once upon", raw=True, stream=True, options={"num_predict": 5}))
    assert raw[-1].done and sum(1 for r in raw if r.response) >= 1
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    out = client.generate(model="tiny", prompt="a number", format=schema, options={"num_predict": 60, "temperature": 0})
    assert out.response.lstrip().startswith("{")
    js = client.chat(model="tiny", messages=MSG, format="json", options={"num_predict": 5, "temperature": 0})
    assert js.message.content.lstrip().startswith("{")
    assert client.generate(model="tiny", prompt="").done_reason == "load"  # Ollama's "load the model" call
    r = requests.post(
        tiny_node.url + "/api/generate", json={"model": "tiny", "prompt": "x", "format": "yaml"}, timeout=10
    )
    assert (
        r.status_code == 400 and "format" in r.json()["error"]
    )  # the client checks this itself; a raw caller gets a 400


def test_ollama_tool_call(tiny_node: ServedNode) -> None:
    def get_time(zone: str) -> str:
        """The time in a zone.

        Args:
            zone: the zone name
        """
        return "noon"

    client = ollama.Client(host=tiny_node.url)
    # Ollama has no tool_choice; a JSON schema format does not apply to calls. Auto: whatever the model says
    # comes back as text or as calls, never an error.
    r = client.chat(model="tiny", messages=MSG, tools=[get_time], options={"num_predict": 8})
    assert r.done and (r.message.content or r.message.tool_calls)
    history = [
        *MSG,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_time", "arguments": {"zone": "UTC"}}}],
        },
        {"role": "tool", "content": "noon", "tool_name": "get_time"},
    ]
    assert client.chat(model="tiny", messages=history, tools=[get_time], options={"num_predict": 3}).done


def test_openai_embeddings(tiny_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tiny_node.api, api_key="x")
    texts = ["the cat sat on the mat", "the cat sat on a mat", "quick brown fox jumps"]
    r = client.embeddings.create(model="tiny", input=texts)
    vecs = np.array([d.embedding for d in r.data])
    assert vecs.shape[0] == 3 and [d.index for d in r.data] == [0, 1, 2] and r.usage.prompt_tokens > 0
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    single = client.embeddings.create(model="tiny", input=texts[0]).data[0].embedding
    assert np.allclose(single, vecs[0], atol=1e-4)  # batching changes nothing
    # base64: the SDK asks for it by default when numpy is there; decode it ourselves too.
    raw = requests.post(
        tiny_node.api + "/embeddings", json={"input": texts[0], "encoding_format": "base64"}, timeout=30
    ).json()
    assert np.allclose(np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4"), vecs[0], atol=1e-6)
    short = client.embeddings.create(model="tiny", input=texts[0], dimensions=16).data[0].embedding
    assert len(short) == 16 and abs(np.linalg.norm(short) - 1.0) < 1e-4
    tokens = client.embeddings.create(model="tiny", input=[[5, 6, 7, 8]]).data[0].embedding
    assert len(tokens) == vecs.shape[1]
    for bad in (
        {"input": []},
        {"input": [""]},
        {"input": "x", "dimensions": 100000},
        {"input": "x", "encoding_format": "hex"},
        {"input": [[10**9]]},
    ):
        r = requests.post(tiny_node.api + "/embeddings", json=bad, timeout=30)
        assert r.status_code == 400, (bad, r.text)


def test_ollama_embed(tiny_node: ServedNode) -> None:
    client = ollama.Client(host=tiny_node.url)
    out = client.embed(model="tiny", input=["hello world", "the cat"])
    assert len(out.embeddings) == 2 and len(out.embeddings[0]) > 8
    oa = (
        openai.OpenAI(base_url=tiny_node.api, api_key="x")
        .embeddings.create(model="tiny", input="hello world")
        .data[0]
        .embedding
    )
    assert np.allclose(out.embeddings[0], oa, atol=1e-5)


def test_embedding_model_setting(tiny_model: Path, smollm2: Path, tmp_path: Path) -> None:
    """--embedding-model: vectors from that GGUF (SmolLM2, 576 wide), not the served tiny model."""
    n = start_node(tiny_model, tmp_path, "--ctx-size", "512", "--parallel", "1", "--embedding-model", str(smollm2))
    try:
        r = openai.OpenAI(base_url=n.api, api_key="x").embeddings.create(model="tiny", input=["hello", "world"])
        assert [len(d.embedding) for d in r.data] == [576, 576]
    finally:
        n.stop()
