"""Prometheus metrics (prometheus_client), one registry per node so several nodes can share a process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # *_created series only add noise for a single node


class _Live(Collector):
    """Values read at scrape time from the node's parts (queue depth, verifier state)."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, value in self._read().items():
            yield GaugeMetricFamily(f"shard_{name}", name.replace("_", " "), value=value)


class Metrics:
    def __init__(self, live: Callable[[], dict[str, float]]) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("shard_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("shard_prompt_tokens", "prompt tokens evaluated", registry=r)
        self.completion_tokens = Counter("shard_completion_tokens", "tokens generated", registry=r)
        self.draft_proposed = Counter(
            "shard_draft_tokens_proposed", "draft tokens offered for verification", ["source"], registry=r
        )
        self.draft_accepted = Counter(
            "shard_draft_tokens_accepted", "draft tokens accepted by verification", ["source"], registry=r
        )
        self.draft_round_trip = Histogram(
            "shard_draft_round_trip_seconds",
            "from publishing work to a scout's draft arriving",
            registry=r,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.remote_failovers = Counter(
            "shard_remote_failovers", "remote Oracles that failed a request, which another took over", registry=r
        )
        self.oracles_dropped = Counter(
            "shard_oracles_dropped", "remote Oracles caught lying and dropped, by reason", ["reason"], registry=r
        )
        self.drafts_ignored = Counter(
            "shard_drafts_ignored", "scout drafts not checked, by reason", ["reason"], registry=r
        )
        self.tokens_per_second = Gauge(
            "shard_tokens_per_second", "decode speed of the last finished request", registry=r
        )
        self.ttft = Histogram(
            "shard_time_to_first_token_seconds",
            "time to first token",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.duration = Histogram(
            "shard_request_duration_seconds",
            "generation request duration",
            registry=r,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.client_disconnects = Counter(
            "shard_client_disconnects", "generations cancelled because the client left", registry=r
        )
        r.register(_Live(live))

    def record_usage(self, usage: dict[str, float | None], source: str = "lookup") -> None:
        self.prompt_tokens.inc((usage.get("prompt_tokens") or 0) - (usage.get("cached_tokens") or 0))
        self.completion_tokens.inc(usage.get("completion_tokens") or 0)
        if usage.get("draft_proposed"):
            self.draft_proposed.labels(source).inc(usage["draft_proposed"] or 0)
            self.draft_accepted.labels(source).inc(usage.get("draft_accepted") or 0)
        if usage.get("tokens_per_s"):
            self.tokens_per_second.set(usage["tokens_per_s"] or 0)
        if usage.get("ttft_ms") is not None:
            self.ttft.observe((usage["ttft_ms"] or 0) / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
