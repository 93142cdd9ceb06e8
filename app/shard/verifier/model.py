"""A loaded GGUF model: weights, tokenizer, chat template. No generation state lives here."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import _internals
from llama_cpp.llama_chat_format import ChatFormatterResponse, Jinja2ChatFormatter

from shard.verifier import tools as tool_prompts
from shard.verifier.model_file import ModelLoadError, check_gguf_file

log = logging.getLogger("shard.verifier.model")
# llama.cpp prints every graph tensor at INFO; warnings and errors are what a person needs to see.
logging.getLogger("llama-cpp-python").setLevel(logging.WARNING)

# Used when a GGUF carries no chat template (ChatML is what most small instruct models use).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def vocab_fingerprint(vocab: Any, n_vocab: int) -> str:
    """A short id of a tokenizer: models with the same one can exchange token ids (a scout of the
    same family drafts in tokens, so nothing is lost to re-tokenizing text)."""
    h = hashlib.sha256(str(n_vocab).encode())
    buf = ctypes.create_string_buffer(256)
    for t in range(n_vocab):
        n = llama_cpp.llama_token_to_piece(vocab, t, buf, len(buf), 0, True)
        h.update(buf.raw[: max(n, 0)] + b"\x00")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class ModelOptions:
    path: str
    n_ctx: int = 4096  # per slot
    parallel: int = 4
    n_gpu_layers: int = -1
    n_threads: int = 0  # 0: one per physical core, as llama-cpp-python does
    n_batch: int = 512
    embedding_path: str = ""  # a separate GGUF for /embed; empty: the model's own embeddings


def default_threads() -> int:
    return max((os.cpu_count() or 2) // 2, 1)


class Model:
    def __init__(self, options: ModelOptions, progress: Callable[[float], None] | None = None) -> None:
        path = Path(options.path)
        check_gguf_file(path)
        self.options = options
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        self.gpu_offload = bool(llama_cpp.llama_supports_gpu_offload())
        params.n_gpu_layers = (
            (0x7FFFFFFF if options.n_gpu_layers < 0 else options.n_gpu_layers) if self.gpu_offload else 0
        )

        def on_progress(fraction: float, _user: ctypes.c_void_p) -> bool:
            if progress is not None:
                progress(float(fraction))
            return True

        self._progress_cb = llama_cpp.llama_progress_callback(on_progress)  # keep a reference
        params.progress_callback = self._progress_cb
        try:
            self.model = _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
        except ValueError as exc:
            raise ModelLoadError(f"llama.cpp could not load {path}: {exc}") from None
        self.path = path
        self.n_vocab = self.model.n_vocab()
        self.vocab_id = vocab_fingerprint(self.model.vocab, self.n_vocab)
        self.metadata: dict[str, str] = self.model.metadata()
        self.name = self.metadata.get("general.name") or path.stem
        self.bos = self.model.token_bos()
        self.eos = self.model.token_eos()
        self.add_bos = self.model.add_bos_token()
        self.recurrent = bool(
            llama_cpp.llama_model_is_recurrent(self.model.model) or llama_cpp.llama_model_is_hybrid(self.model.model)
        )
        self._pieces: dict[int, bytes] = {}
        template = self.metadata.get("tokenizer.chat_template") or FALLBACK_CHAT_TEMPLATE
        self.has_chat_template = "tokenizer.chat_template" in self.metadata
        self.tool_format = tool_prompts.template_format(template)  # "none": the template ignores tools
        # typed for llama_cpp's TypedDict messages; ours are the same dicts, checked by the API's schemas
        self._chat: Callable[..., ChatFormatterResponse] = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(self.eos),
            bos_token=self._token_text(self.bos),
        )

    def _token_text(self, token: int) -> str:
        return self.model.token_get_text(token) if 0 <= token < self.n_vocab else ""

    def tokenize(self, text: str, *, add_bos: bool | None = None, special: bool = True) -> list[int]:
        add = self.add_bos if add_bos is None else add_bos
        tokens = self.model.tokenize(text.encode("utf-8"), add, special)
        if add and len(tokens) >= 2 and tokens[0] == tokens[1] == self.bos:
            tokens = tokens[1:]  # the template already wrote the BOS text
        return tokens

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for in output (control tokens give none)."""
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self.model.vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self.model.vocab, token, buf, len(buf), 0, False)
            cached = self._pieces[token] = buf.raw[: max(n, 0)]
        return cached

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def tokenize_continuation(self, before: list[int], text: str) -> list[int]:
        """Tokens for `text` as it would be tokenized right after the tokens `before`: a drafter's
        text tokenized alone can split differently at its start (a merge across the boundary, or
        the space a SentencePiece tokenizer puts before a text). The last tokens before it are the
        anchor: tokenize anchor + text, and keep what follows the tokens that spell the anchor
        (with or without that leading space); without such an anchor, tokenize the text alone."""
        for k in (4, 2, 1):
            anchor_text = self.detokenize(before[-k:]) if len(before) >= k else ""
            if not anchor_text:  # control tokens have no text
                continue
            tokens = self.tokenize(anchor_text + text, add_bos=False, special=False)
            spelled = ""
            for j, tok in enumerate(tokens):
                spelled += self.piece(tok).decode("utf-8", "replace")
                if spelled in (anchor_text, " " + anchor_text):
                    return tokens[j + 1 :]
                if len(spelled) > len(anchor_text) + 1:
                    break  # a token spans the boundary: try a shorter anchor
        return self.tokenize(text, add_bos=False, special=False)

    def fim_prompt(self, prefix: str, suffix: str) -> list[int]:
        """Fill in the middle: <fim_pre> prefix <fim_suf> suffix <fim_mid>, with the model's own tokens."""
        vocab = self.model.vocab
        pre, suf, mid = (
            llama_cpp.llama_vocab_fim_pre(vocab),
            llama_cpp.llama_vocab_fim_suf(vocab),
            llama_cpp.llama_vocab_fim_mid(vocab),
        )
        if min(pre, suf, mid) < 0:
            raise ValueError("'suffix' needs a model with fill-in-the-middle tokens; this one has none")
        head = [self.bos] if self.add_bos and self.bos >= 0 else []
        return (
            head
            + [pre]
            + self.tokenize(prefix, add_bos=False, special=False)
            + [suf]
            + self.tokenize(suffix, add_bos=False, special=False)
            + [mid]
        )

    def valid_token(self, token: int) -> bool:
        return 0 <= token < self.n_vocab

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.model.vocab, token))

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt for a chat; with tools, the template's own tool prompt, or a Hermes system
        block when the template ignores tools. Tool calls in the history are written either way."""
        try:
            if self.tool_format == "none":
                if tools or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
                    messages = tool_prompts.hermes_messages(messages, tools)
                return self._chat(messages=messages).prompt
            return self._chat(messages=tool_prompts.native_messages(messages), tools=tools or None).prompt
        except Exception as exc:  # a template that raises on these messages (e.g. roles out of order)
            raise ValueError(f"the model's chat template rejected the messages: {exc}") from None

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "size_bytes": self.path.stat().st_size,
            "n_params": self.model.n_params(),
            "n_vocab": self.n_vocab,
            "vocab": self.vocab_id,
            "n_ctx_train": self.model.n_ctx_train(),
            "n_ctx": self.options.n_ctx,
            "parallel": self.options.parallel,
            "gpu_offload": self.gpu_offload,
            "n_gpu_layers": self.options.n_gpu_layers if self.gpu_offload else 0,
            "chat_template": self.has_chat_template,
            "drafts_supported": not self.recurrent,
            "bos": self.bos,
            "eos": self.eos,
            "description": self.model.desc(),
        }

    def close(self) -> None:
        self.model.close()
