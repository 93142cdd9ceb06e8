"""Shared fixtures: real models (the tiny random GGUF written here, SmolLM2 from its PyPI wheel)
and real `shard serve` processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import MODEL_CACHE, ServedNode, start_node
from harness.tiny_gguf import write_tiny_gguf
from shard import models


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf", seed=1)


@pytest.fixture(scope="session")
def slow_twin_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with idle layers: the same logits, several times slower (a target that its
    scouts, running the tiny model, can draft ahead of)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-slow.gguf", seed=1, idle_layers=48)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    path = models.default_model_path(MODEL_CACHE)
    if not path.exists():
        pytest.fail(
            f"SmolLM2 is not at {path}: run `bash scripts/test` (it installs it), or "
            f"`shard models install-default --data-dir {MODEL_CACHE}`"
        )
    return path


@pytest.fixture(scope="module")
def tiny_node(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServedNode]:
    """`shard serve` on the tiny model, one per test module; a module sets TINY_NODE_ARGS for other flags."""
    args = getattr(request.module, "TINY_NODE_ARGS", ("--parallel", "2", "--ctx-size", "512"))
    node = start_node(tiny_model, tmp_path_factory.mktemp("tiny-node"), *args)
    yield node
    node.stop()
