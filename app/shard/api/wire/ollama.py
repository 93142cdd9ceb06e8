"""Ollama's API (`/api/*`, api/ollama_routes.py and api/embeddings_routes.py): what its clients
send and what the node answers (loose where the answer echoes what was sent)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from shard.api.wire.openai import Answer, Dimensions, EmbeddingInput, Strict, Tool


class OllamaError(Answer):
    error: str


class OllamaMessage(Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_name: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)


class OllamaChatRequest(Strict):
    model: str
    messages: list[OllamaMessage] = Field(min_length=1)
    stream: bool = True
    format: Literal["json"] | dict[str, Any] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    tools: list[Tool] = Field(default_factory=list)
    keep_alive: Any = None


class OllamaShowRequest(Strict):
    model: str


class OllamaGenerateRequest(Strict):
    model: str
    prompt: str = ""
    system: str = ""
    suffix: str = ""
    raw: bool = False
    stream: bool = True
    format: Any = None
    options: dict[str, Any] = Field(default_factory=dict)
    keep_alive: Any = None


class OllamaAnswer(Answer):
    model: str
    created_at: str
    done: bool
    done_reason: str | None = None
    message: dict[str, Any] | None = None
    response: str | None = None
    eval_count: int | None = None
    prompt_eval_count: int | None = None
    total_duration: int | None = None


class OllamaModel(Answer):
    name: str
    model: str
    size: int
    digest: str
    modified_at: str | None = None
    details: dict[str, Any]


class OllamaModels(Answer):
    models: list[OllamaModel]


class OllamaShow(Answer):
    details: dict[str, Any]
    capabilities: list[str]
    model_info: dict[str, Any] | None = None
    modelfile: str | None = None


class OllamaEmbedRequest(Strict):
    model: str
    input: EmbeddingInput
    truncate: bool = True
    dimensions: Dimensions | None = None


class OllamaEmbed(Answer):
    model: str
    embeddings: list[list[float]]
