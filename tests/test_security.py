"""Security (issue 9): what a hostile web page, a local program without the keys, and a hostile peer
can do to a node, and what they get: DNS rebinding and foreign origins 403 (counted), missing or
wrong API keys 401 (constant-time compare), the verifier's and the sidecar's per-launch tokens, and
junk, oversize and floods of peer messages through a second real daemon, refused and counted while
the node goes on serving."""

from __future__ import annotations

import concurrent.futures
import inspect
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from harness import Daemon, ServedNode, metric, start_node, wait_for
from shard.api import middlewares
from shard.verifier import server as verifier_server

MSG = [{"role": "user", "content": "hello there"}]


def listening_ports(pid: int) -> list[int]:
    return sorted({c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN})


# -- the HTTP API -------------------------------------------------------------------------------


def test_rebinding_and_foreign_origins_get_403_and_are_counted(tiny_node: ServedNode) -> None:
    before = metric(tiny_node, "shard_requests_total", '{endpoint="models",status="403"}')
    attacks = [
        {"Host": "attacker.example"},
        {"Host": "attacker.example:8000"},
        {"Host": "127.0.0.1.attacker.example"},
        {"Host": "[::2]:8000"},
        {"Origin": "https://evil.example"},
        {"Origin": "http://127.0.0.1.evil.example"},
        {"Origin": "null"},
        {"Origin": "file://"},
        {"Origin": "http://localhost.evil.example:3000"},
    ]
    for headers in attacks:
        r = requests.get(tiny_node.api + "/models", headers=headers, timeout=5)
        assert r.status_code == 403, (headers, r.text)
        assert r.json()["error"]["code"] in ("host_not_allowed", "origin_not_allowed")
        assert "Access-Control-Allow-Origin" not in r.headers
    # A simple cross-site POST (no preflight: text/plain) must not start a generation either.
    r = requests.post(
        tiny_node.api + "/chat/completions",
        data=json.dumps({"messages": MSG}),
        timeout=5,
        headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
    )
    assert r.status_code == 403
    pre = requests.options(
        tiny_node.api + "/chat/completions",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert pre.status_code == 403 and "Access-Control-Allow-Origin" not in pre.headers
    after = metric(tiny_node, "shard_requests_total", '{endpoint="models",status="403"}')
    assert after - before == len(attacks)


@pytest.fixture(scope="module")
def keyed_node(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    node = start_node(
        tiny_model,
        tmp_path_factory.mktemp("keyed"),
        "--api-key",
        "k-correct-horse",
        "--ctx-size",
        "256",
        "--parallel",
        "1",
    )
    yield node
    node.stop()


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer "}, "missing_api_key"),
        ({"Authorization": "Bearer k-correct-hors"}, "invalid_api_key"),  # a prefix
        ({"Authorization": "Bearer k-correct-horsex"}, "invalid_api_key"),
        ({"Authorization": "Basic k-correct-horse"}, "missing_api_key"),
        ({"X-API-Key": "K-CORRECT-HORSE"}, "invalid_api_key"),
        (
            {"Authorization": "Bearer k-correct-horse\u00e9".encode("latin-1")},
            "invalid_api_key",
        ),  # not ASCII, not UTF-8
        ({"Authorization": "Bearer ké-correct".encode()}, "invalid_api_key"),
    ],
)
def test_missing_or_wrong_api_keys_get_401(keyed_node: ServedNode, headers: dict, code: str) -> None:
    for path in ("/v1/models", "/v1/system/status", "/metrics", "/v1/system/credit"):
        r = requests.get(keyed_node.url + path, headers=headers, timeout=5)
        assert r.status_code == 401, (path, headers, r.status_code, r.text)
        assert r.json()["error"]["code"] == code
    r = requests.post(
        keyed_node.api + "/chat/completions", json={"messages": MSG, "max_tokens": 1}, headers=headers, timeout=5
    )
    assert r.status_code == 401
    ok = requests.post(
        keyed_node.api + "/chat/completions",
        json={"messages": MSG, "max_tokens": 1},
        headers={"Authorization": "Bearer k-correct-horse"},
        timeout=30,
    )
    assert ok.status_code == 200


def test_keys_and_tokens_are_compared_in_constant_time() -> None:
    auth = inspect.getsource(middlewares.auth_middleware)
    assert "hmac.compare_digest" in auth and "==" not in auth.replace("!=", "")
    assert "hmac.compare_digest" in inspect.getsource(verifier_server)


