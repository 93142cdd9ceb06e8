"""Slower twins of a real GGUF (SmolLM2), for benchmarks of a big Oracle with a small drafter.

`write_twin(src, dst, idle_layers, noise)` copies every tensor and metadata key of `src`, raises the
block count, and appends `idle_layers` copies of its layers (cycling through them). With `noise` 0
the copies' output projections (`attn_output`, `ffn_down`) are zero, so each copy adds nothing to
the residual stream: the twin computes the same logits as `src`, only slower (an exact drafter pair).
With `noise` > 0 they are the original projections scaled by `noise`: each copy nudges the residual
stream a little, and the twin's greedy text drifts from `src`'s (acceptance below 100%, as with a
real small-drafts-for-large pair). Quantized Q4_0/Q4_1/Q8_0 blocks are scaled through their f16
block scales (and Q4_1's minimums), F32/F16 tensors directly.

    .venv/bin/python bench/twin_gguf.py SRC DST --idle 60 [--noise 0.05]
    .venv/bin/python bench/twin_gguf.py SRC DST --idle 0 --scramble     # an all-wrong drafter
    .venv/bin/python bench/twin_gguf.py SRC DST --quant Q8_0            # SRC in another type, no twin
    .venv/bin/python bench/twin_gguf.py SRC DST --idle 482 --idle-type BF16   # idle layers that cost more

`idle_type` stores the idle layers' matrices in another type (their norms copied): zeros for an exact
twin (the logits unchanged), the source's values for a noisy one; a layer's cost per token, and what
checking a batch of tokens costs, follow its type (F32: one thread streams its weights from memory,
as a big Oracle does, and 8 tokens cost about 2 single steps where Q8_0 layers cost about 3; see
bench/README.md).
llama.cpp's llama architecture reads one FFN width for all layers (`hparams.n_ff()`, not the per-layer
array), so a layer cannot be made wider; past 512 layers only the type makes a twin slower. Measured
on this CPU (1 thread, SmolLM2 Q8_0 twins): an idle BF16 layer costs ~1.7-2x a Q8_0 one (7 MB; 482
of them, 3.6 GB, made a twin 22x slower than SmolLM2 in bench/coop_tab.py), F32 about the same at twice the size;
batches of 8 tokens cost ~2.2 single steps in BF16 (tiled kernels, like Q8_0's), where MXFP4 costs
4.6 (and Q2_0, NVFP4 fall back to scalar code on x86): those would overstate verification.

`requantize(src, dst, "Q8_0")` rewrites a model in another llama.cpp type first (llama.cpp's own
quantizer): on x86 and ARM CPUs, ggml multiplies Q8_0 and Q4_0 weights by a batch of tokens with
tiled kernels (llamafile's tinyBLAS, repacked Q4_0), where Q4_1 gets one dot product per row and
token, so checking k draft tokens costs nearly k single steps. Real Oracles' types (Q4_K, Q8_0,
Q4_0) have such kernels: twins made from a Q4_1 file overstate what verification costs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS: SmolLM2's "8x" twin (541 layers) made the verifier abort
OUTPUTS = re.compile(r"^blk\.(\d+)\.(attn_output|ffn_down)\.weight$")
LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")
# bytes per block, and how many leading f16 values of each block are scales (multiply them to scale it)
BLOCKS = {"Q4_0": (18, 1), "Q4_1": (20, 2), "Q8_0": (34, 1)}


def _scaled(data: np.ndarray, type_name: str, factor: float) -> np.ndarray:
    raw = np.array(data, copy=True)
    if factor == 0.0:
        return np.zeros_like(raw)  # all-zero bytes are zero weights in every format used here
    if type_name == "F32" or type_name == "F16":
        return (raw * factor).astype(raw.dtype)
    if type_name not in BLOCKS:
        raise ValueError(f"cannot scale a {type_name} tensor: use --noise 0 or a Q4_0/Q4_1/Q8_0/F16 model")
    size, n_scales = BLOCKS[type_name]
    flat = raw.reshape(-1).view(np.uint8).reshape(-1, size)
    scales = flat[:, : 2 * n_scales].copy().view(np.float16)
    flat[:, : 2 * n_scales] = (scales.astype(np.float32) * factor).astype(np.float16).view(np.uint8)
    return raw


def _zeros(data: np.ndarray, type_name: str, idle_type: str) -> tuple[np.ndarray, object]:
    """A zero matrix of `data`'s shape (as `type_name`) stored as `idle_type`, and that type."""
    import gguf

    src_type, dst_type = gguf.GGMLQuantizationType[type_name], gguf.GGMLQuantizationType[idle_type]
    shape = gguf.quant_shape_from_byte_shape(data.shape, src_type) if data.dtype == np.uint8 else data.shape
    block, size = gguf.GGML_QUANT_SIZES[dst_type]
    if shape[-1] % block:
        raise ValueError(f"rows of {shape[-1]} values do not fit {idle_type} blocks of {block}")
    # all-zero bytes are zero weights in every type used here (floats, or zero block scales)
    return np.zeros((*shape[:-1], shape[-1] // block * size), np.uint8), dst_type


def _converted(data: np.ndarray, type_name: str, idle_type: str, factor: float) -> tuple[np.ndarray, object]:
    """`data` (a matrix stored as `type_name`) times `factor`, stored as `idle_type`, and that type."""
    import gguf

    values = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name]) * np.float32(factor)
    dst_type = gguf.GGMLQuantizationType[idle_type]
    if idle_type == "F32":
        return values.astype(np.float32), dst_type
    return gguf.quants.quantize(values.astype(np.float32), dst_type), dst_type


