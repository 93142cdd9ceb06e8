"""Attacks by peers that read the code (issue 19), each through real processes: a bare shard-daemon
driven as the hostile peer (an Oracle that lies, a peer that sends poisoned requests or work), and
real `shard serve` / `shard scout` processes as the victims. Each test failed on the code before
its fix; the item numbers are the issue's."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import Daemon, ServedNode, metric, pair_key, start_node, start_scout, wait_for

MSG = [{"role": "user", "content": "hello there"}]
Script = Callable[[dict[str, Any], str], Iterable["dict[str, Any] | float"]]  # lines to send; a float is a pause


class HostilePeer(Daemon):
    """A bare daemon that announces `roles` and answers what reaches it with a script: infer
    requests with `on_infer(request, asker)` (lines; a float pauses), verify requests with
    `on_verify(request, sender)` (the verdict)."""

    def __init__(
        self,
        tmp: Path,
        bootstrap: str | None = None,
        roles: tuple[str, ...] = ("oracle",),
        host: str = "127.0.0.1",
        pair_key: str | None = None,
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(None, tmp / "attacker.log", bootstrap=bootstrap, host=host)
        self.session.put(
            self.url + "/local-info",
            json={
                "roles": list(roles),
                "models": ["tiny"] if "oracle" in roles else [],
                "capacity": 4,
                "load": 0,
                "agent": "evil/1",
                **({"pair_key": pair_key} if pair_key else {}),
            },
            timeout=5,
        ).raise_for_status()
        self.on_infer: Script | None = None
        self.on_verify: Callable[[dict[str, Any], str], dict[str, Any]] | None = None
        self.infer_requests: list[dict[str, Any]] = []
        self.verify_requests: list[dict[str, Any]] = []
        self.works: list[dict[str, Any]] = []  # draft work that reached it (prompts, when it is a scout)
        threading.Thread(target=self._events, daemon=True).start()

    def addr(self, ip: str = "127.0.0.1") -> str:
        tcp = next(a for a in self.info["listen_addrs"] if "/tcp/" in a and "/ws" not in a)
        return f"/ip4/{ip}/tcp/{tcp.split('/tcp/')[1].split('/')[0]}/p2p/{self.peer_id}"

    def sign(self, body: dict[str, Any]) -> dict[str, Any]:
        """A receipt with this daemon's real signature over exactly `body` (whatever it holds)."""
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        sig = self.post("/sign", {"payload_b64": base64.b64encode(payload).decode()}).json()["signature_b64"]
        return {"receipt": body, "signature_b64": sig}

    def receipt(self, kind: str, subject: str, ref: str, amount: Any) -> dict[str, Any]:
        return self.sign(
            {
                "kind": kind,
                "issuer": self.peer_id,
                "subject": subject,
                "ref": ref,
                "amount": amount,
                "ts": int(time.time()),
            }
        )

    def _events(self) -> None:
        try:
            with requests.get(self.url + "/events", headers=self.session.headers, stream=True, timeout=(5, None)) as r:
                for raw in r.iter_lines():
                    if raw.startswith(b"data:"):
                        event = json.loads(raw[5:])
                        if event["type"] == "work" and event["work"].get("type") != "progress":  # works only
                            self.works.append(event["work"])
                        if event["type"] in ("infer_request", "verify_request"):
                            threading.Thread(target=self._answer, args=(event,), daemon=True).start()
        except requests.RequestException:
            pass  # the daemon stopped

    def _answer(self, event: dict[str, Any]) -> None:
        rid, request, sender = event["request_id"], event["request"], event["from"]
        if event["type"] == "verify_request":
            self.verify_requests.append(request)
            verdict = (
                self.on_verify(request, sender)
                if self.on_verify
                else {"v": 1, "work_id": request.get("work_id", "x"), "outcome": "stale"}
            )
            self.post("/verify-response", {"request_id": rid, "response": verdict})
            return
        self.infer_requests.append(request)
        script = self.on_infer or (lambda req, asker: [{"type": "error", "message": "no"}])

        def body() -> Iterator[bytes]:
            for item in script(request, sender):
                if isinstance(item, float):
                    time.sleep(item)
                else:
                    yield json.dumps(item).encode() + b"\n"

        try:
            self.session.post(f"{self.url}/infer-response?request_id={rid}", data=body(), timeout=300)
        except requests.RequestException:
            pass  # the asker went away

    def infer(self, peer_id: str, request: dict[str, Any], timeout: float = 60) -> list[dict[str, Any]]:
        """Ask `peer_id` (an Oracle) to generate; the answer's lines."""
        with self.session.post(
            self.url + "/infer", json={"peer_id": peer_id, "request": request}, stream=True, timeout=timeout
        ) as r:
            assert r.status_code == 200, r.text
            return [json.loads(line) for line in r.iter_lines() if line.strip()]


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[HostilePeer]:
    peer = HostilePeer(tmp_path / "hostile")
    yield peer
    peer.stop()


def tokens(n: int, text: str = " ok") -> list[dict[str, Any]]:
    return [{"type": "token", "text": text, "n": 1} for _ in range(n)]


def served(peer: HostilePeer, n: int, amount: Any, **extra: Any) -> Script:
    """An Oracle's answer: n tokens, then an end line whose receipt claims `amount`."""

    def script(request: dict[str, Any], asker: str) -> list[dict[str, Any] | float]:
        ref = os.urandom(4).hex()
        receipt = {**peer.receipt("served", asker, ref, amount), "id": ref, **extra}
        return [
            {"type": "start", "prompt_tokens": 3},
            *tokens(n),
            {"type": "end", "finish_reason": "length", "usage": {"completion_tokens": n}, "receipt": receipt},
        ]

    return script


def consumer_of(peer: HostilePeer, tmp: Path, *extra: str, env: dict[str, str] | None = None) -> ServedNode:
    """A node without a model whose only Oracle is `peer`."""
    return start_node(None, tmp, "--bootstrap", peer.addr(), *extra, sidecar=True, env=env)


def ask(node: ServedNode, stream: bool = False, max_tokens: int = 3, timeout: float = 30) -> requests.Response:
    return requests.post(
        node.api + "/completions", json={"prompt": "x", "max_tokens": max_tokens, "stream": stream}, timeout=timeout
    )


# -- 4, 13: receipts from a lying Oracle ---------------------------------------------------------