def test_the_verifier_needs_its_per_launch_token(tiny_node: ServedNode) -> None:
    pid = tiny_node.status()["verifier"]["pid"]
    (port,) = listening_ports(pid)
    base = f"http://127.0.0.1:{port}"
    assert requests.get(base + "/health", timeout=5).status_code == 200  # open: liveness only
    token = psutil.Process(pid).environ()["SHARD_VERIFIER_TOKEN"]
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {token[:-1]}"},
        {"Authorization": token},
        {"Authorization": b"Bearer \xff\xfe"},
        {"Authorization": f"Basic {token}"},
    ):
        assert requests.get(base + "/info", headers=headers, timeout=5).status_code == 401
        r = requests.post(base + "/generate", json={"prompt": "x", "max_tokens": 1}, headers=headers, timeout=5)
        assert r.status_code == 401
    assert requests.get(base + "/info", headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200
    assert len(token) >= 32 and token not in tiny_node.log()  # never logged


# -- peers: a second real daemon, hostile --------------------------------------------------------


@pytest.fixture(scope="module")
def oracle(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    # "anyone": the attacker is admitted as a scout, so its junk reaches every check, not just the first.
    node = start_node(
        tiny_model,
        tmp_path_factory.mktemp("oracle"),
        "--ctx-size",
        "512",
        "--parallel",
        "2",
        "--privacy",
        "anyone",
        sidecar=True,
    )
    wait_for(lambda: node.status()["sidecar"]["state"] == "running", what="the sidecar")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def attacker(oracle: ServedNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    addr = next(
        a
        for a in requests.get(oracle.api + "/system/topology", timeout=5).json()["listen_addrs"]
        if "/tcp/" in a and "/ws" not in a
    )
    d = Daemon(log=tmp_path_factory.mktemp("attacker") / "attacker.log", bootstrap=addr)
    requests.put(
        d.url + "/local-info", json={"roles": ["scout"], "agent": "evil/1"}, headers=d.session.headers, timeout=5
    )
    oracle_id = addr.rsplit("/p2p/", 1)[1]
    wait_for(
        lambda: any(
            p["peer_id"] == d.info["peer_id"]
            for p in requests.get(oracle.api + "/system/peers", timeout=5).json()["peers"]
        ),
        what="the oracle to see the attacker",
    )
    d.oracle_id = oracle_id  # type: ignore[attr-defined]
    # Gossip needs the mesh: wait until a result is delivered to the oracle.
    wait_for(
        lambda: d.post("/publish-result", {"result": {"work_id": "warmup", "position": 1, "text": "x"}}).json()[
            "published"
        ],
        what="the gossip mesh",
    )
    yield d
    d.stop()


def oracle_sidecar(oracle: ServedNode) -> tuple[str, dict[str, str]]:
    pid = oracle.status()["sidecar"]["pid"]
    token = psutil.Process(pid).environ()["SHARD_CONTROL_TOKEN"]
    for port in listening_ports(pid):
        try:
            r = requests.get(f"http://127.0.0.1:{port}/stats", timeout=2)
        except requests.RequestException:
            continue
        if r.status_code == 401:
            return f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    raise AssertionError("the sidecar's control API was not found")


def test_the_sidecar_control_api_needs_its_token(oracle: ServedNode) -> None:
    url, good = oracle_sidecar(oracle)
    assert requests.get(url + "/health", timeout=5).status_code == 200
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": good["Authorization"][:-1]},
        {"Authorization": good["Authorization"].replace("Bearer ", "")},
    ):
        for method, path, body in (
            ("GET", "/stats", None),
            ("GET", "/peers", None),
            ("POST", "/sign", {"payload_b64": "aGk="}),
            ("POST", "/broadcast-work", {"work": {"work_id": "x"}}),
            ("POST", "/shutdown", None),
        ):
            r = requests.request(method, url + path, json=body, headers=headers, timeout=5)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers.get("WWW-Authenticate") == "Bearer"
    assert requests.get(url + "/stats", headers=good, timeout=5).status_code == 200
    assert oracle.status()["sidecar"]["state"] == "running"  # the unauthenticated /shutdown did nothing


JUNK = [  # results that a hostile peer's own daemon accepts (a JSON object with a work_id), and the node must refuse
    ({"work_id": "a"}, "invalid"),
    ({"work_id": "a", "position": 1, "text": 5}, "invalid"),
    ({"work_id": "a", "position": 1, "tokens": 7}, "invalid"),
    ({"work_id": "a", "position": 1, "text": True}, "invalid"),
    ({"work_id": "a", "position": "1", "text": "x"}, "invalid"),
    ({"work_id": "a", "position": 1, "text": "x", "tokens": [1]}, "invalid"),
    ({"work_id": "a", "position": 1, "tokens": [-1, 2**40]}, "invalid"),
    ({"work_id": "a", "position": 1, "text": "x", "v": 99}, "invalid"),
    ({"work_id": "a", "position": 1, "text": "x" * 100_000}, "oversize"),
    ({"work_id": "a", "position": 1, "tokens": list(range(5000))}, "oversize"),
    ({"work_id": "0123abcd.1", "position": 1, "text": "hello"}, "unknown_work"),
]


def ignored(oracle: ServedNode) -> dict[str, float]:
    text = requests.get(oracle.url + "/metrics", timeout=5).text
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^shard_drafts_ignored_total\{reason="(\w+)"\} ([0-9.e+]+)$', text, re.M)
    }


def test_junk_results_over_gossip_are_refused_and_counted(oracle: ServedNode, attacker: Daemon) -> None:
    before = ignored(oracle)
    url, auth = oracle_sidecar(oracle)
    daemon_before = requests.get(url + "/stats", headers=auth, timeout=5).json()["dropped_oversize"]
    expected: dict[str, int] = {}
    for payload, reason in JUNK:
        r = attacker.post("/publish-result", {"result": payload})
        assert r.status_code == 200 and r.json()["published"], r.text
        if reason != "oversize":  # results over 16 KiB stop at the oracle's daemon (a draft is far smaller)
            expected[reason] = expected.get(reason, 0) + 1
    wait_for(
        lambda: all(ignored(oracle).get(k, 0) - before.get(k, 0) >= v for k, v in expected.items()),
        20,
        f"the oracle to count {expected}",
    )
    oversize = sum(1 for _, reason in JUNK if reason == "oversize")
    wait_for(
        lambda: (
            requests.get(url + "/stats", headers=auth, timeout=5).json()["dropped_oversize"] - daemon_before >= oversize
        ),
        20,
        "the oracle's daemon to drop the oversize results",
    )
    assert "Traceback" not in oracle.log() and "Task exception" not in oracle.log()
    assert (
        requests.post(oracle.api + "/chat/completions", json={"messages": MSG, "max_tokens": 3}, timeout=30).status_code
        == 200
    )


def test_junk_verify_requests_get_a_verdict_not_a_hang(oracle: ServedNode, attacker: Daemon) -> None:
    before = ignored(oracle)
    for payload, reason in JUNK:
        started = time.monotonic()
        r = attacker.post("/send-verify", {"peer_id": attacker.oracle_id, "request": payload})
        assert r.status_code == 200, r.text
        verdict = r.json()["response"]
        assert verdict.get("outcome") == "ignored" and verdict.get("reason") == reason, (payload, verdict)
        assert time.monotonic() - started < 4  # answered, not left to the 5 s timeout
    assert sum(ignored(oracle).values()) - sum(before.values()) >= len(JUNK)


def test_oversize_messages_stop_at_the_daemons(oracle: ServedNode, attacker: Daemon) -> None:
    big = {"work_id": "b", "position": 1, "text": "x" * (300 * 1024)}
    assert attacker.post("/publish-result", {"result": big}).status_code in (400, 413)
    assert attacker.post("/send-verify", {"peer_id": attacker.oracle_id, "request": big}).status_code in (400, 413)
    r = attacker.session.post(attacker.url + "/publish-result", data=b"{" * (600 * 1024), timeout=10)
    assert r.status_code in (400, 413)
    assert requests.get(oracle.url + "/health", timeout=5).status_code == 200


def test_a_flooding_peer_is_rate_limited_and_the_node_serves_on(oracle: ServedNode, attacker: Daemon) -> None:
    url, auth = oracle_sidecar(oracle)
    before = requests.get(url + "/stats", headers=auth, timeout=5).json()
    payload = {"result": {"work_id": "0123abcd.9", "position": 1, "text": "flood"}}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: attacker.post("/publish-result", payload).status_code, range(1500)))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:  # and through request-response too
        verdicts = list(
            pool.map(
                lambda _: attacker.post(
                    "/send-verify", {"peer_id": attacker.oracle_id, "request": payload["result"]}
                ).json(),
                range(600),
            )
        )
    stats = wait_for(
        lambda: (
            (s := requests.get(url + "/stats", headers=auth, timeout=5).json())["dropped_rate"] > before["dropped_rate"]
            and s
        ),
        what="the oracle's daemon to drop the flood",
    )
    print(
        {k: v - before[k] for k, v in stats.items() if isinstance(v, int | float)},  # counters, not the breakdowns
        sum(1 for v in verdicts if v.get("response", {}).get("error") == "rate limited"),
    )
    assert stats["results_received"] - before["results_received"] < 1500
    assert any(v.get("response", {}).get("error") == "rate limited" for v in verdicts) or stats["dropped_rate"] > 0
    # The node still answers its own user at once.
    started = time.monotonic()
    r = requests.post(oracle.api + "/chat/completions", json={"messages": MSG, "max_tokens": 3}, timeout=30)
    assert r.status_code == 200 and time.monotonic() - started < 10
    assert oracle.status()["sidecar"]["state"] == "running"
