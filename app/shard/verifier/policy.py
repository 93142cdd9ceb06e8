"""How many draft tokens each slot may add to a step: the ones whose expected gain beats their cost.

A decode step with n tokens in its batch costs C(n) seconds (the verify-cost curve: on a 2-core CPU
C(1) ~ 10 ms, C(16) ~ 70 ms; on a GPU it is nearly flat). A step that decodes B streams puts out
B tokens plus the drafts it keeps; a draft token at depth j of a source that is right with per-token
probability a adds a^j expected tokens (it only counts if the ones before it were kept). The
policy adds draft tokens in order of expected gain while tokens per second of the whole step rise:
with one stream and good drafts it drafts long, with a full batch the same drafts must pay for
themselves against every stream's step, and drafts that keep missing are not checked at all.

Both inputs are measured, never assumed: the curve at start (a few decodes, well under a second)
and then from every step actually run; each source's acceptance per job from what the target
actually produced after each proposal, whether or not the proposal was checked (so a source that
was silenced is heard again as soon as it would have been right).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence

MIN_GAIN = 0.05  # a draft token worth less than this (in expected tokens) is never checked: noise
DECAY = 0.9  # per outcome: a source's acceptance is about its last ~10 outcomes
PRIOR_WEIGHT = 2.0  # a new job starts from the engine-wide rate of its source, worth 2 outcomes
EWMA = 0.2  # how fast a measured step cost moves the curve
SIZES = (1, 2, 4, 8, 16, 32)  # batch sizes measured at start, as far as the time budget goes
EXPLORE_EVERY = 64  # steps: one draft token that does not seem to pay is checked anyway (see allot)
GROW_EVERY = 8  # steps: a draft that pays is checked twice as far as seems best, to measure that size (see allot)
PROBE_GAIN = 0.5  # ... and one that seems not to pay, but whose first token is this likely, is checked for one token
CALIBRATE_STEPS = 12  # the calibration's time budget, in one-token steps (a slow model gets more seconds)
MAX_CALIBRATE_S = 3.0
CONFIDENCE_BINS = (40, 60, 80, 95)  # a draft token's stated confidence (percent) falls in one of 5 bins


class CostCurve:
    """Seconds per decode step as a function of the batch's token count."""

    def __init__(self) -> None:
        self._n: list[int] = []  # sorted batch sizes with a measurement
        self._s: dict[int, float] = {}
        self._floor: list[float] = []  # per size in _n, the least cost measured at it or above

    def observe(self, n: int, seconds: float) -> None:
        if n <= 0 or seconds <= 0:
            return
        if n > 32:  # prompt chunks come in every size: keep one point per 16 (a few dozen in all)
            n = (n + 8) // 16 * 16
        self._update(n, seconds)
        floor, self._floor = float("inf"), [0.0] * len(self._n)
        for i in range(len(self._n) - 1, -1, -1):
            floor = self._floor[i] = min(floor, self._s[self._n[i]])

    def _update(self, n: int, seconds: float) -> None:
        old = self._s.get(n)
        if old is None:
            if self._n:  # a first look at a new size is held to twice what its neighbours suggest
                seconds = min(seconds, 2 * self.cost(n))
            bisect.insort(self._n, n)
            self._s[n] = seconds
            return
        if seconds < old:  # noise only ever adds time: a quicker step is news, believe it soon
            self._s[n] = old + 0.5 * (seconds - old)
        else:  # a step descheduled by another process is one outlier: it moves the estimate little
            self._s[n] = old + EWMA * (min(seconds, old * 2) - old)

    def known(self) -> bool:
        return bool(self._n)

    def cost(self, n: int) -> float:
        """C(n), piecewise linear between measured sizes and beyond them along the last segment.
        Each size counts at the least cost measured at it or above: noise makes bumps, work does not."""
        ns, c = self._n, self._floor
        if not ns:
            return float(n)
        i = bisect.bisect_left(ns, n)
        if i < len(ns) and ns[i] == n:
            return c[i]
        if i == 0:
            return c[0]  # fewer tokens than any measured step cost no more than it
        if i == len(ns):
            if len(ns) == 1:
                return c[0] * n / ns[0]  # one point: assume no gain from batching until measured
            i -= 1
        lo, hi = ns[i - 1], ns[i]
        return c[i - 1] + (c[i] - c[i - 1]) * (n - lo) / (hi - lo)

    def table(self) -> dict[int, float]:
        return {n: round(self._s[n] * 1000, 2) for n in self._n}


class Acceptance:
    """A source's per-token acceptance: the chance its next draft token is kept when the ones
    before it were, from recent outcomes (kept tokens are successes, the first miss a failure).
    `decay` per outcome sets how far back it remembers (0.9: about the last 10)."""

    def __init__(self, rate: float, weight: float = PRIOR_WEIGHT, decay: float = DECAY) -> None:
        self.kept = rate * weight
        self.missed = (1 - rate) * weight
        self.decay = decay

    @property
    def rate(self) -> float:
        total = self.kept + self.missed
        return self.kept / total if total > 0 else 0.0

    def record(self, kept: int, missed: bool) -> None:
        for _ in range(kept):
            self.kept = self.kept * self.decay + 1
            self.missed *= self.decay
        if missed:
            self.kept *= self.decay
            self.missed = self.missed * self.decay + 1


def confidence_bin(confidence: int) -> int:
    return bisect.bisect_right(CONFIDENCE_BINS, confidence)


