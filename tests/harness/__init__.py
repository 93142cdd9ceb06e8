"""The one test harness of the tests and the benches: ports, waiting, processes, `shard serve`
nodes, bare shard-daemons, the headless browser and the tiny test model. On the import path
through pytest's `pythonpath` (pyproject.toml) and, for the benches, the `.pth` file that
scripts/setup writes into .venv."""

from harness.daemons import Daemon, daemon_binary
from harness.nodes import (
    MODEL_CACHE,
    SIDECAR_FLAGS,
    ServedNode,
    metric,
    pair_key,
    start_node,
    start_scout,
    timed_chat,
)
from harness.ports import free_port
from harness.processes import stop, tree, tree_rss
from harness.waiting import until, wait_for

__all__ = [
    "MODEL_CACHE",
    "SIDECAR_FLAGS",
    "Daemon",
    "ServedNode",
    "daemon_binary",
    "free_port",
    "metric",
    "pair_key",
    "start_node",
    "start_scout",
    "stop",
    "timed_chat",
    "tree",
    "tree_rss",
    "until",
    "wait_for",
]
