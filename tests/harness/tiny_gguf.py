"""A tiny random-weight llama GGUF, written with the `gguf` package in well under a second.

Real llama.cpp runs it: tokenizer (SentencePiece-style with byte fallback, so any UTF-8 text
tokenizes), a ChatML chat template, and `<|im_end|>` as end of generation. Its weights are random
but fixed by the seed, so greedy output is deterministic and varied (not one token repeated).
The vocabulary is small (~400 tokens), which keeps statistical tests over it cheap.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
UNK, BOS, EOS_TEXT, IM_START, IM_END = range(5)
WORDS = (
    "the of and to in is was for on that with as it by at be this are from or an "
    "once upon time there a b c hello world story quick brown fox jumps over lazy dog cat sat mat"
).split()


def _vocab() -> tuple[list[str], list[float], list[int]]:
    T = gguf.TokenType
    tokens = list(SPECIALS)
    types = [T.UNKNOWN, T.CONTROL, T.CONTROL, T.CONTROL, T.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [T.BYTE] * 256
    pieces: list[str] = ["▁"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + list(".,!?'\n")
    for w in WORDS:  # every prefix, so SentencePiece's pairwise merges can reach the whole word
        pieces += ["▁" + w[:k] for k in range(1, len(w) + 1)]
    seen: set[str] = set()
    normal = [p for p in pieces if not (p in seen or seen.add(p))]
    tokens += normal
    types += [T.NORMAL] * len(normal)
    scores = [0.0] * (len(SPECIALS) + 256) + [float(len(p)) for p in normal]  # longer pieces merge first
    return tokens, scores, [int(t) for t in types]


def write_tiny_gguf(
    path: Path,
    *,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_ff: int = 128,
    n_ctx_train: int = 8192,
    idle_layers: int = 0,
    fim: bool = False,
) -> Path:
    """`idle_layers` appends layers whose outputs are zero: the model computes the same logits as
    without them, only slower. The pair (fast, slow) is a drafter that agrees with its target
    exactly, and a target slow enough for network drafts to arrive in time, as a big model is."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def rand(*shape: int, std: float) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("shard-tiny")
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer + idle_layers)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(IM_END)
    w.add_unk_token_id(UNK)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHATML)
    if fim:  # fill-in-the-middle markers (control tokens it already has stand in for them)
        for kind, token in (("pre", IM_START), ("suf", EOS_TEXT), ("mid", UNK)):
            w.add_uint32(f"tokenizer.ggml.fim_{kind}_token_id", token)

    # numpy shapes are ggml's ne reversed: token_embd ne={n_embd, n_vocab} is (n_vocab, n_embd).
    w.add_tensor("token_embd.weight", rand(n_vocab, n_embd, std=1.0))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    output = rand(n_vocab, n_embd, std=0.4)  # logits spread ~3: varied, not flat
    output[: len(SPECIALS)] = 0.0  # specials (end of generation too) score 0: greedy runs go to max_tokens
    w.add_tensor("output.weight", output)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{name}.weight", rand(n_embd, n_embd, std=0.15))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rand(n_ff, n_embd, std=0.15))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rand(n_ff, n_embd, std=0.15))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rand(n_embd, n_ff, std=0.15))
    for i in range(n_layer, n_layer + idle_layers):  # residual + 0: they change nothing
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v"):
            w.add_tensor(f"blk.{i}.{name}.weight", rand(n_embd, n_embd, std=0.15))
        w.add_tensor(f"blk.{i}.attn_output.weight", np.zeros((n_embd, n_embd), dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rand(n_ff, n_embd, std=0.15))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rand(n_ff, n_embd, std=0.15))
        w.add_tensor(f"blk.{i}.ffn_down.weight", np.zeros((n_embd, n_ff), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