class Calibration:
    """A source's acceptance by the confidence it states for each draft token (its model's
    probability for it, in percent): the statement only picks a bin, and each bin's rate is
    measured like any source's, from the target's tokens. A scout that claims certainty for bad
    guesses is read at its measured rate; an honest one is checked far where it is sure and not
    past its first unsure token (measured: SmolLM2's greedy token agreed with its noisy twin's 49%
    of the time below 40%, 70% at 40-60%, 96-100% above 60%; one rate for all of them cut a 77%
    scout's drafts to 3 tokens through runs of 30 sure ones)."""

    def __init__(self, prior: float) -> None:
        self.bins = [Acceptance(prior) for _ in range(len(CONFIDENCE_BINS) + 1)]

    def rates(self, confidence: Sequence[int]) -> list[float]:
        return [self.bins[confidence_bin(c)].rate for c in confidence]

    def record(self, confidence: Sequence[int], kept: int, missed: bool) -> None:
        """The outcome of a draft whose tokens had `confidence`: the first `kept` were kept, then
        (`missed`) the next was not."""
        for c in confidence[:kept]:
            self.bins[confidence_bin(c)].record(1, False)
        if missed and kept < len(confidence):
            self.bins[confidence_bin(confidence[kept])].record(0, True)


class Shadow:
    """A proposal waiting for the target's tokens at its positions: each is scored as the check
    would have scored it (the output never depends on drafts, so this is exact), checked or not,
    as soon as it is generated."""

    __slots__ = ("position", "tokens", "scored", "confidence")

    def __init__(self, position: int, tokens: list[int], confidence: list[int] | None = None) -> None:
        self.position, self.tokens, self.scored, self.confidence = position, tokens, 0, confidence

    def advance(self, generated: list[int]) -> tuple[int, bool, bool]:
        """(newly kept tokens, missed, decided): the tokens generated since the last call that
        the proposal had right, whether it then missed, and whether it is fully scored."""
        have = generated[self.position + self.scored : self.position + len(self.tokens)]
        kept = 0
        while kept < len(have) and have[kept] == self.tokens[self.scored + kept]:
            kept += 1
        self.scored += kept
        missed = kept < len(have)
        return kept, missed, missed or self.scored == len(self.tokens)


def allot(
    curve: CostCurve,
    base_tokens: int,
    emitting: int,
    offers: Sequence[Sequence[float]],
    room: int,
    explore: bool = False,
    grow: bool = False,
) -> list[int]:
    """How many tokens of each offer to check this step. `base_tokens`: tokens the batch holds
    anyway (prompt chunks, each stream's last token); `emitting`: streams that put out a token this
    step; offers: per slot, each offered token's acceptance (the chance it is kept if the ones
    before it were). Greedy by expected gain, keeping
    the prefix that gives the most expected tokens per second. `explore`: check at least the best
    token worth MIN_GAIN, so that the cost of one more token is measured again now and then (a
    size measured once on a busy moment would otherwise stay too dear forever). `grow`: check
    twice as many as seem best (of those worth MIN_GAIN): the curve knows only the sizes that were
    run, and beyond them it extrapolates its last segment, so without this a draft length chosen
    once is never measured longer (measured: a 95% scout's drafts were checked 3 tokens at a time,
    every step, because sizes above 4 had never run); and a draft that seems not to pay but whose
    first token is likely (PROBE_GAIN) is checked for one token, for the same reason (measured: a
    calibration under a load spike made C(2) look 3x C(1), and a 95% scout's 16-token drafts were
    all declined for a whole request, with `explore` only every 64 steps)."""
    gains: list[tuple[float, int]] = []
    for i, rates in enumerate(offers):
        g = 1.0
        for rate in rates:
            g *= rate
            if g < MIN_GAIN:
                break
            gains.append((g, i))
    take = [0] * len(offers)
    if not gains or emitting <= 0:
        return take
    gains.sort(key=lambda x: -x[0])
    gains = gains[:room]
    tokens = float(emitting)
    best, best_k = tokens / curve.cost(base_tokens), 0
    for k, (g, _) in enumerate(gains, 1):
        tokens += g
        v = tokens / curve.cost(base_tokens + k)
        if v > best:
            best, best_k = v, k
    if best_k == 0 and (explore or (grow and gains[0][0] >= PROBE_GAIN)):
        best_k = 1
    elif grow and best_k > 0:
        best_k = min(len(gains), 2 * best_k)
    for _, i in gains[:best_k]:
        take[i] += 1
    return take


def calibrate(
    decode: Callable[[int], None],
    sizes: tuple[int, ...] = SIZES,
    budget_s: float = 0.25,
    steps: int = CALIBRATE_STEPS,
) -> CostCurve:
    """Measure C(k) for a few batch sizes, within a time budget: `budget_s`, or `steps` one-token
    steps where that is longer (at most MAX_CALIBRATE_S), so a slow model still gets a few sizes
    (a big model on a slow CPU gets fewer points; the steps it runs fill in the rest). Sizes far
    apart come first (1, 4, 16, then the others): with two points only, a size of 1 and 2 made a
    twin of SmolLM2 extrapolate a steep curve. `decode(k)` runs one step of k tokens."""
    best: dict[int, float] = {}
    t0 = time.perf_counter()
    decode(1)  # warm-up: the first decode faults in the weights,
    first = time.perf_counter() - t0
    decode(min(2, max(sizes)))  # and the first batch starts the batch threads (slow on a busy machine)
    budget_s = max(budget_s, min(MAX_CALIBRATE_S, steps * first))
    order = sorted(sizes, key=lambda k: (k not in (1, 4, 16), k))
    start = time.perf_counter()
    for _ in range(2):  # the quicker of two runs: less noise from other processes
        for k in order:
            if time.perf_counter() - start > budget_s:
                break
            t0 = time.perf_counter()
            decode(k)
            best[k] = min(best.get(k, float("inf")), time.perf_counter() - t0)
    curve = CostCurve()
    for k, seconds in best.items():
        curve.observe(k, seconds)
    return curve
