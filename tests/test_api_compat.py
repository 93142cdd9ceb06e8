"""What clients assume of an OpenAI-style server, against a real `shard serve` (tiny model): paths
without /v1, hard-coded model names, browser preflights with the SDK's own headers, recursive
pydantic schemas, a cap for requests without max_tokens, and a rate limit that suits local use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests
from pydantic import BaseModel

from harness import ServedNode, start_node

MSG = [{"role": "user", "content": "hello"}]
ORIGIN = "http://app.example:5173"


@pytest.fixture(scope="module")
def node(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    n = start_node(
        tiny_model,
        tmp_path_factory.mktemp("compat"),
        "--parallel",
        "2",
        "--ctx-size",
        "1024",
        "--model-alias",
        "gpt-4o-mini",
        "--default-max-tokens",
        "7",
        env={"SHARD_RATE_LIMIT_PER_MINUTE": "2", "SHARD_ALLOWED_ORIGINS": ORIGIN},
    )
    yield n
    n.stop()


def test_paths_without_v1(node: ServedNode) -> None:
    client = openai.OpenAI(base_url=node.url, api_key="x")  # no /v1
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.chat.completions.create(model="tiny", messages=MSG, max_tokens=2).choices[0].message.content
    assert client.completions.create(model="tiny", prompt="once", max_tokens=2).choices[0].text
    assert client.models.retrieve("tiny").id == "tiny"


def test_model_alias_and_unknown_names(node: ServedNode) -> None:
    client = openai.OpenAI(base_url=node.api, api_key="x")
    r = client.chat.completions.create(model="gpt-4o-mini", messages=MSG, max_tokens=2)
    assert r.model == "tiny"  # the alias is served by the model it stands for
    with pytest.raises(openai.NotFoundError, match="'tiny'"):  # the 404 lists what is served
        client.chat.completions.create(model="gpt-4o", messages=MSG, max_tokens=2)


def test_cors_preflight_allows_the_headers_an_allowed_origin_asks_for(node: ServedNode) -> None:
    asked = "authorization, content-type, x-stainless-os, x-stainless-lang, x-stainless-retry-count"
    r = requests.options(
        node.api + "/chat/completions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": asked},
        timeout=10,
    )
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {h.strip() for h in asked.split(",")} <= allowed
    # A foreign origin still gets nothing, and a malformed list echoes nothing of it.
    assert (
        requests.options(
            node.api + "/chat/completions", headers={"Origin": "http://evil.example"}, timeout=10
        ).status_code
        == 403
    )
    r = requests.options(
        node.api + "/chat/completions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Headers": "x-a, x(b)"},
        timeout=10,
    )
    assert "x-a" not in r.headers["Access-Control-Allow-Headers"]
    r = requests.post(
        node.api + "/chat/completions", json={"messages": MSG, "max_tokens": 1}, headers={"Origin": ORIGIN}, timeout=30
    )
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN


class Tree(BaseModel):
    name: str
    children: list[Tree] = []


def test_recursive_pydantic_schema_with_top_level_ref(node: ServedNode) -> None:
    schema = Tree.model_json_schema()
    assert schema["$ref"] == "#/$defs/Tree"  # pydantic's schema for a recursive model: a top-level $ref
    leaf = {"$defs": {"Leaf": {"type": "object", "properties": {"x": {"type": "integer"}}}}, "$ref": "#/$defs/Leaf"}
    for s in (schema, leaf):
        r = requests.post(
            node.api + "/chat/completions",
            timeout=60,
            json={
                "messages": MSG,
                "max_tokens": 12,
                "temperature": 0,
                "response_format": {"type": "json_schema", "json_schema": {"name": "tree", "schema": s}},
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"].startswith("{")  # the grammar applied
    for bad in (
        {"$ref": "https://example.com/schema.json"},
        {"$ref": "#/$defs/Nope"},
        {"$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"},
    ):
        r = requests.post(
            node.api + "/chat/completions",
            timeout=30,
            json={
                "messages": MSG,
                "max_tokens": 2,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": bad}},
            },
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "response_format", r.text


def test_default_max_tokens_caps_requests_without_one(node: ServedNode) -> None:
    client = openai.OpenAI(base_url=node.api, api_key="x")
    r = client.chat.completions.create(model="tiny", messages=MSG, temperature=0)
    assert r.usage.completion_tokens <= 7
    assert (
        client.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=20).usage.completion_tokens
        > 7
    )


def test_loopback_without_keys_is_not_rate_limited(node: ServedNode) -> None:
    for _ in range(5):  # the limit is 2 a minute, for others
        assert (
            requests.post(
                node.api + "/chat/completions", json={"messages": MSG, "max_tokens": 1}, timeout=30
            ).status_code
            == 200
        )


def test_a_new_dummy_key_does_not_reset_the_rate_limit(tiny_model: Path, tmp_path: Path) -> None:
    n = start_node(
        tiny_model,
        tmp_path,
        "--ctx-size",
        "256",
        "--parallel",
        "1",
        env={"SHARD_RATE_LIMIT_PER_MINUTE": "2", "SHARD_RATE_LIMIT_LOOPBACK": "true"},
    )
    try:
        codes = [
            requests.post(
                n.api + "/chat/completions",
                json={"messages": MSG, "max_tokens": 1},
                timeout=30,
                headers={"Authorization": f"Bearer dummy-{i}"},
            ).status_code
            for i in range(4)
        ]
        assert codes == [200, 200, 429, 429]
        # Ollama's paths count too.
        assert (
            requests.post(
                n.url + "/api/generate", json={"model": "tiny", "prompt": "x", "stream": False}, timeout=30
            ).status_code
            == 429
        )
    finally:
        n.stop()
