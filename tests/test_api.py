"""The OpenAI endpoint of a real `shard serve` (tiny model), called by the real `openai` client and
by raw HTTP for everything a client can get wrong. Each bad input must get a 4xx in OpenAI's shape
and leave the node serving."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import openai
import pytest
import requests

from harness import ServedNode, start_node


def chat(node: ServedNode, body: dict, headers: dict | None = None, **kw) -> requests.Response:
    return requests.post(node.api + "/chat/completions", json=body, headers=headers or {}, timeout=60, **kw)


def assert_openai_error(r: requests.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


MSG = [{"role": "user", "content": "hello there"}]


def test_openai_client_sync_streaming_and_not(tiny_node: ServedNode) -> None:
    client = openai.OpenAI(base_url=tiny_node.api, api_key="unused")
    models = client.models.list()
    model_id = models.data[0].id
    assert model_id == "tiny"
    full = client.chat.completions.create(model=model_id, messages=MSG, max_tokens=12, temperature=0)
    assert full.choices[0].finish_reason in ("length", "stop")
    assert full.usage.completion_tokens <= 12 and full.usage.prompt_tokens > 0
    stream = client.chat.completions.create(
        model=model_id, messages=MSG, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content  # greedy: streaming changes nothing
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    legacy = client.completions.create(model=model_id, prompt="once upon", max_tokens=5, temperature=0)
    assert legacy.choices[0].text and legacy.usage.completion_tokens <= 5


async def test_openai_client_async_streaming_in_parallel(tiny_node: ServedNode) -> None:
    import asyncio

    client = openai.AsyncOpenAI(base_url=tiny_node.api, api_key="unused")

    async def one(i: int) -> str:
        stream = await client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": f"story {i}"}],
            max_tokens=20,
            temperature=0,
            stream=True,
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return "".join(parts)

    texts = await asyncio.gather(*(one(i) for i in range(4)))  # 4 requests on 2 slots: two queue, none is cut
    assert all(texts)
    again = await one(0)
    assert again == texts[0]
    await client.close()


def test_seed_gives_reproducible_sampling(tiny_node: ServedNode) -> None:
    body = {"messages": MSG, "max_tokens": 15, "temperature": 1.0, "seed": 42}
    a, b = chat(tiny_node, body).json(), chat(tiny_node, body).json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]


def test_json_mode_through_grammar(tiny_node: ServedNode) -> None:
    r = chat(
        tiny_node, {"messages": MSG, "max_tokens": 60, "temperature": 0, "response_format": {"type": "json_object"}}
    )
    assert r.status_code == 200
    content = r.json()["choices"][0]["message"]["content"]
    if r.json()["choices"][0]["finish_reason"] == "stop":
        json.loads(content)
    else:  # a random model may ramble inside the JSON until max_tokens: still only JSON characters
        assert content.lstrip().startswith(("{", "["))


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"messages": []}, 400, "invalid_request"),
        ({"messages": "hi"}, 400, "invalid_request"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_request"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            400,
            "invalid_request",
        ),
        ({"messages": MSG, "n": 99}, 400, "invalid_request"),  # more choices than a request may ask for
        ({"messages": MSG, "tools": [{"type": "function"}]}, 400, "invalid_request"),  # a tool without its function
        ({"messages": MSG, "temperature": 5}, 400, "invalid_request"),
        ({"messages": MSG, "max_tokens": -1}, 400, "invalid_request"),
        ({"messages": MSG, "max_tokens": "ten"}, 400, "invalid_request"),
        ({"messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_request"),
        ({"messages": MSG, "response_format": {"type": "yaml"}}, 400, "invalid_request"),
        ({"messages": MSG, "model": "gpt-4o"}, 404, "model_not_found"),
        ({"messages": [{"role": "user", "content": "x" * 16001}]}, 400, "context_length_exceeded"),
        ([1, 2, 3], 400, "invalid_request"),
    ],
)
def test_bad_bodies_get_clear_errors(tiny_node: ServedNode, body: object, status: int, code: str) -> None:
    assert_openai_error(chat(tiny_node, body), status, code)  # type: ignore[arg-type]


def test_malformed_oversized_and_unknown(tiny_node: ServedNode) -> None:
    r = requests.post(tiny_node.api + "/chat/completions", data=b"{not json", timeout=10)
    assert "not valid JSON" in assert_openai_error(r, 400, "invalid_json")["message"]
    r = requests.post(tiny_node.api + "/chat/completions", data=b"x" * (3 * 1024 * 1024), timeout=10)
    assert_openai_error(r, 413, "body_too_large")
    assert_openai_error(requests.get(tiny_node.api + "/nothing", timeout=10), 404, "not_found")
    assert_openai_error(requests.get(tiny_node.api + "/chat/completions", timeout=10), 405)
    # A prompt under the character cap but over the context (512 tokens here) is refused by the verifier.
    long = " ".join(f"w{i}" for i in range(1500))
    err = assert_openai_error(
        chat(tiny_node, {"messages": [{"role": "user", "content": long}]}), 400, "context_length_exceeded"
    )
    assert "context holds 512" in err["message"]
    assert chat(tiny_node, {"messages": MSG, "max_tokens": 2}).status_code == 200  # still serving


def test_dns_rebinding_and_foreign_origins_are_refused(tiny_node: ServedNode) -> None:
    url = tiny_node.api + "/models"
    assert_openai_error(
        requests.get(url, headers={"Host": "attacker.example:8000"}, timeout=10), 403, "host_not_allowed"
    )
    assert_openai_error(
        requests.get(url, headers={"Origin": "https://evil.example"}, timeout=10), 403, "origin_not_allowed"
    )
    assert_openai_error(requests.get(url, headers={"Origin": "null"}, timeout=10), 403, "origin_not_allowed")
    ok = requests.get(
        url, headers={"Origin": "http://localhost:3000", "Host": f"localhost:{tiny_node.port}"}, timeout=10
    )
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    pre = requests.options(
        tiny_node.api + "/chat/completions",
        headers={"Origin": "http://127.0.0.1:5173", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert pre.status_code == 204 and "POST" in pre.headers["Access-Control-Allow-Methods"]


def test_system_endpoints_say_plainly_there_is_no_sidecar(tiny_node: ServedNode) -> None:
    health = requests.get(tiny_node.url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    for path in ("/v1/system/topology", "/v1/system/peers"):
        body = requests.get(tiny_node.url + path, timeout=10).json()
        assert body["sidecar"] == "not running" and "sidecar is disabled (--no-sidecar)" in body["message"]


def test_metrics_count_requests_and_tokens(tiny_node: ServedNode) -> None:
    chat(tiny_node, {"messages": MSG, "max_tokens": 4, "temperature": 0})
    text = requests.get(tiny_node.url + "/metrics", timeout=10).text
    metrics = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")
    }
    assert metrics['shard_requests_total{endpoint="chat_completions",status="200"}'] >= 1
    assert metrics["shard_completion_tokens_total"] >= 4
    assert metrics["shard_verifier_up"] == 1.0
    assert "shard_queue_depth" in metrics and "shard_time_to_first_token_seconds_count" in metrics


def test_client_disconnect_cancels_generation(tiny_model: Path, tmp_path: Path) -> None:
    node = start_node(tiny_model, tmp_path, "--ctx-size", "8192", "--parallel", "1")
    try:
        body = json.dumps({"messages": MSG, "max_tokens": 8000, "temperature": 0, "stream": True}).encode()
        with socket.create_connection(("127.0.0.1", node.port)) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            assert b"200 OK" in s.recv(4096)
        # The slot is freed within moments, long before 8000 tokens could have been generated.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            metrics = requests.get(node.url + "/metrics", timeout=10).text
            info = node.status()["model_info"]
            if "shard_client_disconnects_total 1.0" in metrics and info["load"]["active"] == 0:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the generation was not cancelled: {info}\n{metrics}")
        assert 0 < info["counters"]["tokens_generated"] < 8000
    finally:
        node.stop()


def test_api_keys_rate_limit(tiny_model: Path, tmp_path: Path) -> None:
    node = start_node(
        tiny_model,
        tmp_path,
        "--api-key",
        "k1",
        "--api-key",
        "k2",
        "--ctx-size",
        "256",
        "--parallel",
        "1",
        env={"SHARD_RATE_LIMIT_PER_MINUTE": "3"},
    )
    try:
        body = {"messages": MSG, "max_tokens": 1}
        assert_openai_error(chat(node, body), 401, "missing_api_key")
        assert_openai_error(chat(node, body, {"Authorization": "Bearer nope"}), 401, "invalid_api_key")
        assert requests.get(node.url + "/health", timeout=10).status_code == 200  # open, for liveness checks
        assert_openai_error(requests.get(node.api + "/models", timeout=10), 401)
        assert chat(node, body, {"Authorization": "Bearer k1"}).status_code == 200
        assert chat(node, body, {"X-API-Key": "k2"}).status_code == 200
        client = openai.OpenAI(base_url=node.api, api_key="k1", max_retries=0)
        client.chat.completions.create(model="tiny", messages=MSG, max_tokens=1)
        assert chat(node, body, {"Authorization": "Bearer k1"}).status_code == 200  # k1's third
        r = chat(node, body, {"Authorization": "Bearer k1"})  # k1's fourth request this minute
        err = assert_openai_error(r, 429, "rate_limit_exceeded")
        assert 1 <= int(r.headers["Retry-After"]) <= 60 and "3 requests per minute" in err["message"]
        assert chat(node, body, {"X-API-Key": "k2"}).status_code == 200  # k2 has its own budget
    finally:
        node.stop()
