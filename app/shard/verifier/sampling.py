"""Choosing a token from one row of logits, in llama.cpp's order:
penalties, grammar, top-k, top-p, min-p, temperature, then a draw.

The draw at position `pos` uses a generator seeded by (seed, pos). So the token chosen at a
position depends only on the logits there and the seed, not on how many draws came before:
with the same seed a request gives the same text whether drafts were offered or not, and a
draft is always judged as a fixed guess (sample from the target, accept if equal).
"""

from __future__ import annotations

import ctypes
import os
from collections import Counter

import llama_cpp
import numpy as np
from llama_cpp import _internals
from llama_cpp.llama_grammar import LlamaGrammar

from shard.verifier.protocol import Sampling


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

    def choose(self, logits: np.ndarray, pos: int) -> int:
        p = self.params
        x = logits
        if (p.presence_penalty or p.frequency_penalty) and self.counts:
            x = x.copy()
            ids = np.fromiter(self.counts.keys(), dtype=np.int64)
            n = np.fromiter(self.counts.values(), dtype=np.float32)
            x[ids] -= p.presence_penalty + p.frequency_penalty * n
        if self.grammar is not None:
            x = self.grammar.apply(x)
        if p.temperature <= 0.0:
            return int(np.argmax(x))
        n_vocab = x.shape[0]
        k = p.top_k if 0 < p.top_k < n_vocab else n_vocab
        idx = np.argpartition(x, n_vocab - k)[n_vocab - k :] if k < n_vocab else np.arange(n_vocab)
        vals = x[idx].astype(np.float64)
        order = np.argsort(-vals, kind="stable")
        idx, vals = idx[order], vals[order]
        finite = np.isfinite(vals)
        idx, vals = idx[finite], vals[finite]
        probs = np.exp(vals - vals[0])
        probs /= probs.sum()
        keep = len(probs)
        if p.top_p < 1.0:
            keep = min(keep, int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1)
        if p.min_p > 0.0:
            keep = min(keep, max(1, int(np.count_nonzero(probs >= p.min_p * probs[0]))))
        idx, vals = idx[:keep], vals[:keep]
        scaled = np.exp((vals - vals[0]) / p.temperature)
        scaled /= scaled.sum()
        rng = np.random.default_rng((self.seed, pos))
        return int(idx[rng.choice(len(idx), p=scaled)])

    def accept(self, token: int) -> None:
        """Record a token that became part of the output."""
        if self.params.presence_penalty or self.params.frequency_penalty:
            self.counts[token] += 1
        if self.grammar is not None:
            self.grammar.accept(token)

    def close(self) -> None:
        if self.grammar is not None:
            self.grammar.close()
