"""The Shard web app at `/` (web-scout/app.html, app/shard/api/webapp_routes.py), end to end in
Debian's headless Chromium (playwright-core) against real `shard serve` processes: a question typed
and answered with streaming, stopped mid-answer and regenerated, the API key asked for and used,
the sidebar showing a second node, and the tab's scout (in a Worker) earning credit at the Oracle
with accepted drafts, without a model (the tab runs on the Oracle's machine) and without showing
anyone's prompt text. The page's pure logic has vitest units (web-scout/test/app-*.test.ts, run by
tests/test_web_scout.py's vitest test)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from openai import OpenAI

from harness import ServedNode, metric, start_node, wait_for
from harness.browser import Browser
from test_web_scout import EDIT_PROMPT, ISOLATION, need_node_tools

LAST_ANSWER = "[...document.querySelectorAll('#messages .msg.assistant .body')].pop()?.innerText ?? ''"
STREAMING = "!document.getElementById('stop').hidden"
# Records the answer's length at every change while the Stop button shows: proof of streaming.
WATCH = """(() => { window.__lens = []; new MutationObserver(() => {
  const b = [...document.querySelectorAll('#messages .msg.assistant .body')].pop()
  if (!document.getElementById('stop').hidden && b) window.__lens.push(b.innerText.length)
}).observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
return true })()"""


def short(peer_id: str) -> str:
    return f"{peer_id[:8]}…{peer_id[-6:]}"


def ask(app: Browser, text: str) -> None:
    app.do("fill", selector="#prompt", text=text)
    app.do("press", key="Enter")


@pytest.fixture(scope="module")
def keyed_node(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    node = start_node(tiny_model, tmp_path_factory.mktemp("webapp-keyed"), "--api-key", "sekret", "--ctx-size", "256")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def oracle(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    # --no-lookup: the Oracle's own prompt lookup would draft the repeated text before the tab does
    node = start_node(smollm2, tmp_path_factory.mktemp("webapp-oracle"), "--parallel", "2", "--no-lookup", sidecar=True)
    wait_for(lambda: node.status()["sidecar"]["state"] == "running", what="the sidecar")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def app(oracle: ServedNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    need_node_tools(browser=True)
    browser = Browser(tmp_path_factory.mktemp("webapp-chromium") / "chromium.log")
    browser.do("goto", url=oracle.url + "/")
    browser.until("window.shardApp?.chat.state === 'ready'", what="the app to find the model")
    yield browser
    browser.close()


def test_the_app_is_served_at_root_with_its_assets_and_isolation(oracle: ServedNode) -> None:
    need_node_tools()
    page = requests.get(oracle.url + "/", timeout=5)
    assert page.status_code == 200 and "<title>Shard</title>" in page.text
    for k, v in ISOLATION.items():
        assert page.headers[k] == v  # cross-origin isolated: the tab's wllama may use threads
    assets = re.findall(r'(?:src|href)="(/scout/assets/[^"]+)"', page.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for src in assets:
        res = requests.get(oracle.url + src, timeout=5)
        assert res.status_code == 200 and res.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert "Shard web scout" in requests.get(oracle.url + "/scout/", timeout=5).text  # the scout page still works


def test_a_missing_build_is_explained(tiny_model: Path, tmp_path: Path) -> None:
    node = start_node(tiny_model, tmp_path, "--ctx-size", "256", env={"SHARD_WEB_SCOUT_DIR": str(tmp_path / "nowhere")})
    try:
        res = requests.get(node.url + "/", timeout=5)
        # the node still says what it is, with links, and how to build the app
        assert res.status_code == 200 and "Shard is running" in res.text and "npm run build" in res.text
    finally:
        node.stop()


def test_a_node_that_wants_a_key_gets_it_from_the_page(keyed_node: ServedNode, tmp_path: Path) -> None:
    need_node_tools(browser=True)
    # / is open (a static page): it loads on a node with keys, then asks for the key the API wants
    browser = Browser(tmp_path / "chromium.log")
    try:
        browser.do("goto", url=keyed_node.url + "/")
        browser.until("window.shardApp?.chat.state === 'key'", what="the page to ask for a key")
        assert browser.js("document.querySelector('.keybox').open") is True
        assert "needs an API key" in browser.text("#state")
        browser.do("fill", selector="#api-key", text="sekret")
        browser.do("press", key="Enter")
        browser.until("window.shardApp.chat.state === 'ready'", what="the models with the key")
        assert browser.js("document.getElementById('model').value") == "tiny"
        assert browser.js("localStorage.getItem('shard.api_key')") == "sekret"
        ask(browser, "hello")
        browser.until(f"!({STREAMING}) && ({LAST_ANSWER}).length > 0", what="an answer with the key")
        assert browser.js("document.querySelector('#messages .note.error')") is None
    finally:
        browser.close()


def test_no_model_then_queued_at_an_oracle_with_its_place(slow_twin_model: Path, tmp_path: Path) -> None:
    """A node without a model and no Oracle in sight: the page says so and will not send. An Oracle
    joins: its model appears. The Oracle is busy with its own user: the page shows the place in
    its queue (the `: queued` SSE comments), then the answer."""
    need_node_tools(browser=True)
    consumer = start_node(None, tmp_path / "c", sidecar=True, wait=False)
    oracle = None
    browser = Browser(tmp_path / "chromium.log")
    try:
        wait_for(lambda: requests.get(consumer.url + "/health", timeout=2).status_code == 503, what="the node")
        browser.do("goto", url=consumer.url + "/")
        browser.until("window.shardApp?.chat.state === 'no-model'", 30, "the no-model state")
        assert (
            "No model yet" in browser.text("#state") and browser.js("document.getElementById('send').disabled") is True
        )
        topo = wait_for(
            lambda: (
                (t := requests.get(consumer.api + "/system/topology", timeout=5).json())["sidecar"] == "running" and t
            ),
            what="the consumer's sidecar",
        )
        addr = next(a for a in topo["listen_addrs"] if "/tcp/" in a and "/ws" not in a)
        oracle = start_node(
            slow_twin_model, tmp_path / "o", "--parallel", "1", "--no-lookup", "--bootstrap", addr, sidecar=True
        )
        browser.until("window.shardApp.chat.state === 'ready'", 60, "the Oracle's model to appear")
        assert browser.js("document.getElementById('model').value") == "tiny-slow"
        owner = OpenAI(base_url=oracle.api, api_key="x", max_retries=0, timeout=300)
        busy = threading.Thread(
            target=lambda: owner.completions.create(model="default", prompt="a b", max_tokens=800, temperature=0)
        )
        busy.start()
        try:
            time.sleep(0.5)
            ask(browser, "hello there")
            place = browser.until(
                "window.shardApp.chat.state === 'queued' && document.getElementById('state').innerText",
                60,
                "the queued state",
            )
            assert re.match(r"Queued at an Oracle on the network: place 1\b", place), place
            browser.until(
                f"{STREAMING} && ({LAST_ANSWER}).length > 0 && window.shardApp.chat.state === 'answering'",
                240,
                "the answer after the wait",
            )
            browser.do("click", selector="#stop")
            browser.until(f"!({STREAMING})", 10, "the stop")
            assert browser.js("document.querySelector('#messages .note.error')") is None
        finally:
            busy.join()
    finally:
        browser.close()
        if oracle is not None:
            oracle.stop()
        consumer.stop()


def test_a_question_is_typed_and_answered_with_streaming(app: Browser) -> None:
    app.js(WATCH)
    ask(app, "Write three sentences about the sea.")
    app.until(STREAMING, 30, "the answer to start")
    answer = app.until(f"!({STREAMING}) && ({LAST_ANSWER})", 180, "the answer to end")
    lens = app.js("window.__lens")
    assert len({n for n in lens if n > 0}) >= 2, lens  # the text grew in steps while Stop showed
    assert len(answer.split()) >= 3
    assert (
        app.js("document.querySelector('#messages .msg.user .body').innerText")
        == "Write three sentences about the sea."
    )
    assert app.js("window.shardApp.chat.state") == "ready" and app.text("#state") == ""
    app.do("click", selector="#messages .msg.assistant .actions .copy")
    assert (
        app.js("navigator.clipboard.readText()")
        == json.loads(app.js("localStorage.getItem('shard.conversations')"))[0]["messages"][1]["content"]
    )
    # the conversation is kept in this browser only, and comes back after a reload
    stored = json.loads(app.js("localStorage.getItem('shard.conversations')"))
    assert stored[0]["title"] == "Write three sentences about the sea."
    assert [m["role"] for m in stored[0]["messages"]] == ["user", "assistant"] and stored[0]["messages"][1][
        "content"
    ].strip()
    app.do("goto", url=app.js("location.href"))
    app.until("window.shardApp?.chat.state === 'ready'", what="the app after a reload")
    assert app.js(LAST_ANSWER).strip() == answer.strip()
    assert "Write three sentences about the sea." in app.text("#chat-list")


def test_stop_mid_answer_then_regenerate(app: Browser, oracle: ServedNode) -> None:
    app.do("click", selector="#new-chat")
    before = metric(oracle, "shard_client_disconnects_total")
    ask(app, "Write a very long story about a dragon who learns to bake bread. Make it at least 800 words.")
    app.until(f"{STREAMING} && ({LAST_ANSWER}).length > 20", 120, "some of the answer")
    app.do("click", selector="#stop")
    app.until(f"!({STREAMING})", 10, "the stop")
    stopped = app.js(LAST_ANSWER)
    assert app.js("[...document.querySelectorAll('#messages .msg.assistant .note')].pop()?.innerText") == "Stopped."
    # the node cancelled the generation: the client went away, no request is left running
    wait_for(lambda: metric(oracle, "shard_client_disconnects_total") > before, 20, "the node to see the client leave")
    wait_for(
        lambda: (
            oracle.status() and requests.get(oracle.api + "/system/status", timeout=5).json()["queue"]["in_flight"] == 0
        ),
        20,
        "the node to end the generation",
    )
    time.sleep(1)
    assert app.js(LAST_ANSWER) == stopped  # nothing more arrives
    # regenerate: the stopped answer is replaced by a new one; Escape stops it from the keyboard
    app.do("click", selector="#messages .msg.assistant .regenerate")
    app.until(f"{STREAMING} && ({LAST_ANSWER}).length > 0", 120, "the regenerated answer")
    app.do("press", key="Escape")
    app.until(f"!({STREAMING})", 10, "the stop by Escape")
    assert app.js("document.querySelectorAll('#messages .msg').length") == 2  # one question, one answer
    copy = app.js("!!document.querySelector('#messages .msg.assistant .copy')")
    assert copy


def test_the_sidebar_shows_a_second_node(app: Browser, oracle: ServedNode, tiny_model: Path, tmp_path: Path) -> None:
    topo = requests.get(oracle.api + "/system/topology", timeout=5).json()
    addr = next(a for a in topo["listen_addrs"] if "/tcp/" in a and "/ws" not in a)
    other = start_node(tiny_model, tmp_path, "--ctx-size", "256", "--bootstrap", addr, sidecar=True)
    try:
        other_id = wait_for(
            lambda: requests.get(other.api + "/system/topology", timeout=5).json()["peer_id"], what="its peer id"
        )
        app.until(
            f"document.getElementById('peers').innerText.includes({json.dumps(short(other_id))})",
            60,
            "the second node in Peers",
        )
        # Peers lists it when connected; Oracles once its handshake has named its role and model (later).
        oracle_line = json.dumps(f"Oracle {short(other_id)} (on this machine)")
        app.until(f"document.getElementById('oracles').innerText.includes({oracle_line})", 60, "it under Oracles")
        oracles = app.text("#oracles")
        assert "This node" in oracles and f"Oracle {short(other_id)} (on this machine)" in oracles and "tiny" in oracles
        assert other_id not in app.js("document.body.innerText")  # full ids only under Details
        app.do("click", selector="#details summary")
        assert other_id in app.text("#diag")
        app.do("click", selector="#details summary")
    finally:
        other.stop()


def test_the_tabs_accepted_drafts_raise_its_credit(app: Browser, oracle: ServedNode) -> None:
    state = app.until(
        "window.shardApp.scout.state.connected && window.shardApp.scout.state.drafter.loaded && "
        "window.shardApp.scout.state",
        90,
        "the tab's scout to connect",
    )
    # the page comes from 127.0.0.1 and this node runs a model: the tab must not draft with a model
    assert state["drafter"]["kind"] == "lookup" and "Oracle's own machine" in state["why"]
    me = state["peerId"]
    peer = wait_for(
        lambda: [
            p for p in requests.get(oracle.api + "/system/peers", timeout=5).json()["peers"] if p["peer_id"] == me
        ],
        what="the tab at the node",
    )[0]
    assert peer["roles"] == ["scout"] and peer["models"] == ["prompt-lookup"]

    shown = (
        "Number(/thistabearned([0-9.]+)credit/"
        ".exec(document.getElementById('credit-facts').innerText.replace(/\\s+/g, ''))?.[1] ?? -1)"
    )
    start = app.until(f"{shown} >= 0 && String({shown})", 10, "the sidebar's credit")
    client = OpenAI(base_url=oracle.api, api_key="unused", max_retries=0, timeout=300)
    before = metric(oracle, "shard_draft_tokens_accepted_total", '{source="scout"}')
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": EDIT_PROMPT}], max_tokens=200, temperature=0
        )
        if metric(oracle, "shard_draft_tokens_accepted_total", '{source="scout"}') > before:
            break
    ledger = wait_for(
        lambda: [
            p
            for p in requests.get(oracle.api + "/system/credit", timeout=5).json()["peers"]
            if p["peer_id"] == me and p["credit"] > 0
        ],
        what="the tab's credit in the ledger",
    )[0]
    # the sidebar shows the ledger's (receipt-backed) credit for this tab, and the accepted tokens
    earned = app.until(f"{shown} >= {ledger['credit']} && {shown}", 30, "the sidebar to show the ledger's credit")
    assert earned >= ledger["credit"] > 0 and earned > float(start)
    # verdicts may still arrive: the panel shows the scout's count once it renders (read together)
    accepted = app.until(
        "(s => s > 0 && document.querySelector('#scout-facts').innerText.includes(s + ' of') && s)"
        "(window.shardApp.scout.state.accepted)",
        10,
        "the panel to show the tab's accepted tokens",
    )
    assert accepted > 0
    # nobody's prompt text is shown: not the other client's, not in the scout's state
    page = app.js("document.body.innerText") + app.js("JSON.stringify(window.shardApp.scout.state)")
    assert "quick brown fox" not in page and "Peer to peer networks" not in page


def test_accessible_on_desktop_and_phone_in_light_and_dark(app: Browser) -> None:
    """axe-core (WCAG 2.1 A/AA: names, labels, contrast, landmarks) finds nothing, at 1280 px and at
    a phone's 360 px, in both color schemes and with the network drawer open; at 360 px nothing
    overflows sideways; the drawer opens and closes from the keyboard."""
    try:
        for scheme in ("light", "dark"):
            app.do("scheme", value=scheme)
            for width, height in ((1280, 800), (360, 740)):
                app.do("viewport", width=width, height=height)
                time.sleep(0.3)
                assert app.do("axe") == [], (scheme, width)
                assert app.js("document.documentElement.scrollWidth") <= width
            # the network drawer, by keyboard: focus its button, Enter opens it, Escape closes it
            app.js("document.getElementById('net-toggle').focus()")
            app.do("press", key="Enter")
            app.until(
                "document.body.classList.contains('net-open') && "
                "getComputedStyle(document.getElementById('network')).visibility === 'visible'",
                5,
                "the drawer to open",
            )
            assert app.js("document.getElementById('net-toggle').getAttribute('aria-expanded')") == "true"
            time.sleep(0.3)
            assert app.do("axe") == [], (scheme, "drawer")
            app.do("press", key="Escape")
            app.until("!document.body.classList.contains('net-open')", 5, "the drawer to close")
            # closed, it is out of the tab order
            app.until(
                "getComputedStyle(document.getElementById('network')).visibility === 'hidden'", 5, "the drawer to hide"
            )
        # the theme button overrides the system's scheme, and is remembered
        app.do("click", selector="#theme")
        assert app.js("localStorage.getItem('shard.theme')") == "light"
        assert app.js("getComputedStyle(document.body).backgroundColor") == "rgb(255, 255, 255)"
    finally:
        app.js("localStorage.removeItem('shard.theme'); delete document.documentElement.dataset.theme")
        app.do("scheme", value="light")
        app.do("viewport", width=1280, height=800)


def test_the_tab_stops_contributing_when_asked(app: Browser, oracle: ServedNode) -> None:
    """Unticking "Contribute" ends the tab's scout (its peer leaves the node); ticking it again
    starts a new one. The choice is remembered. With "Pause while the tab is hidden", a hidden tab
    does not scout."""
    me = app.until("window.shardApp.scout.state.connected && window.shardApp.scout.state.peerId", 90, "the tab's scout")

    def scouts() -> set[str]:
        return {
            p["peer_id"]
            for p in requests.get(oracle.api + "/system/peers", timeout=5).json()["peers"]
            if "scout" in p["roles"]
        }

    wait_for(lambda: me in scouts(), what="the tab at the node")
    app.do("click", selector="#contribute")
    wait_for(lambda: me not in scouts(), 30, "the tab's scout to leave the node")
    assert app.js("localStorage.getItem('shard.scout.contribute')") == "off"
    assert "Not contributing" in app.text("#scout-state")
    app.do("click", selector="#contribute")
    again = app.until(
        f"window.shardApp.scout.state.connected && window.shardApp.scout.state.peerId !== {json.dumps(me)} && "
        "window.shardApp.scout.state.peerId",
        90,
        "a new scout",
    )
    wait_for(lambda: again in scouts(), what="the new scout at the node")
    # the sidebar keeps counting the tab's earlier peer ids
    assert json.loads(app.js("localStorage.getItem('shard.scout.peers')"))[-2:] == [me, again]
    # "Pause while the tab is hidden": hidden, the scout ends; visible again, a new one starts
    # (the page's visibility is set by hand: a headless browser has no window to hide)
    visibility = (
        "Object.defineProperty(document, 'visibilityState', {{value: '{}', configurable: true}}); "
        "document.dispatchEvent(new Event('visibilitychange')); true"
    )
    app.do("click", selector="#pause-hidden")
    try:
        app.js(visibility.format("hidden"))
        wait_for(lambda: again not in scouts(), 30, "the scout to pause while hidden")
        assert "Paused while the tab is hidden" in app.text("#scout-state")
        app.js(visibility.format("visible"))
        third = app.until(
            f"window.shardApp.scout.state.connected && window.shardApp.scout.state.peerId !== {json.dumps(again)} && "
            "window.shardApp.scout.state.peerId",
            90,
            "the scout back when visible",
        )
        wait_for(lambda: third in scouts(), what="the scout back at the node")
    finally:
        app.js(visibility.format("visible"))
        app.do("click", selector="#pause-hidden")
    assert app.js("localStorage.getItem('shard.scout.pause_hidden')") is None
