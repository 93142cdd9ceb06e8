"""The headless scout's drafting session, without a network: how far ahead it drafts and when it
rests follow its measured agreement with the Oracle's tokens, kept per Oracle across requests."""

from __future__ import annotations

from pathlib import Path

from shard.limits import MAX_DRAFT_TOKENS, MAX_SESSION_DRAFT_TOKENS
from shard.network.messages import Verdict, Work
from shard.scout.headless import DraftSession, LlamaDrafter, Standing, standing_for


def _session(standing: Standing | None = None, key: str = "k") -> DraftSession:
    work = Work(work_id=f"{key}.1", model="m", context="a b", position=2, max_draft=16, deadline_ms=0, tokens=[5, 6])
    return DraftSession(
        oracle="o", work=work, exact=True, confirmed=[5, 6], position=2, standing=standing or Standing()
    )


def _agree(s: DraftSession, right: int, wrong: bool) -> None:
    """The scout guessed `right` tokens the Oracle then decided (and one more it did not, if `wrong`)."""
    base = 100 + s.position
    s.guess = list(range(base, base + right + (1 if wrong else 0)))
    decided = list(range(base, base + right)) + ([1] if wrong else [])
    s.advance(decided, "", None)


def test_the_guess_is_scored_against_the_oracles_tokens() -> None:
    s = _session()
    before = s.standing.rate
    _agree(s, 3, False)
    assert s.standing.rate > before and s.guess == []
    _agree(s, 1, True)
    assert s.standing.rate < before


def test_a_fair_scout_keeps_drafting_after_useless_verdicts() -> None:
    """A 70% scout's drafts are often declined ("unpaid": the Oracle's policy found a short draft not
    worth a check) or late and wrong ("missed"): it must keep drafting, or the Oracle never learns
    that it pays (measured: it rested 1, 2, 4 ... 32 steps after each and the noisy twin's row
    checked 2 scout tokens in a whole run)."""
    s = _session()
    for _ in range(10):
        _agree(s, 2, True)  # 2 of every 3 tokens right
    assert 0.5 < s.standing.rate < 0.8
    for verdict in (
        Verdict(work_id="k.1", outcome="verified", proposed=0, accepted=0),
        Verdict(work_id="k.1", outcome="ignored", reason="missed"),
        Verdict(work_id="k.1", outcome="verified", proposed=4, accepted=0),
    ):
        assert s.on_verdict(verdict)
        assert s.rest == 0 and s.drafting()


def test_an_all_wrong_scout_rests_longer_each_time_and_across_requests() -> None:
    """An all-wrong scout rests 1, 2, 4 ... Oracle steps after each useless draft, and its rest is
    its standing with the Oracle: a new request of the same Oracle does not try it afresh."""
    standings: dict[str, Standing] = {}
    s = _session(standing_for(standings, "o"))
    for _ in range(6):
        _agree(s, 0, True)
    rests = []
    for _ in range(3):
        s.on_verdict(Verdict(work_id="k.1", outcome="ignored", reason="missed"))
        rests.append(s.rest)
        s.standing.rest = 0
    assert rests == [1, 2, 4]
    s.on_verdict(Verdict(work_id="k.1", outcome="verified", proposed=3, accepted=0))
    assert s.rest == 8 and not s.drafting()
    nxt = _session(standing_for(standings, "o"), key="next")  # the Oracle's next request
    assert nxt.rest == 8 and not nxt.drafting()
    other = _session(standing_for(standings, "another oracle"), key="x")
    assert other.drafting()
    s.on_verdict(Verdict(work_id="k.1", outcome="verified", proposed=3, accepted=1))  # a hit: forgiven
    assert s.standing.backoff == 1


def test_draft_length_follows_agreement() -> None:
    s = _session()
    assert s.ahead >= MAX_DRAFT_TOKENS  # a new scout is tried far ahead (its drafts must cover the Oracle's lead)
    for _ in range(8):
        _agree(s, 1, True)  # half right
    assert s.ahead <= 6
    for _ in range(20):
        _agree(s, 3, False)
    assert s.ahead == MAX_SESSION_DRAFT_TOKENS
    s.cap = 3  # the model ended its text there
    assert s.ahead == 3


def test_standings_are_bounded() -> None:
    from shard.scout.headless import MAX_STANDINGS

    standings: dict[str, Standing] = {}
    first = standing_for(standings, "o0")
    for i in range(1, MAX_STANDINGS + 5):
        standing_for(standings, f"o{i}")
    assert len(standings) == MAX_STANDINGS and "o0" not in standings
    assert standing_for(standings, "o0") is not first


def test_a_scout_that_often_disagrees_keeps_fewer_drafts_in_flight() -> None:
    from shard.scout.headless import MAX_IN_FLIGHT, Scout

    s = _session()
    for _ in range(20):
        _agree(s, 4, False)
    assert s.max_in_flight() == MAX_IN_FLIGHT
    s.guess, s.in_flight = [1, 2], {s.epoch: MAX_IN_FLIGHT - 1}
    assert Scout._sendable(s)
    for _ in range(10):
        _agree(s, 2, True)
    s.guess, s.in_flight = [1, 2], {s.epoch: MAX_IN_FLIGHT - 1}
    assert s.max_in_flight() == MAX_IN_FLIGHT - 1 and not Scout._sendable(s)


def test_drafts_of_a_dropped_guess_do_not_hold_back_the_corrected_one() -> None:
    """Drafts on their way when the Oracle decided otherwise will be answered "missed": the scout
    sends its corrected guess at once instead of waiting a step for those answers."""
    from shard.scout.headless import MAX_IN_FLIGHT, Scout

    s = _session()
    s.guess = [107, 108, 109]
    s.in_flight = {s.epoch: MAX_IN_FLIGHT}
    assert not Scout._sendable(s)
    s.advance([1], "", None)  # the Oracle decided otherwise: the guess is dropped
    s.guess = [50, 51]  # the corrected guess
    assert Scout._sendable(s)
    s.in_flight[s.epoch] = MAX_IN_FLIGHT - 1
    s.epoch += 1
    s.in_flight[s.epoch] = 2  # at most 2 x MAX_IN_FLIGHT on their way in all
    assert not Scout._sendable(s)


def test_a_model_call_stops_once_its_guess_is_dropped(tiny_model: Path) -> None:
    """A progress message that drops the guess arrives while the model drafts in its worker thread:
    the call returns after the token in hand instead of paying a decode per token still asked for
    (the corrected draft waited for them: 56-84 ms from the news to its first draft, 46 of them decodes)."""
    drafter = LlamaDrafter(tiny_model, n_ctx=256, n_threads=1)
    context = drafter.tokenize("the cat sat on the")
    whole, _ = drafter.extend(context, 6)
    assert len(whole) == 6
    asked = []

    def wanted() -> bool:
        asked.append(1)
        return len(asked) < 2  # the guess is dropped while the second token is drafted

    cut, confidence = drafter.extend(context, 6, wanted)
    assert cut == whole[:2] and len(confidence) == 2
