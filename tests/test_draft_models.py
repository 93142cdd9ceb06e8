"""Draft models: the Oracle offers a small GGUF with its tokenizer (checked at start, found in its
models folder, named in the handshake and in work); a headless scout with no model of its own
fetches it over libp2p (chunked, sha256-checked, resumable, cached) and drafts with it; a file
whose tokenizer fingerprint is not the announced one is refused. Real `shard serve`, `shard
scout` and shard-daemon processes; the slower twin of the tiny model as the Oracle."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from openai import OpenAI

from harness import ServedNode, metric, start_node, start_scout, wait_for
from shard.config import Settings
from shard.coop import model_transfer
from shard.coop.draft_model import DraftModel, vocab_fingerprint
from shard.network.sidecar import Sidecar, find_daemon


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_fingerprint_is_the_tokenizer_not_the_weights(
    tiny_model: Path, slow_twin_model: Path, smollm2: Path
) -> None:
    assert vocab_fingerprint(tiny_model) == vocab_fingerprint(slow_twin_model) != ""
    assert vocab_fingerprint(smollm2) not in ("", vocab_fingerprint(tiny_model))


def test_a_draft_model_with_another_tokenizer_stops_the_node(
    slow_twin_model: Path, smollm2: Path, tmp_path: Path
) -> None:
    node = start_node(slow_twin_model, tmp_path, "--draft-model", str(smollm2), wait=False)
    assert node.proc.wait(60) != 0
    log = node.log()
    assert "does not share the tokenizer" in log and smollm2.name in log, log[-2000:]


@pytest.fixture(scope="module")
def oracle(slow_twin_model: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    """The slow twin, with the tiny model in its models folder: found and offered as the draft model."""
    tmp = tmp_path_factory.mktemp("draft-oracle")
    data_dir = tmp / "oracle-data"
    (data_dir / "models").mkdir(parents=True)
    shutil.copy(tiny_model, data_dir / "models" / "tiny-draft.gguf")
    node = start_node(
        slow_twin_model,
        tmp,
        "--parallel",
        "2",
        "--ctx-size",
        "1024",
        "--no-lookup",
        "--data-dir",
        str(data_dir),
        sidecar=True,
    )
    wait_for(lambda: node.status()["sidecar"]["state"] == "running", what="the sidecar")
    yield node
    node.stop()


def oracle_address(node: ServedNode) -> str:
    topo = requests.get(node.api + "/system/topology", timeout=5).json()
    return next(a for a in topo["listen_addrs"] if a.startswith("/ip4/127.0.0.1/tcp/") and "/ws" not in a)


def test_the_draft_model_is_found_offered_to_tabs_and_announced(oracle: ServedNode, tiny_model: Path) -> None:
    assert "draft model for scouts" in oracle.log() and "tiny-draft.gguf" in oracle.log()
    info = requests.get(oracle.url + "/scout/node.json", timeout=5).json()
    assert info["draft_model"] == "tiny-draft.gguf"  # what the tab loads, not the Oracle's own model
    assert requests.get(oracle.url + "/scout/models/tiny-draft.gguf", timeout=5).content == tiny_model.read_bytes()


def test_a_scout_without_a_model_fetches_the_draft_model_and_drafts(
    oracle: ServedNode, tiny_model: Path, tmp_path: Path
) -> None:
    scout = start_scout(None, oracle_address(oracle), tmp_path, paired_with=oracle)
    try:
        log = tmp_path / "scout.log"
        wait_for(
            lambda: "drafting with tiny-draft.gguf" in log.read_text(errors="replace"),
            90,
            "the scout to fetch the draft model",
        )
        cached = tmp_path / "scout-data" / "draft-models" / f"{sha256(tiny_model)}.gguf"
        assert cached.is_file() and sha256(cached) == sha256(tiny_model)
        assert not list(cached.parent.glob("*.part"))
        # The Oracle sees it as a scout drafting with that model, and checks its drafts.
        wait_for(
            lambda: any(
                p["roles"] == ["scout"] and p["models"] == ["tiny-draft.gguf"]
                for p in requests.get(oracle.api + "/system/peers", timeout=5).json()["peers"]
            ),
            what="the scout's handshake",
        )
        client = OpenAI(base_url=oracle.api, api_key="x")
        plain = None
        for _ in range(6):
            out = (
                client.completions.create(model="default", prompt="one two three", max_tokens=120, temperature=0)
                .choices[0]
                .text
            )
            assert plain is None or out == plain  # drafts never change the output
            plain = out
            if metric(oracle, "shard_draft_tokens_accepted_total", '{source="scout"}') > 0:
                break
        assert metric(oracle, "shard_draft_tokens_accepted_total", '{source="scout"}') > 0
    finally:
        scout.send_signal(signal.SIGTERM)
        scout.wait(20)


async def _fetch_with_a_sidecar(
    tmp: Path, bootstrap: str, oracle_id: str, attempts: list[tuple[dict[str, Any], Path]]
) -> list[Any]:
    """Run model_transfer.fetch through a real sidecar of our own, once per (description, cache)."""
    settings = Settings(
        data_dir=str(tmp / "fetcher"),
        control_port=0,
        tcp_port=0,
        p2p_host="127.0.0.1",
        mdns=False,
        bootstrap=[bootstrap],
    )
    binary = find_daemon(settings)
    assert binary is not None
    sidecar = Sidecar(settings, binary, lambda e: None, lambda e: None)
    sidecar.start()
    results: list[Any] = []
    try:
        assert await sidecar.supervisor.wait_ready(30)
        for _ in range(100):
            if oracle_id in [p["peer_id"] for p in (await sidecar.call("GET", "/peers"))["peers"]]:
                break
            await asyncio.sleep(0.2)
        for description, cache in attempts:
            try:
                results.append(await model_transfer.fetch(sidecar, oracle_id, description, cache))
            except model_transfer.TransferError as exc:
                results.append(exc)
    finally:
        await sidecar.stop()
    return results


def test_the_transfer_resumes_and_refuses_a_file_whose_fingerprint_differs(
    oracle: ServedNode, tiny_model: Path, tmp_path: Path
) -> None:
    oracle_id = requests.get(oracle.api + "/system/topology", timeout=5).json()["peer_id"]
    honest = DraftModel.open(tiny_model).describe()
    # Resumable: half the file is already there (a transfer that broke); the rest is fetched.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    data = tiny_model.read_bytes()
    (resumed / f"{honest['sha256']}.part").write_bytes(data[: len(data) // 2])
    # Refused: the right bytes, announced with another tokenizer's fingerprint.
    lying = {**honest, "vocab": "0123456789abcdef"}
    results = asyncio.run(
        _fetch_with_a_sidecar(
            tmp_path,
            oracle_address(oracle),
            oracle_id,
            [(honest, resumed), (lying, tmp_path / "lying"), ({**honest, "sha256": "ab" * 32}, tmp_path / "other")],
        )
    )
    assert isinstance(results[0], Path) and results[0].read_bytes() == data
    assert isinstance(results[1], model_transfer.TransferError) and "fingerprint" in str(results[1])
    assert not list((tmp_path / "lying").iterdir())  # nothing kept
    assert isinstance(results[2], model_transfer.TransferError) and "another sha256" in str(
        results[2]
    )  # only what was announced
