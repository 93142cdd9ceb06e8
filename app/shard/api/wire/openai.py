"""The OpenAI API's shapes as pydantic models: the one description of what the node accepts and answers.

Requests are validated with these models (`api/schemas.py` turns them into the verifier's
GenerateRequest); the OpenAPI document (`api/openapi.py`) is generated from them; the tests check
real answers against the response models. The sampling ranges come from the verifier's protocol
(`SamplingParams`), so the API, the verifier and peers' requests share one set of limits.

Strict: a string is not a number and a number is not a boolean. Lenient where OpenAI's clients send
fields that do not change the answer (user, metadata, store): extra fields are allowed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shard.verifier.protocol import (
    MAX_EMBED_INPUTS,
    MAX_TOKENS_PER_REQUEST,
    MAX_TOOLS,
    TOOL_NAME,
    SamplingParams,
)

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
UNSUPPORTED = {
    "logit_bias": "logit_bias is not supported",
}
MAX_N = 16  # choices per request (each takes a slot, side by side)
MAX_STOP = 4

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
TokenBudget = Annotated[int, Field(ge=1, le=MAX_TOKENS_PER_REQUEST)]
TopLogprobs = Annotated[int, Field(ge=0, le=20)]
FinishReason = Literal["stop", "length", "tool_calls"] | None
Dimensions = Annotated[int, Field(ge=1)]


class Strict(BaseModel):
    """A request part: strict types, unknown fields allowed (and ignored)."""

    model_config = ConfigDict(strict=True, extra="allow")


class Answer(BaseModel):
    """A response part: what the node sends; extra fields allowed so a newer node still validates."""

    model_config = ConfigDict(extra="allow")


# -- requests: chat and text completions ---------------------------------------------------------


class StreamOptions(Strict):
    include_usage: bool | None = None


class TextFormat(Strict):
    type: Literal["text"]


class JsonObjectFormat(Strict):
    type: Literal["json_object"]


class JsonSchemaSpec(Strict):
    name: str | None = None
    schema_: dict[str, Any] = Field(alias="schema", description="a JSON Schema, compiled into a grammar")
    strict: bool | None = None


class JsonSchemaFormat(Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class GenerationRequest(SamplingParams):
    """The fields chat and text completions share."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: str = Field("", description="the served id, its file name, '' or 'default'; else 404 model_not_found")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N, description="choices, generated side by side")] | None = None
    max_tokens: TokenBudget | None = None
    max_completion_tokens: TokenBudget | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = Field(
        None, description="never sent, even split across tokens"
    )
    response_format: ResponseFormat | None = None
    user: Any = Field(None, json_schema_extra={"type": "string"})
    logit_bias: Any = Field(None, description="refused: logit_bias is not supported (400 unsupported_parameter)")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class FunctionCall(Strict):
    name: str
    arguments: str = ""


class ToolCall(Strict):
    id: Any = Field(None, json_schema_extra={"type": "string"})
    type: Any = Field("function", json_schema_extra={"const": "function"})
    function: FunctionCall


class ChatMessage(Strict):
    role: Role = Field(description="'developer' is treated as 'system', 'function' as 'tool'")
    content: str | list[TextPart] | None = None
    name: Any = Field(None, json_schema_extra={"type": "string"})
    tool_call_id: Any = Field(None, json_schema_extra={"type": "string"})
    tool_calls: list[ToolCall] | None = None
    function_call: Any = Field(None, description="legacy: one tool call")


class FunctionDef(Strict):
    name: Annotated[str, Field(pattern=TOOL_NAME.pattern)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class ChatCompletionRequest(GenerationRequest):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = Field(
        None, description="'required' or a named function: the answer is a call, constrained by a grammar"
    )
    parallel_tool_calls: bool = True
    functions: list[FunctionDef] | None = Field(None, description="legacy: mapped onto tools")
    function_call: Literal["auto", "none"] | NamedFunction | None = Field(
        None, description="legacy: mapped onto tool_choice"
    )
    logprobs: bool | None = None
    top_logprobs: TopLogprobs | None = Field(None, description="needs logprobs: true")


class CompletionRequest(GenerationRequest):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] = Field(description="one prompt per request")
    suffix: str | None = Field(None, description="fill in the middle, with the model's FIM tokens")
    echo: Any = Field(None, description="refused when true (400 unsupported_parameter)")
    best_of: Any = Field(None, description="only 1 or n (else 400 unsupported_parameter)")
    logprobs: TopLogprobs | None = Field(None, description="alternatives per token (the legacy shape)")


EmbeddingInput = (
    str
    | Annotated[list[str], Field(min_length=1, max_length=MAX_EMBED_INPUTS)]
    | Annotated[list[int], Field(min_length=1)]
    | Annotated[list[list[int]], Field(min_length=1)]
)


class EmbeddingRequest(Strict):
    input: EmbeddingInput
    model: str = ""
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Dimensions | None = None
    user: Any = Field(None, json_schema_extra={"type": "string"})


# -- answers -------------------------------------------------------------------------------------


class ErrorDetail(Answer):
    message: str
    type: str
    code: str | None
    param: str | None


class Error(Answer):
    error: ErrorDetail


class PromptTokensDetails(Answer):
    cached_tokens: int | None = None


class Usage(Answer):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class TopLogprob(Answer):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] | None = None


class ChatLogprobs(Answer):
    content: list[TokenLogprob] | None = None


class FunctionCallOut(Answer):
    name: str | None = None
    arguments: str | None = None


class ToolCallOut(Answer):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class ToolCallDelta(Answer):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallOut | None = None


class AssistantMessage(Answer):
    role: Literal["assistant"]
    content: str | None
    refusal: None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(Answer):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: ChatLogprobs | None = None


class Delta(Answer):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(Answer):
    index: int
    delta: Delta
    finish_reason: FinishReason
    logprobs: ChatLogprobs | None = None


class TextLogprobs(Answer):
    tokens: list[str] | None = None
    token_logprobs: list[float | None] | None = None
    top_logprobs: list[Any] | None = None
    text_offset: list[int] | None = None


class TextChoice(Answer):
    index: int
    text: str
    finish_reason: FinishReason
    logprobs: TextLogprobs | None = None


class Envelope(Answer):
    id: str
    created: int
    model: str
    system_fingerprint: str | None = None
    usage: Usage | None = None


class ChatCompletion(Envelope):
    object: Literal["chat.completion"]
    choices: list[ChatChoice]


class ChatCompletionChunk(Envelope):
    object: Literal["chat.completion.chunk"]
    choices: list[ChunkChoice]


class TextCompletion(Envelope):
    object: Literal["text_completion"]
    choices: list[TextChoice]


class Model(Answer):
    id: str
    object: Literal["model"]
    created: int
    owned_by: Literal["shard"]


class ModelList(Answer):
    object: Literal["list"]
    data: list[Model]


class Embedding(Answer):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingUsage(Answer):
    prompt_tokens: int
    total_tokens: int


class Embeddings(Answer):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
