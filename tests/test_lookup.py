"""Prompt lookup: proposes what followed the same n-gram before; adapts its length to acceptance."""

from shard.verifier.lookup import PromptLookup


def test_proposes_continuation_of_repeated_ngram() -> None:
    d = PromptLookup()
    tokens = [1, 2, 3, 4, 5, 6, 7, 9, 2, 3, 4]
    assert d.propose(tokens, 16) == [5, 6, 7, 9]  # limit starts at 4
    assert d.propose([10, 11, 12], 16) == []


def test_length_adapts_to_acceptance() -> None:
    d = PromptLookup()
    d.feedback(4, 4)
    assert d.limit == 8
    d.feedback(8, 1)
    assert d.limit == 2
    d.feedback(2, 0)
    assert d.limit == 1


def test_index_is_incremental_and_prefers_latest_occurrence() -> None:
    d = PromptLookup()
    seq = [7, 8, 1, 7, 8, 2]
    assert d.propose(seq, 1) == []  # [8, 2] never seen before
    seq += [7, 8]
    assert d.propose(seq, 1) == [2]  # the latest [7, 8] was followed by 2


def test_silent_after_misses_and_back_at_once_after_a_hit() -> None:
    d = PromptLookup()
    tokens = [1, 2, 3, 4, 1, 2, 3]
    assert d.propose(tokens, 16) == [4, 1, 2, 3]
    d.feedback(4, 0)  # a miss: quiet for 1 step
    assert d.propose(tokens, 16) == []
    assert d.propose(tokens, 16) == [4]
    d.feedback(1, 0)  # another miss: quiet for 2 steps
    assert [d.propose(tokens, 16) for _ in range(3)] == [[], [], [4]]
    d.feedback(1, 1)  # a hit: the next miss is forgiven after 1 step again
    d.propose(tokens, 16)
    d.feedback(2, 0)
    assert d.quiet == 1
    for _ in range(10):  # the silence is capped
        d.feedback(1, 0)
    assert d.quiet <= 64
