"""Cost curves for tests of the drafting policy (shard.verifier.policy)."""

from __future__ import annotations

from shard.verifier.policy import CostCurve

# The verify-cost curve measured on the development machine's 2-core CPU (STACK-NOTES), seconds.
CPU = {1: 0.0096, 2: 0.018, 4: 0.026, 8: 0.041, 16: 0.073}


def curve(points: dict[int, float]) -> CostCurve:
    c = CostCurve()
    for n, s in points.items():
        c.observe(n, s)
    return c


class FreeChecks(CostCurve):
    """Draft tokens cost nothing: the policy checks what it is offered (for tests about what
    checking does, not about whether it pays), whatever this busy machine measures."""

    def observe(self, n: int, seconds: float) -> None:
        pass

    def cost(self, n: int) -> float:
        return 1.0