def test_4_a_receipt_for_more_than_was_delivered_or_with_a_string_amount_is_refused(
    hostile: HostilePeer, tmp_path: Path
) -> None:
    consumer = consumer_of(hostile, tmp_path / "c")
    try:
        hostile.on_infer = served(hostile, 3, 1e9)  # 3 tokens served, a signed receipt for a billion
        for _ in range(5):
            r = ask(consumer)
            assert r.status_code == 200 and r.json()["choices"][0]["text"] == " ok" * 3
        books = requests.get(consumer.api + "/system/credit", timeout=5).json()
        assert books["spent"] == 0 and books["balance"] == 0  # was -5e9
        assert "no valid receipt for the 3 tokens it delivered" in consumer.log()
        hostile.on_infer = served(hostile, 3, "x")  # a signed receipt whose amount is a string
        r = ask(consumer)
        assert r.status_code == 200, r.text  # was 500 (TypeError)
        with ask(consumer, stream=True) as r:  # was left open for good
            lines = [line for line in r.iter_lines() if line]
        assert lines[-1] == b"data: [DONE]"
        assert "Traceback" not in consumer.log()
    finally:
        consumer.stop()


def test_13_padded_receipts_are_stored_without_their_padding(hostile: HostilePeer, tmp_path: Path) -> None:
    consumer = consumer_of(hostile, tmp_path / "c")
    try:
        hostile.on_infer = served(hostile, 3, 3.0, pad="x" * 200_000)  # valid, plus 200 kB that is not signed
        for _ in range(6):
            assert ask(consumer).status_code == 200
        assert (
            requests.get(consumer.api + "/system/credit", timeout=5).json()["spent"] == 18
        )  # counted: the receipt is good
    finally:
        consumer.stop()
    with sqlite3.connect(consumer.data_dir / "ledger.db") as db:
        longest = db.execute("SELECT max(length(proof)) FROM journal").fetchone()[0]
    assert longest < 1024  # was 200 kB a row (1.2 MB from 6)


# -- 7, 11, 6: what a consumer takes from an Oracle ------------------------------------------------


def test_7_an_oracle_sending_more_than_asked_is_cut_off_and_dropped(hostile: HostilePeer, tmp_path: Path) -> None:
    consumer = consumer_of(hostile, tmp_path / "c")
    try:
        hostile.on_infer = lambda req, asker: [
            {"type": "start", "prompt_tokens": 1},
            *tokens(40, "PWNED"),
            {"type": "end", "finish_reason": "length", "usage": {"completion_tokens": 3}},
        ]
        r = ask(consumer, max_tokens=3)
        assert r.status_code != 200 or r.json()["choices"][0]["text"].count("PWNED") <= 3, r.text  # was 200 with 40
        assert metric(consumer, "shard_oracles_dropped_total", '{reason="overrun"}') == 1
        assert f"Oracle {hostile.peer_id} dropped" in consumer.log()
        # The liar is not asked again: it is no longer an Oracle for this node.
        assert requests.get(consumer.url + "/health", timeout=5).status_code == 503
        before = len(hostile.infer_requests)
        assert ask(consumer).status_code == 503 and len(hostile.infer_requests) == before
    finally:
        consumer.stop()


def test_7_an_oracle_whose_greedy_answer_differs_is_caught_by_a_spot_check(
    hostile: HostilePeer, tiny_model: Path, tmp_path: Path
) -> None:
    """The lying Oracle sends well-formed text that is simply not the model's: no count gives it away.
    Asked again of an honest Oracle, the greedy answers differ; with no third to decide, both are
    dropped (the consumer cannot tell which lied) and it is reported."""
    honest = start_node(tiny_model, tmp_path / "h", "--ctx-size", "512", sidecar=True)
    consumer = start_node(
        None,
        tmp_path / "c",
        "--bootstrap",
        hostile.addr(),
        "--bootstrap",
        honest.tcp_addr(),
        sidecar=True,
        env={"SHARD_SPOT_CHECK_RATE": "1"},
    )
    try:
        hostile.on_infer = lambda req, asker: [
            {"type": "start", "prompt_tokens": 1},
            *tokens(3, " PWNED"),
            {"type": "end", "finish_reason": "length", "usage": {"completion_tokens": 3}},
        ]
        wait_for(
            lambda: (
                sum(
                    "oracle" in p["roles"]
                    for p in requests.get(consumer.api + "/system/peers", timeout=5).json()["peers"]
                )
                == 2
            ),
            what="both Oracles",
        )
        r = requests.post(
            consumer.api + "/completions", json={"prompt": "x", "max_tokens": 3, "temperature": 0}, timeout=60
        )
        assert r.status_code == 200, r.text
        wait_for(
            lambda: metric(consumer, "shard_oracles_dropped_total", '{reason="spot_check"}') >= 1, 60, "the spot check"
        )  # was: never checked
        assert f"Oracle {hostile.peer_id} dropped" in consumer.log()
        before = len(hostile.infer_requests)
        requests.post(
            consumer.api + "/completions", json={"prompt": "x", "max_tokens": 3, "temperature": 0}, timeout=60
        )
        assert len(hostile.infer_requests) == before  # the liar is not asked again
    finally:
        consumer.stop()
        honest.stop()


def oracles_seen(node: ServedNode) -> list[dict[str, Any]]:
    return [p for p in requests.get(node.api + "/system/peers", timeout=5).json()["peers"] if "oracle" in p["roles"]]


def test_7_a_consumer_with_the_model_checks_an_oracles_answer_itself_and_drops_a_liar(
    hostile: HostilePeer, tiny_model: Path, tmp_path: Path
) -> None:
    """A node that has the model but sends requests to the network (`prefer_network`) scores the
    Oracle's text with its own verifier: " PWNED" x3 is not what the model writes for a greedy
    request. The answer ends with a clear error instead of passing as the model's, the liar is
    dropped and shown so in the peer listing, and the next request is served by the model here."""
    consumer = start_node(
        tiny_model,
        tmp_path / "c",
        "--ctx-size",
        "512",
        "--bootstrap",
        hostile.addr(),
        sidecar=True,
        env={"SHARD_SPOT_CHECK_RATE": "1", "SHARD_PREFER_NETWORK": "1"},
    )
    try:
        hostile.on_infer = lambda req, asker: [
            {"type": "start", "prompt_tokens": 1},
            *tokens(3, " PWNED"),
            {"type": "end", "finish_reason": "length", "usage": {"completion_tokens": 3}},
        ]
        wait_for(lambda: len(oracles_seen(consumer)) == 1, what="the Oracle")
        greedy = {"prompt": "x", "max_tokens": 3, "temperature": 0}
        r = requests.post(consumer.api + "/completions", json=greedy, timeout=60)
        assert len(hostile.infer_requests) == 1  # it went to the network (was: served here, never asked)
        assert r.status_code == 503, r.text  # was: 200 with " PWNED PWNED PWNED"
        assert "would not write" in r.json()["error"]["message"]
        assert metric(consumer, "shard_oracles_dropped_total", '{reason="spot_check"}') == 1
        assert f"Oracle {hostile.peer_id} dropped" in consumer.log()
        listed = next(p for p in oracles_seen(consumer) if p["peer_id"] == hostile.peer_id)
        assert "checked with this node's model" in (listed["dropped"] or ""), listed
        r = requests.post(consumer.api + "/completions", json=greedy, timeout=60)
        assert r.status_code == 200 and "PWNED" not in r.json()["choices"][0]["text"], r.text
        assert len(hostile.infer_requests) == 1  # the liar is not asked again: the model here answers
    finally:
        consumer.stop()


