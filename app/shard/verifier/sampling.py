"""Choosing a token from one row of logits, in llama.cpp's order:
penalties, grammar, top-k, top-p, min-p, temperature, then a draw.

The draw at position `pos` uses a generator seeded by (seed, pos). So the token chosen at a
position depends only on the logits there and the seed, not on how many draws came before:
with the same seed a request gives the same text whether drafts were offered or not, and a
draft is always judged as a fixed guess (sample from the target, accept if equal).
"""

from __future__ import annotations

import ctypes
import math
import os
from collections import Counter

import llama_cpp
import numpy as np
from llama_cpp import _internals
from llama_cpp.llama_grammar import LlamaGrammar

from shard.verifier.protocol import Sampling

# Slack when checking another machine's choices (admissible): the same model computes a row a
# little differently with other batch shapes, kernels or hardware (SmolLM2 Q4_1 on one CPU: logits
# 0.3 apart between a one-token step and a 64-token batch, enough to swap a near-tie argmax).
LOGIT_SLACK = 1.0
# Top-p's edge moves most: a slightly different row moves the whole cumulative sum (an honest
# token at rank 5, 1.25 logits under the 4th, was inside top_p 0.95 where it was sampled, not here).
TOP_P_TAIL = 5.0


def _kept(x: np.ndarray, top_k: int, top_p: float, min_p: float) -> tuple[np.ndarray, np.ndarray]:
    """The ids the top-k, top-p and min-p filters keep from the row `x`, likeliest first, and their logits."""
    n_vocab = x.shape[0]
    k = top_k if 0 < top_k < n_vocab else n_vocab
    idx = np.argpartition(x, n_vocab - k)[n_vocab - k :] if k < n_vocab else np.arange(n_vocab)
    vals = x[idx].astype(np.float64)
    order = np.argsort(-vals, kind="stable")
    idx, vals = idx[order], vals[order]
    finite = np.isfinite(vals)
    idx, vals = idx[finite], vals[finite]
    probs = np.exp(vals - vals[0])
    probs /= probs.sum()
    keep = len(probs)
    if top_p < 1.0:
        keep = min(keep, int(np.searchsorted(np.cumsum(probs), top_p)) + 1)
    if min_p > 0.0:
        keep = min(keep, max(1, int(np.count_nonzero(probs >= min_p * probs[0]))))
    return idx[:keep], vals[:keep]


class GrammarMask:
    """llama.cpp's grammar sampler over a full row of logits (it sets disallowed tokens to -inf)."""

    def __init__(self, model: _internals.LlamaModel, gbnf: str) -> None:
        grammar = LlamaGrammar.from_string(gbnf, verbose=False)
        self._sampler = llama_cpp.llama_sampler_init_grammar(
            model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        if not self._sampler:
            raise ValueError("the grammar could not be compiled")
        self._array = _internals.LlamaTokenDataArray(n_vocab=model.n_vocab())

    def apply(self, logits: np.ndarray) -> np.ndarray:
        self._array.copy_logits(logits)
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(self._array.candidates))
        return np.asarray(self._array.candidates_data.logit, dtype=np.float32).copy()

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self._sampler, token)

    def close(self) -> None:
        if self._sampler:
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None


class TokenChooser:
    """Per-request sampling state: penalty counts, grammar, seed."""

    def __init__(self, params: Sampling, grammar: GrammarMask | None = None) -> None:
        self.params = params
        self.grammar = grammar
        self.seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little")
        self.counts: Counter[int] = Counter()

    def _logits(self, logits: np.ndarray) -> np.ndarray:
        """The row after penalties and grammar: what the filters and the draw see."""
        p = self.params
        x = logits
        if (p.presence_penalty or p.frequency_penalty) and self.counts:
            x = x.copy()
            ids = np.fromiter(self.counts.keys(), dtype=np.int64)
            n = np.fromiter(self.counts.values(), dtype=np.float32)
            x[ids] -= p.presence_penalty + p.frequency_penalty * n
        if self.grammar is not None:
            x = self.grammar.apply(x)
        return x

    def choose(self, logits: np.ndarray, pos: int) -> int:
        p = self.params
        x = self._logits(logits)
        if p.temperature <= 0.0:
            return int(np.argmax(x))
        idx, vals = _kept(x, p.top_k, p.top_p, p.min_p)
        scaled = np.exp((vals - vals[0]) / p.temperature)
        scaled /= scaled.sum()
        rng = np.random.default_rng((self.seed, pos))
        return int(idx[rng.choice(len(idx), p=scaled)])

    def admissible(self, logits: np.ndarray) -> np.ndarray:
        """The tokens an honest sampler could have chosen from this row, likeliest first. Another
        machine computes the row a little differently, so each filter's edge gets slack: greedy,
        the argmax and any within LOGIT_SLACK of it; sampled, what top-k, top-p (its cut tail
        TOP_P_TAIL times thinner) and min-p (LOGIT_SLACK lower) keep, and any within LOGIT_SLACK of
        the least likely of those. Used to check a peer's text, never to choose."""
        p = self.params
        x = self._logits(logits)
        if p.temperature <= 0.0:
            floor = float(np.max(x))
        else:
            top_p = 1.0 - (1.0 - p.top_p) / TOP_P_TAIL if p.top_p < 1.0 else 1.0
            floor = float(_kept(x, p.top_k, top_p, p.min_p * math.exp(-LOGIT_SLACK))[1][-1])
        near = np.flatnonzero(x >= floor - LOGIT_SLACK)
        return near[np.argsort(-x[near], kind="stable")]

    def accept(self, token: int) -> None:
        """Record a token that became part of the output."""
        if self.params.presence_penalty or self.params.frequency_penalty:
            self.counts[token] += 1
        if self.grammar is not None:
            self.grammar.accept(token)

    def close(self) -> None:
        if self.grammar is not None:
            self.grammar.close()
