"""Prompt lookup: proposes what followed the same n-gram before (how much is checked: test_policy.py)."""

from shard.verifier.lookup import PromptLookup


def test_proposes_continuation_of_repeated_ngram() -> None:
    d = PromptLookup()
    tokens = [1, 2, 3, 4, 5, 6, 7, 9, 2, 3, 4]
    assert d.propose(tokens, 4) == [5, 6, 7, 9]
    assert d.propose(tokens, 16) == [5, 6, 7, 9, 2, 3, 4]  # all it has: the engine decides what to check
    assert d.propose([10, 11, 12], 16) == []


def test_index_is_incremental_and_prefers_latest_occurrence() -> None:
    d = PromptLookup()
    seq = [7, 8, 1, 7, 8, 2]
    assert d.propose(seq, 1) == []  # [8, 2] never seen before
    seq += [7, 8]
    assert d.propose(seq, 1) == [2]  # the latest [7, 8] was followed by 2