def test_7_an_honest_oracle_passes_every_local_check_greedy_and_sampled(smollm2: Path, tmp_path: Path) -> None:
    """The local check scores an honest Oracle's tokens as its own sampler would have admitted
    them, with slack for another machine's arithmetic: no honest answer is flagged, greedy or
    sampled (hot sampling included), and every one was checked."""
    honest = start_node(smollm2, tmp_path / "h", "--ctx-size", "1024", sidecar=True)
    consumer = start_node(
        smollm2,
        tmp_path / "c",
        "--ctx-size",
        "1024",
        "--bootstrap",
        honest.tcp_addr(),
        sidecar=True,
        env={"SHARD_SPOT_CHECK_RATE": "1", "SHARD_PREFER_NETWORK": "1"},
    )
    try:
        wait_for(lambda: len(oracles_seen(consumer)) == 1, what="the Oracle")
        prompts = ["Write a short story about a robot.", "Explain photosynthesis.", "def fibonacci(n):"]
        runs = [(p, t) for p in prompts for t in (0.0, 0.8, 1.4)]
        for prompt, temperature in runs:
            r = requests.post(
                consumer.api + "/chat/completions",
                json={"messages": [{"role": "user", "content": prompt}], "max_tokens": 64, "temperature": temperature},
                timeout=120,
            )
            assert r.status_code == 200, r.text
        log = consumer.log()
        assert log.count("answer is the model's (checked here)") == len(runs)  # was: never asked, never checked
        assert metric(consumer, "shard_oracles_dropped_total", '{reason="spot_check"}') == 0
        assert not re.search(r"Oracle \S+ dropped", log)
    finally:
        consumer.stop()
        honest.stop()


def test_11_an_oracle_that_only_says_queued_is_given_up(hostile: HostilePeer, tmp_path: Path) -> None:
    consumer = consumer_of(hostile, tmp_path / "c", env={"SHARD_REMOTE_TIMEOUT_S": "3"})
    try:
        hostile.on_infer = lambda req, asker: [
            x for i in range(120) for x in ({"type": "queued", "position": 1, "eta_s": 1}, 1.0)
        ]
        started = time.monotonic()
        r = ask(consumer, timeout=40)  # was open for good
        assert r.status_code == 503 and "no token within 3 s" in r.json()["error"]["message"]
        assert time.monotonic() - started < 20
        with ask(consumer, stream=True, timeout=40) as r:
            assert r.status_code == 503 or r.iter_lines()
    finally:
        consumer.stop()


def _own_ips() -> list[str]:
    import psutil

    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family.name == "AF_INET"]


# -- 8, 4, 13: a headless scout fed hostile work and verdicts ------------------------------------


def test_8_a_scout_survives_hostile_work_and_verdicts(hostile: HostilePeer, tiny_model: Path, tmp_path: Path) -> None:
    scout = start_scout(tiny_model, hostile.addr(), tmp_path / "s")
    verdicts: dict[str, Callable[[str, str], dict[str, Any]]] = {}

    answered: set[str] = set()

    def verdict(request: dict[str, Any], sender: str) -> dict[str, Any]:
        work_id = request["work_id"]
        if work_id in answered:  # the scout drafts on (a drafting session): its later drafts earn nothing here
            return {"v": 1, "work_id": work_id, "outcome": "stale", "proposed": 0, "accepted": 0}
        answered.add(work_id)
        ref = f"{work_id}#{request['seq']}" if request.get("seq") else work_id  # what the draft's receipt is about
        receipt = verdicts[work_id](sender, ref)
        return {"v": 1, "work_id": work_id, "outcome": "verified", "proposed": 3, "accepted": 3, "receipt": receipt}

    hostile.on_verify = verdict
    try:
        scout_id = wait_for(
            lambda: next(
                (
                    p["peer_id"]
                    for p in hostile.session.get(hostile.url + "/peers", timeout=5).json()["peers"]
                    if "scout" in p["roles"]
                ),
                None,
            ),
            what="the scout's handshake",
        )
        attacks = [
            ("huge", "hello there " * 5000, lambda s, w: None),  # 60,000 characters: more tokens than its context
            ("stringy", "one two three", lambda s, w: hostile.receipt("draft", s, w, "x")),
            ("padded", "one two three", lambda s, w: {**hostile.receipt("draft", s, w, 3.0), "pad": "x" * 200_000}),
            ("billion", "one two three", lambda s, w: hostile.receipt("draft", s, w, 1e9)),
            ("last", "one two three", lambda s, w: None),
        ]
        for name, context, make in attacks:
            work_id = f"{os.urandom(8).hex()}.1"
            verdicts[work_id] = make
            seen = len(hostile.verify_requests)
            work = {
                "v": 1,
                "work_id": work_id,
                "model": "tiny",
                "context": context,
                "position": 5,
                "max_draft": 4,
                "deadline_ms": int(time.time() * 1000) + 60_000,
            }
            r = hostile.post("/broadcast-work", {"work": work, "peers": [scout_id]})
            assert r.json()["published"], r.text
            wait_for(lambda: len(hostile.verify_requests) > seen, 60, f"the scout's draft for the {name} work")
            assert scout.poll() is None, f"the scout died on the {name} attack"
    finally:
        scout.terminate()
        scout.wait(20)
    with sqlite3.connect(tmp_path / "s" / "scout-data" / "ledger.db") as db:
        rows = db.execute("SELECT amount, length(proof) FROM journal").fetchall()
    assert rows == [(3.0, rows[0][1])] and rows[0][1] < 1024  # only the padded one's receipt, without its padding


# -- 1, 10: what a remote asker may make an Oracle run ----------------------------------------------


