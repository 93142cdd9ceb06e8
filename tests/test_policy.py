"""The drafting policy on its own: which draft tokens pay for their place in a batch, given the
verify-cost curve and each source's acceptance (the engine tests run it on a real model)."""

from __future__ import annotations

from policy_helpers import CPU, curve
from shard.verifier.policy import MIN_GAIN, Acceptance, Calibration, Shadow, allot, calibrate

FLAT = {1: 0.010, 2: 0.0101, 4: 0.0102, 8: 0.0105, 16: 0.011}  # a GPU: bandwidth-bound, nearly flat


def test_one_stream_drafts_long_when_drafts_are_good_and_not_when_they_miss() -> None:
    cpu = curve(CPU)
    assert allot(cpu, 1, 1, [[0.99] * 16], 500) == [16]
    assert 2 <= allot(cpu, 1, 1, [[0.8] * 16], 500)[0] < 16
    assert allot(cpu, 1, 1, [[0.3] * 16], 500) == [0]  # on a CPU a weak guess costs more than it brings


def test_a_full_batch_drafts_only_what_pays_for_every_stream() -> None:
    cpu = curve(CPU)
    # Four streams: drafts right half the time are not worth a step all four wait for...
    assert allot(cpu, 4, 4, [[0.5] * 16] * 4, 500) == [0, 0, 0, 0]
    assert sum(allot(cpu, 4, 4, [[0.8] * 16] * 4, 500)) < sum(allot(cpu, 1, 1, [[0.8] * 16], 500)) * 4
    # ...but the one near-certain source among them still gets its tokens, and only it.
    take = allot(cpu, 4, 4, [[0.3] * 16, [0.98] * 16, [0.3] * 16, [0.3] * 16], 500)
    assert take[1] >= 8 and take[0] == take[2] == take[3] == 0
    # On a flat (GPU-like) curve, drafts are nearly free: everyone drafts what is likely enough.
    flat = allot(curve(FLAT), 4, 4, [[0.5] * 16] * 4, 500)
    assert all(k >= 2 for k in flat) and all(0.5**k >= MIN_GAIN for k in flat)


def test_now_and_then_one_token_is_checked_to_measure_its_cost_again() -> None:
    dear = curve({1: 0.0096, 2: 0.5, 4: 0.6})  # C(2) measured once while the machine was busy
    assert allot(dear, 1, 1, [[0.8] * 16], 500) == [0]
    assert allot(dear, 1, 1, [[0.8] * 16], 500, explore=True) == [1]
    assert allot(dear, 1, 1, [[0.01] * 16], 500, explore=True) == [0]  # not for drafts that never hit
    # More often (every GROW_EVERY steps) for a draft whose first token is likely: a curve measured
    # on a busy moment declined a 95% scout's every draft for a whole request.
    assert allot(dear, 1, 1, [[0.95] * 16], 500, grow=True) == [1]
    assert allot(dear, 1, 1, [[0.3] * 16], 500, grow=True) == [0]


def test_now_and_then_a_paying_draft_is_checked_further_to_measure_that_size() -> None:
    """The curve knows only sizes that ran: beyond them it extrapolates its last segment. A length
    the policy settled on must be measured longer now and then, or it never changes."""
    steep = curve({1: 0.010, 2: 0.014, 4: 0.024})  # sizes above 4 never ran: extrapolated steeply
    k = allot(steep, 1, 1, [[0.95] * 16], 500)[0]
    assert 0 < k < 8
    assert allot(steep, 1, 1, [[0.95] * 16], 500, grow=True) == [2 * k]
    assert allot(steep, 1, 1, [[0.3] * 16], 500, grow=True) == [0]  # not for drafts that do not pay at all
    assert allot(steep, 1, 1, [[0.95] * 3], 500, grow=True)[0] <= 3  # nor beyond what is offered


def test_calibration_measures_sizes_far_apart_first() -> None:
    """A slow model's calibration runs out of time after a few sizes: those should be 1, 4 and 16
    (1 and 2 alone extrapolated a steep curve for a 150-layer twin of SmolLM2)."""
    calls: list[int] = []
    assert calibrate(calls.append, budget_s=10.0).known()
    assert calls[2:8] == [1, 4, 16, 2, 8, 32]


def test_room_and_prompt_chunks_limit_the_drafts() -> None:
    cpu = curve(CPU)
    assert sum(allot(cpu, 1, 1, [[0.99] * 16, [0.99] * 16], 5)) <= 5
    assert allot(cpu, 300, 0, [[0.99] * 16], 200) == [0]  # nothing emits this step: nothing to gain


def test_acceptance_follows_recent_outcomes() -> None:
    a = Acceptance(0.5)
    for _ in range(8):
        a.record(0, True)
    assert a.rate < 0.1
    a.record(12, False)  # one long hit brings it back at once
    assert a.rate > 0.6


def test_shadow_scores_a_proposal_as_a_check_would_token_by_token() -> None:
    s = Shadow(3, [7, 8, 9])
    assert s.advance([0, 1, 2]) == (0, False, False)  # nothing generated yet at its place
    assert s.advance([0, 1, 2, 7, 8]) == (2, False, False)  # right so far: two kept, not decided
    assert s.advance([0, 1, 2, 7, 8, 9]) == (1, False, True)
    miss = Shadow(3, [7, 8, 9])
    assert miss.advance([0, 1, 2, 7, 5, 9]) == (1, True, True)


def test_cost_curve_interpolates_and_resists_outliers() -> None:
    c = curve(CPU)
    assert c.cost(3) == (0.018 + 0.026) / 2
    assert abs(c.cost(32) - (0.073 + 16 * (0.073 - 0.041) / 8)) < 1e-12  # along the last segment
    c.observe(4, 10.0)  # one descheduled step
    assert c.cost(4) < 0.026 * 1.3
    calls: list[int] = []
    assert calibrate(calls.append, budget_s=0.0, steps=0).known() is False and calls == [1, 2]  # no time: warm-up only


def test_a_scouts_stated_confidence_only_picks_a_bin_whose_rate_is_measured() -> None:
    """Honest: its unsure tokens miss and its sure ones are kept, and the bins say so. A liar that
    states 100% for every wrong guess: its top bin reads what it measured, not what it claims."""
    honest, liar = Calibration(0.9), Calibration(0.9)
    for _ in range(10):
        honest.record([99, 97, 30], 2, True)
        liar.record([100, 100, 100], 0, True)
    sure, unsure = honest.rates([99, 30])
    assert sure > 0.95 and unsure < 0.2
    assert liar.rates([100])[0] < 0.1
    assert allot(curve(CPU), 1, 1, [liar.rates([100] * 16)], 500) == [0]  # checked no further for its claim
    # One offer: per-token rates, the check stops before the first token unlikely enough not to pay.
    assert allot(curve(CPU), 1, 1, [[0.99] * 5 + [0.05] + [0.99] * 10], 500) == [5]
