"""The browser web scout (web-scout/): the node serves its page, assets and models at /scout/;
the page's unit tests and its js-libp2p <-> rust-libp2p interop test (vitest); and end to end, a
real headless Chromium (Debian's, driven by playwright-core) opening the page from a real
`shard serve` with SmolLM2 and its sidecar: it dials the sidecar, loads wllama, takes work and the
Oracle's progress, drafts ahead of the Oracle in a drafting session per request, and sends drafts
that the Oracle verifies and credits to the browser's peer id.

Needs Node.js with `web-scout/node_modules` and `web-scout/dist` (scripts/setup builds them) and
/usr/bin/chromium (.ci/run installs it); the tests that need them skip with the reason otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from openai import OpenAI

from harness import ServedNode, metric, start_node, wait_for
from harness.browser import CHROMIUM, WEB, BrowserScout

ROOT = Path(__file__).resolve().parents[1]
ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}

# An edit-style request: the answer repeats text of the prompt, which a scout can draft ahead.
EDIT_TEXT = (
    "The quick brown fox jumps over the lazy dog. Peer to peer networks let many small machines share "
    "their compute, and every contributor earns priority for its own requests. A browser tab can draft "
    "tokens that a desktop node verifies, so the tab earns credit while it is open. Drafts are checked "
    "before they are used, so a wrong draft costs a little time and never changes the answer."
)
EDIT_PROMPT = "Repeat this text exactly, word for word, then stop:\n\n" + EDIT_TEXT


def need_node_tools(*, browser: bool = False) -> None:
    if shutil.which("node") is None or not (WEB / "node_modules").is_dir():
        pytest.skip("Node.js and web-scout/node_modules are needed (bash scripts/setup runs npm ci there)")
    if not (WEB / "dist" / "index.html").is_file():
        pytest.skip("web-scout/dist is not built (bash scripts/setup runs npm run build)")
    if browser and not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium; .ci/run does)")


# -- the node's /scout routes --------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_node(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    tmp = tmp_path_factory.mktemp("scout-routes")
    node = start_node(tiny_model, tmp, "--api-key", "sekret", "--ctx-size", "256")
    (node.data_dir / "models").mkdir(parents=True, exist_ok=True)
    (node.data_dir / "models" / "extra.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
    yield node
    node.stop()


def test_the_page_and_its_node_info_are_served_without_an_api_key(keyed_node: ServedNode) -> None:
    need_node_tools()
    page = requests.get(keyed_node.url + "/scout/", timeout=5)
    assert page.status_code == 200 and "Shard web scout" in page.text
    for k, v in ISOLATION.items():
        assert page.headers[k] == v
    assert requests.get(keyed_node.url + "/scout", timeout=5, allow_redirects=False).headers["Location"] == "/scout/"
    # every asset the page names is there, with the isolation headers and the right types
    import re

    for src in re.findall(r'(?:src|href)="(/scout/assets/[^"]+)"', page.text):
        res = requests.get(keyed_node.url + src, timeout=5)
        assert res.status_code == 200 and res.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert res.headers["Content-Type"].startswith("text/javascript" if src.endswith(".js") else "text/css")
    wasm = [p.name for p in (WEB / "dist" / "assets").glob("*.wasm")]
    assert wasm, "the build has wllama's wasm"
    res = requests.get(f"{keyed_node.url}/scout/assets/{wasm[0]}", timeout=5, stream=True)
    assert res.headers["Content-Type"] == "application/wasm"
    res.close()
    info = requests.get(keyed_node.url + "/scout/node.json", timeout=5).json()
    assert info["sidecar"] == "off" or "ws_addrs" in info
    names = {m["name"]: m for m in info["models"]}
    assert set(names) == {"tiny.gguf", "extra.gguf"}  # the running model and the models folder
    assert names["extra.gguf"]["url"] == "/scout/models/extra.gguf"
    # the API itself still wants its key
    assert requests.get(keyed_node.api + "/system/topology", timeout=5).status_code == 401


def test_models_are_served_whole_and_in_ranges_and_nothing_else(keyed_node: ServedNode) -> None:
    body = b"GGUF" + bytes(range(256)) * 4
    whole = requests.get(keyed_node.url + "/scout/models/extra.gguf", timeout=5)
    assert whole.status_code == 200 and whole.content == body
    assert whole.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    part = requests.get(keyed_node.url + "/scout/models/extra.gguf", headers={"Range": "bytes=4-11"}, timeout=5)
    assert part.status_code == 206 and part.content == body[4:12]
    for bad in ("nope.gguf", "..%2Fsecrets.json", "%2E%2E/secrets.json", "..%2F..%2F..%2Fetc%2Fpasswd"):
        assert requests.get(keyed_node.url + "/scout/models/" + bad, timeout=5).status_code == 404
    # a plain ../ is resolved by the client: it leaves /scout/ and meets the API key
    assert requests.get(keyed_node.url + "/scout/models/../../etc/passwd", timeout=5).status_code == 401
    for bad in ("..%2Findex.html", "nope.js"):
        assert requests.get(keyed_node.url + "/scout/assets/" + bad, timeout=5).status_code == 404


def test_a_missing_build_is_explained(tiny_model: Path, tmp_path: Path) -> None:
    node = start_node(tiny_model, tmp_path, "--ctx-size", "256", env={"SHARD_WEB_SCOUT_DIR": str(tmp_path / "nowhere")})
    try:
        res = requests.get(node.url + "/scout/", timeout=5)
        assert res.status_code == 503 and "npm run build" in res.text
    finally:
        node.stop()


# -- the page's own tests: units, and js-libp2p against the real shard-daemon ------------------------


def test_vitest_units_and_the_libp2p_interop_with_shard_daemon() -> None:
    need_node_tools()
    daemon = (
        Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/shard/cargo-target")) / "release" / "shard-daemon"
    )
    env = {**os.environ, "SHARD_DAEMON": str(daemon)}
    out = subprocess.run(
        ["npx", "vitest", "run", "--reporter=verbose"], cwd=WEB, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    if daemon.exists():
        assert "skipped" not in out.stdout.split("Tests")[-1], "the interop test must run when the daemon is built"
        assert "publishes a result on shard-work-result that the daemon attributes to our peer id" in out.stdout


# -- end to end in Chromium ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_oracle(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    # --no-lookup: the Oracle's own prompt lookup would draft the same repeated text first (and
    # faster, with no network), leaving the tab's drafts stale; this test is about the tab's.
    node = start_node(
        smollm2, tmp_path_factory.mktemp("web-scout-oracle"), "--parallel", "2", "--no-lookup", sidecar=True
    )
    wait_for(lambda: node.status()["sidecar"]["state"] == "running", what="the sidecar")
    yield node
    node.stop()


def test_the_browser_scout_drafts_and_the_oracle_credits_it(smol_oracle: ServedNode, tmp_path: Path) -> None:
    need_node_tools(browser=True)
    browser = BrowserScout(smol_oracle.url + "/scout/", tmp_path / "chromium.log")
    try:
        state = wait_for(
            lambda: browser.state.get("connected") and browser.state["drafter"]["loaded"] and browser.state,
            timeout=120,
            what="the page to connect and load its drafter",
        )
        assert state["isolated"] is True  # COOP/COEP: wllama may use threads
        assert state["drafter"]["kind"] == "wllama", state[
            "drafter"
        ]  # no WebGPU in headless Chromium: wllama, not lookup alone
        assert state["nodeInfo"]["roles"] == ["oracle"]
        me = state["peerId"]
        peer = wait_for(
            lambda: [
                p
                for p in requests.get(smol_oracle.api + "/system/peers", timeout=5).json()["peers"]
                if p["peer_id"] == me and p["roles"] == ["scout"]
            ],
            what="the browser's handshake at the node",
        )[0]
        assert peer["local"] is True  # a tab on this machine: admitted by the default privacy setting

        client = OpenAI(base_url=smol_oracle.api, api_key="unused", max_retries=0, timeout=300)
        before = metric(smol_oracle, "shard_draft_tokens_accepted_total", '{source="scout"}')
        answers = []
        deadline = (
            time.monotonic() + 180
        )  # the tab's first draft may come from wllama, slowly (seconds on a busy machine)
        while time.monotonic() < deadline:
            r = client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": EDIT_PROMPT}], max_tokens=320, temperature=0
            )
            answers.append(r.choices[0].message.content)
            time.sleep(1)  # the page's state reaches the test every 500 ms
            if (
                metric(smol_oracle, "shard_draft_tokens_accepted_total", '{source="scout"}') > before
                and browser.state["sessions"]["acceptedAfterFirst"] > 0
            ):
                break
        # the page's state reaches the test every 500 ms: wait for it to catch up
        wait_for(
            lambda: browser.state["work"]["received"] > 0 and browser.state["drafts"]["sent"] > 0,
            10,
            what="the page to report work received and drafts sent",
        )
        assert metric(smol_oracle, "shard_draft_tokens_accepted_total", '{source="scout"}') > before, (
            json.dumps(browser.state)[:2000],
            [
                line
                for line in requests.get(smol_oracle.url + "/metrics", timeout=5).text.splitlines()
                if "draft" in line
            ],
        )
        # greedy: the same answer every time, drafts or not
        assert len(set(answers)) == 1
        credit = wait_for(
            lambda: [
                p
                for p in requests.get(smol_oracle.api + "/system/credit", timeout=5).json()["peers"]
                if p["peer_id"] == me and p["accepted"] > 0
            ],
            what="the browser's credit",
        )[0]
        assert credit["credit"] >= credit["accepted"] > 0
        # the page counts what the verdicts said
        final = wait_for(
            lambda: browser.state["accepted"] > 0 and browser.state, what="the page to see accepted tokens"
        )
        assert final["credit"] == final["accepted"]
        assert final["verdicts"].get("verified", 0) > 0
        # a drafting session, not one draft per work: the tab followed the Oracle's progress messages
        # and drafted ahead of them, its later drafts of a request (seq 2, 3, ...) accepted too
        sessions = final["sessions"]
        assert sessions["progress"] > 0 and sessions["progressUsed"] > 0, sessions
        assert sessions["maxSeq"] > 1 and sessions["acceptedAfterFirst"] > 0, sessions
        # where the tab's time went (bench/coop_tab.py prints it): its model calls with wllama's own
        # figures, the drafts' round trips, and the events in order
        timing = final["timing"]
        assert timing["modelCalls"] > 0 and timing["predictedTokens"] > 0 and timing["roundTrips"] > 0, timing
        kinds = [e[1] for e in final["timeline"]]
        assert {"work", "progress", "model", "send", "verdict"} <= set(kinds), kinds
        assert [e[0] for e in final["timeline"]] == sorted(e[0] for e in final["timeline"])
    finally:
        browser.stop()


def test_the_tab_loads_the_draft_model_not_the_oracles(slow_twin_model: Path, tiny_model: Path, tmp_path: Path) -> None:
    """An Oracle with a draft model: the page drafts with that model (named in its handshake),
    never with the Oracle's own file."""
    need_node_tools(browser=True)
    node = start_node(slow_twin_model, tmp_path, "--draft-model", str(tiny_model), "--ctx-size", "512", sidecar=True)
    browser = None
    try:
        wait_for(lambda: node.status()["sidecar"]["state"] == "running", what="the sidecar")
        info = requests.get(node.url + "/scout/node.json", timeout=5).json()
        assert info["model"] == slow_twin_model.name and info["draft_model"] == tiny_model.name
        browser = BrowserScout(node.url + "/scout/", tmp_path / "chromium.log")
        state = wait_for(
            lambda: browser.state.get("connected") and browser.state["drafter"]["loaded"] and browser.state,
            timeout=120,
            what="the page to connect and load its drafter",
        )
        assert state["drafter"]["kind"] == "wllama", state["drafter"]
        me = state["peerId"]
        peer = wait_for(
            lambda: [
                p
                for p in requests.get(node.api + "/system/peers", timeout=5).json()["peers"]
                if p["peer_id"] == me and p["roles"] == ["scout"]
            ],
            what="the browser's handshake",
        )[0]
        assert peer["models"] == [tiny_model.name]  # it drafts with the draft model
        assert slow_twin_model.name not in json.dumps(browser.state)
    finally:
        if browser is not None:
            browser.stop()
        node.stop()


