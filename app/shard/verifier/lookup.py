"""Prompt-lookup drafting (as llama.cpp's ngram drafters): if the last n tokens appeared before,
guess that what followed them then follows them now. Free to compute, and strong on edit-style
work (rewrite, fix, summarize with quotes), where the answer repeats the prompt.

The draft length adapts to what was accepted: checking k drafts costs several single steps on a
CPU, so a drafter that keeps missing offers less, down to nothing worth checking. After a draft
that got nothing accepted it also stays silent for a while (1, 2, 4 ... up to 64 steps), so on
text that does not repeat its cost is a few percent at most, and one hit brings it back at once.
"""

from __future__ import annotations


MAX_QUIET = 64


class PromptLookup:
    def __init__(self, ngram_max: int = 3, ngram_min: int = 2, max_len: int = 16) -> None:
        self.ngram_max = ngram_max
        self.ngram_min = ngram_min
        self.max_len = max_len
        self.limit = 4
        self.quiet = 0  # steps to stay silent after a miss
        self._backoff = 1
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
        if self.quiet > 0:
            self.quiet -= 1
            return []
        limit = min(limit, self.limit)
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
        if accepted == 0:
            self.quiet, self._backoff = self._backoff, min(self._backoff * 2, MAX_QUIET)
        else:
            self._backoff = 1
        if accepted == proposed:
            self.limit = min(self.limit * 2, self.max_len)
        else:
            self.limit = max(1, accepted + 1)
