"""Prompt-lookup drafting (as llama.cpp's ngram drafters): if the last n tokens appeared before,
guess that what followed them then follows them now. Free to compute, and strong on edit-style
work (rewrite, fix, summarize with quotes), where the answer repeats the prompt.

It proposes as much as it can find, every step: how much of that is worth checking is the
engine's call (policy.py), from this source's measured acceptance and the cost of the batch.
"""

from __future__ import annotations


class PromptLookup:
    def __init__(self, ngram_max: int = 3, ngram_min: int = 2) -> None:
        self.ngram_max = ngram_max
        self.ngram_min = ngram_min
        self._index: list[dict[tuple[int, ...], int]] = [{} for _ in range(ngram_max + 1)]
        self._indexed = 0  # tokens[:_indexed] are in the index

    def _update(self, tokens: list[int]) -> None:
        # An n-gram ending at e (exclusive) is indexed once a token follows it; later ones win.
        for e in range(max(self._indexed, 1), len(tokens)):
            for n in range(self.ngram_min, self.ngram_max + 1):
                if e >= n:
                    self._index[n][tuple(tokens[e - n : e])] = e
        self._indexed = len(tokens)

    def propose(self, tokens: list[int], limit: int) -> list[int]:
        self._update(tokens)
        if limit <= 0:
            return []
        for n in range(self.ngram_max, self.ngram_min - 1, -1):
            if len(tokens) < n:
                continue
            cont = self._index[n].get(tuple(tokens[-n:]))
            if cont is not None:
                return tokens[cont : cont + limit]
        return []

    def feedback(self, proposed: int, accepted: int) -> None:
        """Nothing to adapt here: the engine scores every proposal, checked or not."""