@pytest.fixture(scope="module")
def oracle(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    node = start_node(
        tiny_model, tmp_path_factory.mktemp("oracle"), "--ctx-size", "512", "--parallel", "2", sidecar=True
    )
    yield node
    node.stop()


@pytest.fixture
def asker(oracle: ServedNode, tmp_path: Path) -> Iterator[HostilePeer]:
    peer = HostilePeer(tmp_path / "asker", bootstrap=oracle.tcp_addr(), roles=("consumer",))
    peer.oracle_id = oracle.tcp_addr().rsplit("/p2p/", 1)[1]  # type: ignore[attr-defined]
    wait_for(
        lambda: any(
            p["peer_id"] == peer.peer_id for p in requests.get(oracle.api + "/system/peers", timeout=5).json()["peers"]
        ),
        what="the Oracle to see the asker",
    )
    yield peer
    peer.stop()


def infer_request(**generate: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "model": "",
        "generate": {"prompt": "a b c", "max_tokens": 4, "sampling": {"temperature": 0}, **generate},
    }


def test_1_a_peer_cannot_send_a_grammar_only_a_bounded_schema(oracle: ServedNode, asker: HostilePeer) -> None:
    pid = oracle.status()["verifier"]["pid"]
    deep = "root ::= " + "(" * 20_000 + '"a"' + ")" * 20_000  # overflowed llama.cpp's GBNF parser: a segfault
    lines = asker.infer(asker.oracle_id, infer_request(sampling={"temperature": 0, "grammar": deep}))  # type: ignore[attr-defined]
    assert lines[-1]["type"] == "error" and "peers may not send grammars" in lines[-1]["message"], lines
    nested: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        nested = {"type": "array", "items": nested}
    lines = asker.infer(asker.oracle_id, infer_request(json_schema=nested))  # type: ignore[attr-defined]
    assert lines[-1]["type"] == "error" and "nested deeper" in lines[-1]["message"], lines
    lines = asker.infer(asker.oracle_id, infer_request(prompt="x" * 20_000))  # type: ignore[attr-defined]
    assert lines[-1]["type"] == "error" and "accepts at most" in lines[-1]["message"], lines
    # A schema within bounds is compiled by the Oracle itself: JSON comes back.
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    lines = asker.infer(asker.oracle_id, infer_request(json_schema=schema, max_tokens=40))  # type: ignore[attr-defined]
    assert lines[-1]["type"] == "end", lines
    assert "".join(x["text"] for x in lines if x["type"] == "token").lstrip().startswith("{")
    status = oracle.status()["verifier"]
    assert status["pid"] == pid and status["restarts"] == 0  # the verifier never went down


def test_10_a_peer_cannot_send_a_huge_stop_list(oracle: ServedNode, asker: HostilePeer) -> None:
    stop = [f"s{i}" for i in range(24_000)]
    lines = asker.infer(asker.oracle_id, infer_request(stop=stop))  # type: ignore[attr-defined]
    assert lines[-1]["type"] == "error" and "'stop' must be at most 4" in lines[-1]["message"], lines
    lines = asker.infer(asker.oracle_id, infer_request(stop=["x" * 5000]))  # type: ignore[attr-defined]
    assert lines[-1]["type"] == "error", lines
    lines = asker.infer(asker.oracle_id, infer_request(stop=["zz"]))  # type: ignore[attr-defined]
    assert lines[-1]["type"] == "end", lines


# -- 9: the owner comes first ----------------------------------------------------------------------


def test_9_remote_jobs_never_starve_the_owner(slow_twin_model: Path, tmp_path: Path) -> None:
    oracle = start_node(
        slow_twin_model, tmp_path / "o", "--ctx-size", "4096", "--parallel", "2", "--no-lookup", sidecar=True
    )
    peer = HostilePeer(tmp_path / "asker", bootstrap=oracle.tcp_addr(), roles=("consumer",))
    try:
        oracle_id = oracle.tcp_addr().rsplit("/p2p/", 1)[1]
        wait_for(
            lambda: any(
                p["peer_id"] == peer.peer_id
                for p in requests.get(oracle.api + "/system/peers", timeout=5).json()["peers"]
            ),
            what="the Oracle to see the asker",
        )
        ended: list[str] = []

        def remote(i: int) -> None:  # long jobs
            try:
                lines = peer.infer(oracle_id, infer_request(prompt=f"{i} a b", max_tokens=1500), timeout=600)
                # no lines: the asker was stopped (the test's end) before this job answered
                ended.append(lines[-1]["type"] + ":" + str(lines[-1].get("message", "")) if lines else "no answer")
            except requests.RequestException as exc:
                ended.append(f"broken: {exc}")

        remotes = [threading.Thread(target=remote, args=(i,)) for i in range(2)]
        for t in remotes:
            t.start()
        wait_for(
            lambda: requests.get(oracle.api + "/system/status", timeout=5).json()["queue"]["in_flight"] >= 1,
            what="a remote job",
        )
        time.sleep(1.0)
        done: list[int] = []

        def owner(i: int) -> None:
            r = requests.post(
                oracle.api + "/completions", json={"prompt": "x y", "max_tokens": 8, "temperature": 0}, timeout=300
            )
            assert r.status_code == 200
            done.append(i)

        owners = [threading.Thread(target=owner, args=(i,)) for i in range(2)]  # both slots wanted by the owner
        for t in owners:
            t.start()
        for t in owners:
            t.join(300)
        assert sorted(done) == [0, 1]
        assert not any(e.startswith("end") for e in ended), (
            ended
        )  # the owner did not wait for the remote jobs to finish
        # The remote job holding the slot the owner's second request needed gave way.
        wait_for(lambda: any("preempted" in e for e in ended), 30, f"a preempted remote job (ended: {ended})")
    finally:
        peer.stop()
        oracle.stop()


# -- 15: smaller ones ---------------------------------------------------------------------------


def test_15_json_nested_deep_is_a_400(tiny_node: ServedNode) -> None:
    r = requests.post(
        tiny_node.api + "/chat/completions",
        data="[" * 100_000 + "]" * 100_000,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", r.text  # was 500


def test_15_wrong_api_keys_are_throttled(tiny_model: Path, tmp_path: Path) -> None:
    node = start_node(tiny_model, tmp_path, "--api-key", "k-right", "--ctx-size", "256", "--parallel", "1")
    try:
        session = requests.Session()
        codes = [
            session.get(node.api + "/models", headers={"X-API-Key": f"guess-{i}"}, timeout=5).status_code
            for i in range(300)
        ]
        assert codes[:10] == [401] * 10
        assert codes.count(429) >= 200, codes  # was 300 x 401
        r = session.get(node.api + "/models", headers={"X-API-Key": "k-right"}, timeout=5)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1  # a lucky guess now learns nothing
        assert session.get(node.url + "/health", timeout=5).status_code == 200
    finally:
        node.stop()


def test_15_the_ledger_and_logs_are_private(tiny_node: ServedNode) -> None:
    requests.post(tiny_node.api + "/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
    files = [tiny_node.data_dir / "ledger.db", *sorted((tiny_node.data_dir / "logs").glob("*.log"))]
    assert len(files) >= 3
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, (f, oct(f.stat().st_mode))  # was 0644


# -- 12, 14: the sidecar's memory and sockets ----------------------------------------------------


def test_12_results_over_gossip_do_not_fill_the_sidecar(tmp_path: Path) -> None:
    import psutil

    victim = HostilePeer(tmp_path / "victim", roles=("oracle",))
    flooder = HostilePeer(tmp_path / "flooder", bootstrap=victim.addr(), roles=("scout",))
    try:
        wait_for(
            lambda: flooder.post("/publish-result", {"result": {"work_id": "warmup", "text": "x"}}).json()["published"],
            what="the gossip mesh",
        )
        before = psutil.Process(victim.proc.pid).memory_info().rss
        big = "x" * (250 * 1024)
        for i in range(1000):
            flooder.post("/publish-result", {"result": {"work_id": f"w{i}", "text": big}})
            time.sleep(0.004)  # under the per-peer rate: every one is accepted
        time.sleep(3)
        health = victim.session.get(victim.url + "/health", timeout=5).json()
        grown = psutil.Process(victim.proc.pid).memory_info().rss - before
        print(health, grown // 2**20, "MB")
        assert health["pending_results"] <= 40, health  # was every one of them, kept 10 minutes
        assert grown < 150 * 2**20, grown // 2**20  # was about 300 MB
    finally:
        flooder.stop()
        victim.stop()


def _work(work_id: str, context: str) -> dict[str, Any]:
    """A work with a 2 s deadline (a late one is worth nothing to its Oracle)."""
    deadline = int(time.time() * 1000) + 2000
    return {"v": 1, "work_id": work_id, "model": "tiny", "context": context, "position": 3,
            "max_draft": 16, "deadline_ms": deadline, "vocab": "v", "tokens": [1, 2, 3]}  # fmt: skip


def _honest_work_arrives_under_flood(
    victim: HostilePeer, honest: HostilePeer, flooders: list[HostilePeer], flood: Callable[..., None]
) -> None:
    """Run `flood(n, flooder, stop)` in a thread per flooder while an honest Oracle sends 40 small
    works to the victim scout; every honest work must arrive, and the victim's events never lag."""
    stop = threading.Event()
    try:
        wait_for(
            lambda: len(victim.session.get(victim.url + "/peers", timeout=5).json()["peers"]) == len(flooders) + 1,
            60,
            what="all peers",
        )
        threads = [threading.Thread(target=flood, args=(n, f, stop), daemon=True) for n, f in enumerate(flooders)]
        for t in threads:
            t.start()
        time.sleep(2)  # the flood is on
        sent = []
        for i in range(40):  # an honest Oracle's work: a few KiB, several a second
            sent.append(f"honest.{i + 1}")
            r = honest.post(
                "/broadcast-work", {"work": _work(sent[-1], "The history of Rome " * 100), "peers": [victim.peer_id]}
            )
            assert r.status_code == 200, r.text
            time.sleep(0.1)
        # The flood goes on while the honest work comes in (a lost work never does; a slow machine reads late).
        with contextlib.suppress(AssertionError):  # the assert below names what was lost
            wait_for(lambda: {w["work_id"] for w in list(victim.works)} >= set(sent), 60, "the honest work")
        stop.set()
        for t in threads:
            t.join(10)
        stats = victim.session.get(victim.url + "/stats", timeout=5).json()
        got = {w["work_id"] for w in list(victim.works)}
        flood_in = sum(1 for w in got if not w.startswith("honest"))
        print(f"honest {len([w for w in sent if w in got])}/{len(sent)}, flood in {flood_in}, stats {stats}")
        assert all(w in got for w in sent), [w for w in sent if w not in got]  # were lost in the flood
        assert stats["events_lagged"] == 0, stats
    finally:
        stop.set()
        for peer in (*flooders, honest, victim):
            peer.stop()


def test_work_flood_from_one_peer_does_not_drown_an_honest_oracles_work(tmp_path: Path) -> None:
    """A peer flooding a scout with large work messages (256 KiB each, under the per-peer message
    rate) filled the sidecar's event buffer faster than the scout read it: the scout saw `lagged`
    and lost events, the honest Oracle's work among them. Work is now bounded per peer in bytes
    before it reaches the event buffer: the flood is dropped, the honest work arrives."""
    victim = HostilePeer(tmp_path / "victim", roles=("scout",))
    honest = HostilePeer(tmp_path / "honest", bootstrap=victim.addr(), roles=("oracle",))
    flooder = HostilePeer(tmp_path / "flooder", bootstrap=victim.addr(), roles=("oracle",))
    big = "x" * (250 * 1024)

    def flood(n: int, peer: HostilePeer, stop: threading.Event) -> None:  # six threads on one peer
        def one(t: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                with contextlib.suppress(requests.RequestException):
                    peer.post("/broadcast-work", {"work": _work(f"flood{t}.{i}", big), "peers": [victim.peer_id]})

        threads = [threading.Thread(target=one, args=(t,), daemon=True) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    _honest_work_arrives_under_flood(victim, honest, [flooder], flood)


def test_14_a_flood_of_idle_connections_does_not_lock_peers_out(tmp_path: Path) -> None:
    import socket

    lan_ip = next((ip for ip in _own_ips() if not ip.startswith("127.")), None)
    assert lan_ip is not None, "this test needs a non-loopback interface"
    victim = HostilePeer(tmp_path / "victim", roles=("oracle",), host="0.0.0.0")
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.prlimit(victim.proc.pid, resource.RLIMIT_NOFILE, (1024, hard))  # a common default
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))  # this process holds the flood
    port = int(victim.addr().split("/tcp/")[1].split("/")[0])
    flood = []
    try:
        for _ in range(1100):  # from the LAN address: one host, idle sockets that never handshake
            s = socket.create_connection((lan_ip, port), timeout=5)
            flood.append(s)
        time.sleep(1)
        peer = HostilePeer(tmp_path / "peer", bootstrap=victim.addr(), roles=("scout",))
        try:  # it was locked out for 10-20 s
            wait_for(
                lambda: any(
                    p["peer_id"] == peer.peer_id
                    for p in victim.session.get(victim.url + "/peers", timeout=5).json()["peers"]
                ),
                9,  # under the 10-20 s it was locked out for; a loaded machine needs more than 5
                "a real peer to get through",
            )
        finally:
            peer.stop()
    finally:
        for s in flood:
            s.close()
        victim.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_14_half_sent_requests_do_not_lock_the_api(tiny_node: ServedNode) -> None:
    import socket

    flood = []
    try:
        for _ in range(200):  # requests whose headers never end
            s = socket.create_connection(("127.0.0.1", tiny_node.port), timeout=5)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            flood.append(s)
        time.sleep(1)
        assert requests.get(tiny_node.url + "/health", timeout=5).status_code == 200
        # The node closes them once its header timeout has passed.
        wait_for(lambda: all(_closed(s) for s in flood), 30, "the node to close the half-sent requests")
    finally:
        for s in flood:
            s.close()


def _closed(s: socket.socket) -> bool:  # noqa: F821
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


# -- 2: golden tickets that no peer can tell apart or answer from memory ---------------------------


def test_2_a_scout_that_spots_golden_tickets_and_answers_them_from_memory_catches_none(
    slow_twin_model: Path, tmp_path: Path
) -> None:
    """The fake scout of the issue: a bare daemon with no model that remembers every work's text,
    flags works whose request key is new with a sequence number other than 1 (how tickets cut from
    earlier generations were sent), and answers each work from the text it has seen after it (junk
    when it has none). It caught all 13 tickets and earned 333 credit. Tickets are now requests of
    the Oracle's own, on prompts it makes up: numbered, capped, checked and timed like real work."""
    oracle = start_node(
        slow_twin_model,
        tmp_path / "o",
        "--ctx-size",
        "1024",
        "--parallel",
        "1",
        "--privacy",
        "anyone",
        "--no-lookup",
        "--log-level",
        "DEBUG",
        sidecar=True,
        env={"SHARD_GOLDEN_RATE": "1.0"},
    )
    peer = HostilePeer(tmp_path / "scout", bootstrap=oracle.tcp_addr(), roles=("scout",))
    seen: list[tuple[float, dict[str, Any], bool]] = []  # (arrival, work, flagged)
    verdicts: dict[str, dict[str, Any]] = {}
    stop = threading.Event()
    try:
        oracle_id = oracle.tcp_addr().rsplit("/p2p/", 1)[1]
        wait_for(
            lambda: any(
                p["peer_id"] == peer.peer_id and "scout" in p["roles"]
                for p in requests.get(oracle.api + "/system/peers", timeout=5).json()["peers"]
            ),
            what="the scout",
        )

        def answer(work: dict[str, Any], text: str) -> None:
            draft = {"v": 1, "work_id": work["work_id"], "position": work["position"], "text": text}
            r = peer.post("/send-verify", {"peer_id": oracle_id, "request": draft})
            verdicts[work["work_id"]] = r.json().get("response", {})

        def fake_scout() -> None:
            keys: set[str] = set()
            with (
                contextlib.suppress(requests.RequestException),  # the daemon stopped
                requests.get(peer.url + "/events", headers=peer.session.headers, stream=True, timeout=(5, None)) as r,
            ):
                for raw in r.iter_lines():
                    if stop.is_set():
                        return
                    if not raw.startswith(b"data:") or (e := json.loads(raw[5:]))["type"] != "work":
                        continue
                    work = e["work"]
                    if work.get("type") == "progress":  # a drafting session's news, not a work
                        continue
                    key, seq = work["work_id"].split(".")
                    flagged = key not in keys and seq != "1"
                    keys.add(key)
                    known = [w["context"] for _, w, _ in seen if w["context"].startswith(work["context"])]
                    later = max(known, key=len, default=work["context"])[len(work["context"]) :]
                    seen.append((time.monotonic(), work, flagged))
                    threading.Thread(target=answer, args=(work, later[:512] or " zq zq zq zq"), daemon=True).start()

        threading.Thread(target=fake_scout, daemon=True).start()
        time.sleep(0.5)
        prompts = [f"Request number {i}: the story of the {w} went" for i, w in enumerate("abcdefghijklmnopqrstuvwx")]
        asked: list[str] = []
        deadline = time.monotonic() + 150
        tickets: set[str] = set()
        while time.monotonic() < deadline and len(tickets) < 4 and len(asked) < len(prompts):
            asked.append(prompts[len(asked)])
            r = requests.post(
                oracle.api + "/completions", json={"prompt": asked[-1], "max_tokens": 40, "temperature": 0}, timeout=60
            )
            r.raise_for_status()
            time.sleep(random.uniform(0.5, 3.0))  # the owner's requests come now and then
            tickets = set(re.findall(r"golden ticket ([0-9a-f]{16})$", oracle.log(), re.M))
        wait_for(  # the tickets' verdicts (three failed ones pause it): a loaded machine scores late
            lambda: any(
                p["peer_id"] == peer.peer_id and p["shadow_paused"]
                for p in requests.get(oracle.api + "/system/peers", timeout=5).json()["peers"]
            ),
            60,
            "the tickets' verdicts",
        )
        stop.set()

        # It earned nothing: every ticket it answered failed, and the Oracle booked no credit for it.
        credit = {p["peer_id"]: p for p in requests.get(oracle.api + "/system/credit", timeout=5).json()["peers"]}
        assert credit.get(peer.peer_id, {}).get("credit", 0) == 0, credit  # was 333 per Sybil
        assert all(v.get("accepted", 0) == 0 for v in verdicts.values()), verdicts
        tickets = set(re.findall(r"golden ticket ([0-9a-f]{16})$", oracle.log(), re.M))
        ticket_works = [(t, w, f) for t, w, f in seen if w["work_id"].split(".")[0] in tickets]
        real_works = [(t, w, f) for t, w, f in seen if w["work_id"].split(".")[0] not in tickets]
        ticket_keys = {w["work_id"].split(".")[0] for _, w, _ in ticket_works}
        assert len(ticket_keys) >= 3, (len(ticket_keys), len(asked))  # tickets did come
        # The rule that caught every ticket flags none now, and no more of them than of real work.
        flag_rate = sum(f for *_, f in ticket_works) / len(ticket_works)
        real_rate = sum(f for *_, f in real_works) / len(real_works)
        print(f"tickets {len(ticket_keys)} ({len(ticket_works)} works), real {len(real_works)} works;", end=" ")
        print(f"flagged: tickets {flag_rate:.2f}, real {real_rate:.2f}")
        assert flag_rate <= real_rate, (flag_rate, real_rate)
        # The same shape: the same fields, works numbered from 1, no prompt of the owner's in them.
        assert all(set(w) == set(real_works[0][1]) for _, w, _ in ticket_works)
        for key in ticket_keys:
            seqs = [int(w["work_id"].split(".")[1]) for _, w, _ in ticket_works if w["work_id"].startswith(key)]
            assert seqs[0] == 1 and seqs == sorted(seqs), seqs
        assert not any(p.split(":")[0] in w["context"] for _, w, _ in ticket_works for p in asked)
        # Scored, as real work is: the same 16-token cap (text of up to 512 characters was sent).
        scored = [verdicts[w["work_id"]] for _, w, _ in ticket_works if w["work_id"] in verdicts]
        print("ticket verdicts:", [(v.get("outcome"), v.get("reason"), v.get("proposed")) for v in scored])
        assert scored and all(v.get("proposed", 0) <= 16 for v in scored), scored
        # Its answers to tickets were scored (late ones too: a ticket is greedy, so a late draft that
        # disagrees with it is wrong), it failed them, and it is shadow-paused.
        with sqlite3.connect(oracle.data_dir / "ledger.db") as db:
            n, proposed, accepted = db.execute(
                "SELECT count(*), sum(proposed), sum(accepted) FROM golden WHERE peer = ?", (peer.peer_id,)
            ).fetchone()
        print(f"golden drafts scored {n}: {accepted} of {proposed} tokens right")
        assert n >= 3 and accepted < 0.1 * proposed, (n, proposed, accepted)
        peers = requests.get(oracle.api + "/system/peers", timeout=5).json()["peers"]
        assert next(p for p in peers if p["peer_id"] == peer.peer_id)["shadow_paused"] is True

        # Not right after a real work: the gap before each ticket's first work. The old tickets went
        # out in the same publish as a real work (a gap of milliseconds); now a ticket starts at a
        # random time, often beside a running real request whose works keep coming every few
        # tokens, so the gaps spread from tenths of a second to seconds.
        gaps = []
        for key in ticket_keys:
            first = min(t for t, w, _ in ticket_works if w["work_id"].startswith(key))
            before = [t for t, _, _ in real_works if t < first]
            if before:
                gaps.append(first - max(before))
        print("gaps before tickets (s):", sorted(round(g, 2) for g in gaps))
        assert gaps and sorted(gaps)[len(gaps) // 2] > 0.1, gaps
    finally:
        stop.set()
        peer.stop()
        oracle.stop()


# -- 5: "local" scouts are proven by the pairing key, not by their address -------------------------


def test_5_a_local_process_that_says_scout_gets_no_work_unless_paired(tiny_model: Path, tmp_path: Path) -> None:
    node = start_node(tiny_model, tmp_path / "n", "--ctx-size", "512", sidecar=True)  # privacy: local (the default)
    addr = node.tcp_addr()
    key_file = node.data_dir / "pair.key"
    liar = HostilePeer(tmp_path / "liar", addr, roles=("scout",))  # on loopback, says "scout": proves nothing
    paired = HostilePeer(tmp_path / "paired", addr, roles=("scout",), pair_key=pair_key(node))
    try:
        wait_for(
            lambda: (
                sum("scout" in p["roles"] for p in requests.get(node.api + "/system/peers", timeout=5).json()["peers"])
                == 2
            ),
            what="both handshakes",
        )
        for _ in range(3):
            r = requests.post(
                node.api + "/completions", json={"prompt": "My bank PIN is 4921 and", "max_tokens": 24}, timeout=60
            )
            assert r.status_code == 200, r.text
        wait_for(lambda: paired.works, what="work for the paired scout")
        assert "My bank PIN" in paired.works[0]["context"]
        assert liar.works == []  # was: every work, the prompt included
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    finally:
        liar.stop()
        paired.stop()
        node.stop()


def test_5_the_websocket_listener_refuses_pages_from_other_origins(tiny_model: Path, tmp_path: Path) -> None:
    """A web page on any site could dial the sidecar's WebSocket listener (WebSockets are outside
    CORS) and join as a peer: upgrades with `Origin: https://evil.example` or `null` were accepted.
    Now only the node's own pages (and configured origins) get through; non-browsers send none."""
    import asyncio

    import aiohttp

    node = start_node(
        tiny_model,
        tmp_path / "n",
        "--log-level",
        "DEBUG",
        sidecar=True,
        env={"SHARD_ALLOWED_ORIGINS": "https://app.example"},
    )
    try:
        topo = wait_for(
            lambda: (t := requests.get(node.api + "/system/topology", timeout=5).json())["sidecar"] == "running" and t,
            what="the sidecar",
        )
        ws = next(a for a in topo["listen_addrs"] if a.startswith("/ip4/127.0.0.1/") and "/ws" in a)
        url = f"ws://127.0.0.1:{ws.split('/tcp/')[1].split('/')[0]}/"

        async def upgrade(origin: str | None) -> int:
            async with aiohttp.ClientSession() as session:
                try:
                    async with session.ws_connect(
                        url, origin=origin, protocols=(), timeout=aiohttp.ClientWSTimeout(ws_close=5)
                    ):
                        return 101
                except aiohttp.WSServerHandshakeError as exc:
                    return exc.status
                except aiohttp.ClientError:
                    return 0  # closed without an answer

        async def all_of() -> dict[str | None, int]:
            origins = [None, node.url, f"http://localhost:{node.port}", "https://app.example", "https://evil.example",
                       "null", f"http://127.0.0.1:{node.port + 1}", f"{node.url}.evil.example"]  # fmt: skip
            return dict(zip(origins, await asyncio.gather(*(upgrade(o) for o in origins))))

        got = asyncio.run(all_of())
        print(got)
        assert got[None] == got[node.url] == got[f"http://localhost:{node.port}"] == got["https://app.example"] == 101
        for bad in ("https://evil.example", "null", f"http://127.0.0.1:{node.port + 1}", f"{node.url}.evil.example"):
            assert got[bad] == 403, (bad, got)  # was 101: a foreign page joined the network
        assert 'websocket upgrade from origin "https://evil.example" refused' in node.log()
        # A real libp2p peer still joins over the WebSocket listener (it sends no Origin).
        peer = HostilePeer(tmp_path / "peer", bootstrap=ws, roles=("scout",))
        try:
            wait_for(
                lambda: any(
                    p["peer_id"] == peer.peer_id
                    for p in requests.get(node.api + "/system/peers", timeout=5).json()["peers"]
                ),
                what="a peer over WebSocket",
            )
        finally:
            peer.stop()
    finally:
        node.stop()


# -- 15: a shadow-paused scout cannot tell; drafts on gossip are worth nothing --------------------


def drafting_oracle(model: Path, tmp_path: Path, scout: HostilePeer, *flags: str) -> ServedNode:
    """An Oracle that takes drafts from `scout` (any peer, no lookup, one slot, no golden tickets)."""
    return start_node(
        model,
        tmp_path / "o",
        *flags,
        "--privacy",
        "anyone",
        "--no-lookup",
        "--parallel",
        "1",
        "--bootstrap",
        scout.addr(),
        sidecar=True,
        env={"SHARD_GOLDEN_RATE": "0"},
    )


def perfect_drafts(
    oracle: ServedNode, peer: HostilePeer, send: Callable[[dict[str, Any]], Any], enough: Callable[[list[Any]], bool]
) -> list[Any]:
    """Drafts that the target will accept, from `peer` (a scout): the Oracle's greedy answer is seen
    once as work (its tokens); while it generates the same again, each work gets the tokens that
    follow, through `send`, until `enough` of what `send` returned."""
    wait_for(
        lambda: any(
            p["peer_id"] == peer.peer_id and "scout" in p["roles"]
            for p in requests.get(oracle.api + "/system/peers", timeout=5).json()["peers"]
        ),
        what="the scout",
    )
    asked = {"prompt": "one two three", "max_tokens": 400, "temperature": 0}
    requests.post(oracle.api + "/completions", json=asked, timeout=120).raise_for_status()
    full = max((w["tokens"] for w in peer.works), key=len)
    peer.works.clear()
    done = threading.Event()
    threading.Thread(
        target=lambda: (requests.post(oracle.api + "/completions", json=asked, timeout=120), done.set()), daemon=True
    ).start()
    sent: list[Any] = []
    answered: set[str] = set()
    while not done.is_set() and not enough(sent):
        for w in [w for w in list(peer.works) if w["work_id"] not in answered and full[: w["position"]] == w["tokens"]]:
            answered.add(w["work_id"])
            if right := full[w["position"] :][:16]:
                sent.append(send({"v": 1, "work_id": w["work_id"], "position": w["position"], "tokens": right}))
        time.sleep(0.02)
    assert sent, "no work reached the scout"
    return sent


def test_15_a_shadow_paused_scouts_drafts_are_checked_like_anyones(slow_twin_model: Path, tmp_path: Path) -> None:
    """Its verdicts came back at once with `accepted: 0` whatever it sent: a scout that sent the
    right tokens and got nothing knew it was paused. Now its drafts are checked (the same fields, the
    same wait) and only the credit is withheld."""
    from shard.credit.ledger import Ledger

    peer = HostilePeer(tmp_path / "scout", roles=("scout",))
    data = tmp_path / "o" / "data"
    data.mkdir(parents=True)
    ledger = Ledger(data / "ledger.db")
    for _ in range(3):
        ledger.record_golden(peer.peer_id, 8, 0)  # it failed three golden tickets: shadow-paused
    ledger.close()
    oracle = drafting_oracle(slow_twin_model, tmp_path, peer, "--data-dir", str(data))
    try:
        oracle_id = oracle.tcp_addr().rsplit("/p2p/", 1)[1]
        verdicts = perfect_drafts(
            oracle,
            peer,
            lambda draft: peer.post("/send-verify", {"peer_id": oracle_id, "request": draft}).json()["response"],
            lambda vs: any(v.get("accepted") for v in vs),
        )
        assert any(v["outcome"] == "verified" and v["accepted"] > 0 for v in verdicts), (
            verdicts
        )  # was: accepted 0, at once
        credit = {p["peer_id"]: p for p in requests.get(oracle.api + "/system/credit", timeout=5).json()["peers"]}
        assert credit.get(peer.peer_id, {}).get("credit", 0) == 0  # still paused: checked, never paid
        assert metric(oracle, "shard_drafts_ignored_total", '{reason="shadow_paused"}') >= 1
    finally:
        oracle.stop()
        peer.stop()


def test_14_a_draft_whose_confidence_does_not_fit_its_tokens_is_refused(slow_twin_model: Path, tmp_path: Path) -> None:
    """A draft may state each token's confidence (the Oracle then checks a sure run further): one
    whose list does not fit its tokens, or holds more than 100%, or comes with a text, is refused as
    invalid at the node, never handed to the verifier (a draft of the live request, else refused
    for that first)."""
    peer = HostilePeer(tmp_path / "scout", roles=("scout",))
    oracle = drafting_oracle(slow_twin_model, tmp_path, peer)
    try:
        oracle_id = oracle.tcp_addr().rsplit("/p2p/", 1)[1]
        answers: list[Any] = []

        def lie(draft: dict[str, Any]) -> Any:
            n = len(draft["tokens"])
            for confidence in ([100] * (n + 1), [101] * n, ["high"] * n):
                answers.append(
                    peer.post(
                        "/send-verify", {"peer_id": oracle_id, "request": {**draft, "confidence": confidence}}
                    ).json()["response"]
                )
            text = {k: v for k, v in draft.items() if k != "tokens"} | {"text": " x", "confidence": [100]}
            answers.append(peer.post("/send-verify", {"peer_id": oracle_id, "request": text}).json()["response"])
            return answers

        perfect_drafts(oracle, peer, lie, lambda sent: len(sent) >= 1)
        assert answers and all(a["outcome"] == "ignored" and a["reason"] == "invalid" for a in answers), answers
    finally:
        oracle.stop()
        peer.stop()


def test_15_drafts_on_the_open_result_topic_are_worth_nothing(slow_twin_model: Path, tmp_path: Path) -> None:
    """Every subscriber reads the result topic, so a draft there could be sent first over the direct
    protocol by a copier, who was then paid for it. Drafts go direct only: one on gossip is not checked
    or paid (the web scout no longer publishes any), so there is nothing worth copying."""
    author = HostilePeer(tmp_path / "author", roles=("scout",))
    oracle = drafting_oracle(slow_twin_model, tmp_path, author)
    try:
        wait_for(
            lambda: author.post(
                "/publish-result", {"result": {"work_id": "warmup", "position": 1, "text": "x"}}
            ).json()["published"],
            what="the gossip mesh",
        )
        perfect_drafts(
            oracle,
            author,
            lambda draft: author.post("/publish-result", {"result": draft}).json()["published"],
            lambda sent: len(sent) >= 3,
        )
        wait_for(
            lambda: metric(oracle, "shard_drafts_ignored_total", '{reason="gossip"}') >= 3,
            60,
            "the gossip drafts to be refused",
        )
        assert metric(oracle, "shard_draft_tokens_accepted_total", '{source="scout"}') == 0  # was: checked and accepted
        credit = {p["peer_id"]: p for p in requests.get(oracle.api + "/system/credit", timeout=5).json()["peers"]}
        assert credit.get(author.peer_id, {}).get("credit", 0) == 0
    finally:
        oracle.stop()
        author.stop()


def test_a_sybil_work_flood_within_each_peers_budget_does_not_drown_an_honest_oracles_work(tmp_path: Path) -> None:
    """Many fresh identities together: each Sybil sends small works under every per-peer limit
    (message rate and bytes), but their sum outran what the scout reads, and the sidecar's event
    buffer dropped the oldest events, honest work among them. Work now also has an aggregate
    budget shared fairly: over it, only peers sending more than their share are cut."""
    victim = HostilePeer(tmp_path / "victim", roles=("scout",))
    honest = HostilePeer(tmp_path / "honest", bootstrap=victim.addr(), roles=("oracle",))
    sybils = [HostilePeer(tmp_path / f"sybil{i}", bootstrap=victim.addr(), roles=("oracle",)) for i in range(12)]
    big = "y" * (250 * 1024)

    def flood(n: int, sybil: HostilePeer, stop: threading.Event) -> None:
        i, started = 0, time.monotonic()
        while not stop.is_set():
            i += 1
            with contextlib.suppress(requests.RequestException):
                sybil.post("/broadcast-work", {"work": _work(f"sybil{n}.{i}", big), "peers": [victim.peer_id]})
            ahead = (i - 16) / 3.5 - (time.monotonic() - started)  # its 4 MiB burst, then under 1 MiB/s
            if ahead > 0:
                time.sleep(ahead)

    _honest_work_arrives_under_flood(victim, honest, sybils, flood)
