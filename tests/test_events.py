"""Typed events: what crosses a process boundary is parsed once, and a peer's lines are checked."""

from __future__ import annotations

import pytest

from shard import events
from shard.events import BadEvent, Failed, Finished, Queued, Started, Token


def test_an_oracles_lines_are_typed_and_bounded() -> None:
    assert events.from_remote({"type": "token", "text": "ab", "n": 1}) == Token("ab", 1)
    assert events.from_remote({"type": "start", "prompt_tokens": 7}) == Started(prompt_tokens=7)
    assert events.from_remote({"type": "queued", "position": 2, "eta_s": 3}) == Queued(2, 3.0)
    assert events.from_remote({"type": "queued", "position": 2, "eta_s": float("nan")}) == Queued(2, None)
    end = events.from_remote(
        {"type": "end", "finish_reason": "length", "usage": {"completion_tokens": 3, "x": "junk", "y": -1, "z": True}}
    )
    assert end == Finished("length", {"completion_tokens": 3})  # only non-negative numbers are kept
    assert events.from_remote({"type": "error", "message": "x" * 5000}) == Failed("peer_error", "x" * 1000)
    assert events.from_remote({"type": "from-a-newer-peer"}) is None  # skipped, not an offence


@pytest.mark.parametrize(
    "line",
    [
        {"type": "token", "text": "a" * 65, "n": 1},  # no token is longer than 64 characters
        {"type": "token", "text": "a", "n": True},
        {"type": "token", "text": "a", "n": -1},
        {"type": "token", "text": 5, "n": 1},
        {"type": "token", "text": "a" * 70_000, "n": 10_000},  # a line's text is bounded whatever it claims
        ["not", "an", "object"],
    ],
)
def test_a_line_only_a_dishonest_oracle_sends_is_refused(line: object) -> None:
    with pytest.raises(BadEvent):
        events.from_remote(line)


def test_the_verifier_stream_is_typed_once_and_an_oracle_line_comes_out_of_it() -> None:
    token = events.from_verifier({"type": "token", "text": "hi", "ids": [5, 6], "logprobs": [{"token": "hi"}]})
    assert token == Token("hi", 2, (5, 6), [{"token": "hi"}])
    start = events.from_verifier(
        {"type": "start", "job": 3, "prompt_tokens": 4, "context_text": "ab", "context_tokens": [1, 2]}
    )
    assert start == Started(prompt_tokens=4, job=3, context_text="ab", context_tokens=(1, 2))
    assert events.to_remote(token) == {"type": "token", "text": "hi", "n": 2}  # the count, never ids
    end = events.from_verifier({"type": "end", "finish_reason": "stop", "usage": {"completion_tokens": 2}})
    assert events.to_remote(end) == {"type": "end", "finish_reason": "stop", "usage": {"completion_tokens": 2}}
    # what the Oracle sends, the asker reads back as the same event
    assert events.from_remote(events.to_remote(token)) == Token("hi", 2)


def test_sidecar_events_are_typed() -> None:
    assert events.from_sidecar({"type": "lagged", "missed": 4}) == events.Lagged(4)
    assert events.from_sidecar({"type": "subscribed"}) == events.Subscribed()
    peer = events.from_sidecar({"type": "peer_disconnected", "peer_id": "p"})
    assert isinstance(peer, events.PeerEvent) and (peer.kind, peer.peer_id) == ("peer_disconnected", "p")
    req = events.from_sidecar({"type": "infer_request", "from": "a", "request": {"x": 1}, "request_id": 9})
    assert isinstance(req, events.Request) and (req.sender, req.payload, req.request_id) == ("a", {"x": 1}, 9)
