"""Embeddings: a second llama.cpp context with embeddings on, over the served model's weights (or a
separate embedding GGUF), made on first use so that nodes that never embed pay no memory for it.

Pooling is the GGUF's own (`<arch>.pooling_type`: mean, CLS, last); a model without one (a
generative model) is mean-pooled here. Vectors come back L2-normalized, as OpenAI's do.
"""

from __future__ import annotations

import ctypes
import threading

import llama_cpp
import numpy as np
from llama_cpp import _internals

MAX_INPUTS = 2048


class EmbedError(ValueError):
    """An input the model cannot embed (too long, empty); the text says why."""


class Embedder:
    def __init__(self, model: _internals.LlamaModel, n_ctx: int, n_threads: int) -> None:
        params = llama_cpp.llama_context_default_params()
        params.embeddings = True
        params.n_ctx = n_ctx
        params.n_batch = n_ctx  # a non-causal model needs the whole input in one micro-batch
        params.n_ubatch = n_ctx
        params.n_seq_max = 1
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED  # the GGUF's
        params.no_perf = True
        self.model = model
        self.n_ctx = n_ctx
        self.ctx = _internals.LlamaContext(model=model, params=params, verbose=False)
        self.pooling = llama_cpp.llama_pooling_type(self.ctx.ctx)
        self.n_embd = llama_cpp.llama_model_n_embd(model.model)
        self.encoder = bool(llama_cpp.llama_model_has_encoder(model.model))
        self.batch = _internals.LlamaBatch(n_tokens=n_ctx, embd=0, n_seq_max=1, verbose=False)
        self._lock = threading.Lock()

    def embed(self, tokens: list[int]) -> np.ndarray:
        if not tokens:
            raise EmbedError("an input is empty")
        if len(tokens) > self.n_ctx:
            raise EmbedError(f"an input is {len(tokens)} tokens; the embedding context holds {self.n_ctx}")
        with self._lock:
            mem = llama_cpp.llama_get_memory(self.ctx.ctx)
            if mem:
                llama_cpp.llama_memory_clear(mem, True)
            b = self.batch.batch
            for i, tok in enumerate(tokens):
                b.token[i], b.pos[i], b.n_seq_id[i] = tok, i, 1
                b.seq_id[i][0] = 0
                b.logits[i] = True  # every row's embedding (mean pooling here needs them all)
            b.n_tokens = len(tokens)
            rc = (llama_cpp.llama_encode if self.encoder else llama_cpp.llama_decode)(self.ctx.ctx, b)
            if rc != 0:
                raise EmbedError(f"llama.cpp could not embed the input (code {rc})")
            if self.pooling == llama_cpp.LLAMA_POOLING_TYPE_NONE:
                rows = [
                    np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_ith(self.ctx.ctx, i), shape=(self.n_embd,))
                    for i in range(len(tokens))
                ]
                vec = np.mean(np.stack(rows), axis=0)
            else:
                ptr = llama_cpp.llama_get_embeddings_seq(self.ctx.ctx, 0)
                if not ptr:
                    raise EmbedError("the model gave no pooled embedding")
                vec = np.ctypeslib.as_array(
                    ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_embd,)
                ).copy()
        norm = float(np.linalg.norm(vec))
        return (vec / norm if norm > 0 else vec).astype(np.float32)

    def close(self) -> None:
        self.ctx.close()