def write_twin(
    src: Path, dst: Path, idle_layers: int, noise: float = 0.0, scramble: bool = False, idle_type: str = ""
) -> Path:
    """`scramble`: shuffle the rows of the token embeddings (tied to the output layer): the same
    tokenizer (and vocabulary fingerprint), a model whose every guess is wrong (an all-wrong scout).
    `idle_type` (e.g. F32, BF16; "" copies the source layers): the idle layers' matrices are stored
    in that type (zeros for an exact twin; for a noisy one, the source's values), so each idle layer
    costs more (or less) per token than a copied one, and checking a batch of tokens costs what that
    type's kernels make it cost."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = str(reader.fields["general.architecture"].contents())
    block_key = f"{arch}.block_count"
    n_layer = int(reader.fields[block_key].contents())
    if n_layer + idle_layers > MAX_LAYERS:  # llama.cpp aborts loading a model with more layers
        idle_layers = MAX_LAYERS - n_layer
        print(f"twin_gguf: {dst.name} capped at {MAX_LAYERS} layers ({idle_layers} idle)", file=sys.stderr)
    writer = gguf.GGUFWriter(str(dst), arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        value = n_layer + idle_layers if field.name == block_key else field.contents()
        writer.add_key_value(field.name, value, val_type, sub_type=sub_type)
    tensors: list[tuple[str, np.ndarray, object]] = [(t.name, t.data, t.tensor_type) for t in reader.tensors]
    if scramble:
        rng = np.random.default_rng(7)
        tensors = [
            (n, d[rng.permutation(d.shape[0])] if n in ("token_embd.weight", "output.weight") else d, t)
            for n, d, t in tensors
        ]
    layer_tensors: dict[int, list[tuple[str, np.ndarray, object]]] = {}
    for name, data, ttype in tensors:
        m = LAYER.match(name)
        if m:
            layer_tensors.setdefault(int(m.group(1)), []).append((m.group(2), data, ttype))
    # One zero matrix per shape (an exact twin's GBs of layers), one converted copy per source matrix.
    stored: dict[tuple[object, ...], tuple[np.ndarray, object]] = {}
    for i in range(idle_layers):
        source = layer_tensors[i % n_layer]
        for suffix, data, ttype in source:
            name = f"blk.{n_layer + i}.{suffix}"
            if idle_type and data.ndim == 2:  # a matrix (the norms are vectors: copied)
                factor = noise if OUTPUTS.match(name) else 1.0
                key: tuple[object, ...] = (suffix, data.shape) if not noise else (i % n_layer, suffix)
                if key not in stored:
                    stored[key] = (
                        _converted(data, ttype.name, idle_type, factor)  # type: ignore[attr-defined]
                        if noise
                        else _zeros(data, ttype.name, idle_type)  # type: ignore[attr-defined]
                    )
                data, ttype = stored[key]
            elif OUTPUTS.match(name):
                data = _scaled(data, ttype.name, noise)  # type: ignore[attr-defined]
            tensors.append((name, data, ttype))
    for name, data, ttype in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, ttype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in tensors:
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()
    return dst


def requantize(src: Path, dst: Path, type_name: str) -> Path:
    """`src` rewritten as `type_name` (e.g. Q8_0: nearly lossless from Q4_1), by llama.cpp."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type_name}")
    params.allow_requantize = True
    params.nthread = 1
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not rewrite {src} as {type_name}")
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--idle", type=int, default=60)
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--idle-type", default="", help="idle layers' matrices in this type (F32, BF16, ...)")
    ap.add_argument("--scramble", action="store_true", help="an all-wrong drafter with the same tokenizer")
    ap.add_argument("--quant", default="", help="only rewrite SRC as this type (Q8_0, Q4_0) into DST")
    args = ap.parse_args()
    if args.quant:
        requantize(args.src, args.dst, args.quant)
        return
    write_twin(args.src, args.dst, args.idle, args.noise, args.scramble, args.idle_type)


if __name__ == "__main__":
    main()