def test_the_tab_takes_gossip_work_and_progress_on_its_models_topic(tiny_model: Path, tmp_path: Path) -> None:
    """With `--privacy anyone` the Oracle publishes work and progress on gossip: the tab is on its
    Oracle's model topic (`shard-work/<model>`, not everyone's `shard-work`) and still receives
    both there (a progress message names its model, so the sidecar routes it to that topic too)."""
    need_node_tools(browser=True)
    node = start_node(tiny_model, tmp_path, "--ctx-size", "512", "--privacy", "anyone", sidecar=True)
    browser = None
    try:
        wait_for(lambda: node.status()["sidecar"]["state"] == "running", what="the sidecar")
        browser = BrowserScout(node.url + "/scout/", tmp_path / "chromium.log")
        state = wait_for(
            lambda: browser.state.get("connected") and browser.state.get("nodeInfo") and browser.state,
            timeout=120,
            what="the page to connect and read the node's handshake",
        )
        models = state["nodeInfo"]["models"]
        assert models and state["workTopics"] == [f"shard-work/{m}" for m in models], state["workTopics"]
        me = state["peerId"]
        wait_for(
            lambda: any(
                p["peer_id"] == me and p["roles"] == ["scout"]
                for p in requests.get(node.api + "/system/peers", timeout=5).json()["peers"]
            ),
            what="the browser's handshake at the node",
        )
        client = OpenAI(base_url=node.api, api_key="unused", max_retries=0, timeout=120)

        def heard() -> bool:
            client.completions.create(model="default", prompt="Once upon a time", max_tokens=48, temperature=0)
            time.sleep(1)  # the page's state reaches the test every 500 ms
            return browser.state["work"]["gossip"] > 0 and browser.state["sessions"]["progress"] > 0

        wait_for(heard, timeout=120, what="work and progress on the model's topic")
        final = browser.state
        assert final["work"]["direct"] == 0  # it all came on gossip, on the one topic the tab is on
        assert final["workTopics"] == state["workTopics"]
    finally:
        if browser is not None:
            browser.stop()
        node.stop()
