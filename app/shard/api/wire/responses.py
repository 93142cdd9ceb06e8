"""OpenAI's Responses API (`POST /v1/responses`, api/responses_routes.py): the request as the
route reads it and the stored response it answers with."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from shard.api.wire.openai import Answer, Strict, TokenBudget
from shard.verifier.protocol import TOOL_NAME, Temperature, TopP


class InputMessage(Strict):
    type: Literal["message"] = "message"
    role: Literal["system", "developer", "user", "assistant"]
    content: str


class InputFunctionCall(Strict):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class InputFunctionCallOutput(Strict):
    type: Literal["function_call_output"]
    call_id: str
    output: str


class ToolParameters(Strict):
    type: Literal["object"] = "object"


class ResponseTool(Strict):
    type: Literal["function"]
    name: Annotated[str, Field(pattern=TOOL_NAME.pattern)]
    description: str = ""
    parameters: ToolParameters | None = None


class ResponseTextFormat(Strict):
    type: Literal["text", "json_object"]


class TextConfig(Strict):
    """Also `{"format": {"type": "json_schema", "schema": {...}}}`."""

    format: ResponseTextFormat | None = None


class ResponseRequest(Strict):
    """Also `previous_response_id` (a stored response's id: its conversation goes first; 404 when
    not stored)."""

    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[InputMessage | InputFunctionCall | InputFunctionCallOutput], Field(min_length=1)]
    )
    model: str = ""
    instructions: str = ""
    tools: list[ResponseTool] = Field(default_factory=list)
    tool_choice: Literal["auto", "none"] = "auto"
    parallel_tool_calls: bool = True
    stream: bool = False
    store: bool = True
    max_output_tokens: TokenBudget | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    text: TextConfig | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class OutputItem(Answer):
    type: Literal["message", "function_call"]


class ResponseUsage(Answer):
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None


class Response(Answer):
    id: str
    object: Literal["response"]
    created_at: int
    model: str
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    output: list[OutputItem]
    usage: ResponseUsage | None = None


class ResponseDeleted(Answer):
    id: str
    deleted: Literal[True]
