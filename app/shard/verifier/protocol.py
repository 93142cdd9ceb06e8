"""The verifier's wire format (node <-> verifier child, 127.0.0.1, per-launch bearer token).

One place for it: the child parses with these classes and the node's client builds them.
Described in docs/protocol.md ("Verifier"). The sampling ranges are written here once, as pydantic
types (`Temperature`, `TopP`, ...): the OpenAI API's request models (api/schemas.py), the generated
OpenAPI document and peers' requests (coop/remote_request.py) all validate with them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

READY_PREFIX = "SHARD_VERIFIER_READY "
TOKEN_ENV = "SHARD_VERIFIER_TOKEN"
EXIT_MODEL_UNUSABLE = 3  # the model cannot be loaded: restarting will not help
MAX_TOKENS_PER_REQUEST = 65536


class ProtocolError(ValueError):
    """A message that does not follow this format; the text says which field and why."""


def _int(d: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = d.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(f"'{key}' must be an integer")
    if not lo <= v <= hi:
        raise ProtocolError(f"'{key}' must be between {lo} and {hi}, got {v}")
    return v


def token_ids(d: dict[str, Any], key: str) -> list[int]:
    """`d[key]` as a list of token ids (missing or null: []), at most MAX_TOKENS_PER_REQUEST long."""
    v = d.get(key) or []
    if not isinstance(v, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in v):
        raise ProtocolError(f"'{key}' must be a list of token ids")
    if len(v) > MAX_TOKENS_PER_REQUEST:
        raise ProtocolError(f"'{key}' has more than {MAX_TOKENS_PER_REQUEST} tokens")
    return v


# -- the sampling ranges, written once ---------------------------------------------------------
Temperature = Annotated[float, Field(ge=0.0, le=2.0, description="0 is greedy; default 0.8")]
TopP = Annotated[float, Field(ge=0.0, le=1.0, description="default 0.95")]
TopK = Annotated[int, Field(ge=0, le=1 << 20, description="extension; default 40")]
MinP = Annotated[float, Field(ge=0.0, le=1.0, description="extension; default 0.05")]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
Seed = Annotated[int, Field(ge=-(2**63), le=2**64 - 1, description="taken modulo 2**64")]


class SamplingParams(BaseModel):
    """The sampling fields as a sender writes them (absent or null: the default). Strict: a string
    or a boolean is not a number."""

    model_config = ConfigDict(strict=True, extra="ignore")

    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: MinP | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Seed | None = None


def error_text(exc: ValidationError) -> tuple[str, str | None]:
    """The first problem pydantic found, as one sentence naming the field, and that field's top-level name."""
    err = exc.errors(include_url=False)[0]
    # A union's failing member appears in the path ('str', 'list[str]', 'TextPart'): not a field name.
    path = [str(p) for p in err["loc"] if not _UNION_TAG.search(str(p))]
    loc = ".".join(path)
    return (f"'{loc}': {err['msg']}" if loc else err["msg"]), (path[0] if path else None)


_UNION_TAG = re.compile(r"^(str|int|float|bool|dict|list|none)$|[\[A-Z]")


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], d: Any) -> M:
    """`d` validated by `model`, or a ProtocolError naming the field."""
    try:
        return model.model_validate(d)
    except ValidationError as exc:
        raise ProtocolError(error_text(exc)[0]) from None


@dataclass
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    grammar: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sampling:
        grammar = d.get("grammar")
        if grammar is not None and not isinstance(grammar, str):
            raise ProtocolError("'grammar' must be a GBNF string")
        return cls.from_params(parse(SamplingParams, d), grammar or None)

    @classmethod
    def from_params(cls, p: SamplingParams, grammar: str | None = None) -> Sampling:
        """The values to sample with: what was sent, else the defaults."""
        return cls(
            temperature=cls.temperature if p.temperature is None else p.temperature,
            top_p=cls.top_p if p.top_p is None else p.top_p,
            top_k=cls.top_k if p.top_k is None else p.top_k,
            min_p=cls.min_p if p.min_p is None else p.min_p,
            presence_penalty=p.presence_penalty or 0.0,
            frequency_penalty=p.frequency_penalty or 0.0,
            seed=None if p.seed is None else p.seed & 0xFFFFFFFFFFFFFFFF,
            grammar=grammar,
        )


def _continuation(d: dict[str, Any]) -> str:
    v = d.get("continuation") or ""
    if not isinstance(v, str) or len(v) > 1_000_000:
        raise ProtocolError("'continuation' must be a string")
    return v


MAX_TOOLS = 128
MAX_TOOLS_CHARS = 262144
MAX_TOOL_CALLS_IN_HISTORY = 1024
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # OpenAI's rule, plus '.' and ':' (MCP tool names)
TOOL_CHOICES = ("auto", "none", "required")


def check_tools(d: dict[str, Any]) -> list[dict[str, Any]] | None:
    """OpenAI's function tools, checked: names, an object of parameters, bounded in count and size."""
    tools = d.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise ProtocolError(f"'tools' must be a list of at most {MAX_TOOLS} tools")
    if len(json.dumps(tools)) > MAX_TOOLS_CHARS:
        raise ProtocolError(f"'tools' is larger than {MAX_TOOLS_CHARS} characters")
    names = set()
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict):
            raise ProtocolError(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}")
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise ProtocolError(f"tools[{i}].function.name must be 1-64 letters, digits, '_', '-', '.' or ':'")
        if name in names:
            raise ProtocolError(f"tools[{i}]: the name {name!r} is declared twice")
        names.add(name)
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise ProtocolError(f"tools[{i}].function.parameters must be a JSON Schema object")
        if fn.get("description") is not None and not isinstance(fn["description"], str):
            raise ProtocolError(f"tools[{i}].function.description must be a string")
    return tools


def check_tool_choice(d: dict[str, Any], tools: list[dict[str, Any]] | None) -> Any:
    """'auto', 'none', 'required' or {'type': 'function', 'function': {'name': a declared tool}}."""
    choice = d.get("tool_choice")
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise ProtocolError(f"'tool_choice' must be one of {', '.join(TOOL_CHOICES)} or a named function")
        if choice == "required" and not tools:
            raise ProtocolError("'tool_choice' is 'required' but no tools are declared")
        return choice
    fn = choice.get("function") if isinstance(choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise ProtocolError("'tool_choice' must be a string or {'type': 'function', 'function': {'name': ...}}")
    if not any(t["function"]["name"] == name for t in tools or ()):
        raise ProtocolError(f"'tool_choice' names {name[:64]!r}, which is not among the declared tools")
    return {"type": "function", "function": {"name": name}}


def _messages(d: dict[str, Any]) -> list[dict[str, Any]] | None:
    messages = d.get("messages")
    if messages is None:
        return None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ProtocolError("'messages' must be a list of objects")
    calls = 0
    for i, m in enumerate(messages):
        if not isinstance(m.get("content", ""), (str, type(None))):
            raise ProtocolError(f"messages[{i}].content must be a string")
        tc = m.get("tool_calls")
        if tc is None:
            continue
        if not isinstance(tc, list) or not all(
            isinstance(c, dict)
            and isinstance(c.get("function"), dict)
            and isinstance(c["function"].get("name"), str)
            and isinstance(c["function"].get("arguments", ""), (str, dict))
            for c in tc
        ):
            raise ProtocolError(f"messages[{i}].tool_calls must be a list of {{'function': {{'name', 'arguments'}}}}")
        calls += len(tc)
    if calls > MAX_TOOL_CALLS_IN_HISTORY:
        raise ProtocolError(f"more than {MAX_TOOL_CALLS_IN_HISTORY} tool calls in the messages")
    return messages


def _suffix(d: dict[str, Any], prompt: str | None) -> str:
    v = d.get("suffix") or ""
    if not isinstance(v, str) or len(v) > 1_000_000:
        raise ProtocolError("'suffix' must be a string")
    if v and prompt is None:
        raise ProtocolError("'suffix' goes with 'prompt' only")
    return v


@dataclass
class GenerateRequest:
    """POST /generate. Exactly one of prompt (text), messages (chat) or tokens is given."""

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    tokens: list[int] | None = None
    max_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    sampling: Sampling = field(default_factory=Sampling)
    drafter: str = "none"  # "none" or "lookup" (prompt lookup inside the verifier)
    share_context: bool = False  # put the prompt as text in the "start" event (work for scouts)
    continuation: str = ""  # text already generated for this request elsewhere: go on after it
    # The JSON schema `sampling.grammar` was compiled from ({} for any JSON object): what a remote
    # Oracle is sent instead of the grammar (it compiles the schema itself, within its limits).
    json_schema: dict[str, Any] | None = None
    # Tool calling (messages only): OpenAI's function tools, rendered into the prompt by the chat
    # template; "required" or a named function makes the verifier compile a grammar from their schemas.
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    logprobs: int = -1  # -1: none; 0-20: each token's log-probability and that many alternatives
    suffix: str = ""  # with a prompt: fill in the middle, with the model's FIM tokens

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> GenerateRequest:
        if not isinstance(d, dict):
            raise ProtocolError("the body must be a JSON object")
        given = [k for k in ("prompt", "messages", "tokens") if d.get(k) is not None]
        if len(given) != 1:
            raise ProtocolError("give exactly one of 'prompt', 'messages' or 'tokens'")
        prompt, messages = d.get("prompt"), _messages(d)
        if prompt is not None and not isinstance(prompt, str):
            raise ProtocolError("'prompt' must be a string")
        tools = check_tools(d)
        if tools and messages is None:
            raise ProtocolError("'tools' go with 'messages' only")
        stop = d.get("stop") or []
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise ProtocolError("'stop' must be a list of strings")
        drafter = d.get("drafter", "none")
        if drafter not in ("none", "lookup"):
            raise ProtocolError("'drafter' must be 'none' or 'lookup'")
        return cls(
            prompt=prompt,
            messages=messages,
            tokens=token_ids(d, "tokens") if d.get("tokens") is not None else None,
            max_tokens=_int(d, "max_tokens", 0, 0, MAX_TOKENS_PER_REQUEST),
            stop=stop,
            sampling=Sampling.from_dict(d.get("sampling") or {}),
            drafter=drafter,
            share_context=bool(d.get("share_context", False)),
            continuation=_continuation(d),
            json_schema=d.get("json_schema") if isinstance(d.get("json_schema"), dict) else None,
            tools=tools,
            tool_choice=check_tool_choice(d, tools),
            parallel_tool_calls=bool(d.get("parallel_tool_calls", True)),
            logprobs=_int(d, "logprobs", -1, -1, 20),
            suffix=_suffix(d, prompt),
        )


@dataclass
class VerifyRequest:
    """POST /verify: evaluate context + draft in one batched pass; keep the longest accepted prefix + 1."""

    context: list[int]
    draft: list[int]
    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.0))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> VerifyRequest:
        if not isinstance(d, dict):
            raise ProtocolError("the body must be a JSON object")
        context = token_ids(d, "context")
        if not context:
            raise ProtocolError("'context' must hold at least one token")
        return cls(
            context=context,
            draft=token_ids(d, "draft"),
            sampling=Sampling.from_dict(d.get("sampling") or {"temperature": 0.0}),
        )


MAX_DRAFT_CHARS = 4096


@dataclass
class DraftRequest:
    """POST /draft: a draft for a running generation (`job` from its "start" event), for the tokens
    from `position` on, as text (the verifier tokenizes it) or token ids. Answered when checked."""

    job: int
    position: int
    text: str | None = None
    tokens: list[int] | None = None
    limit: int = 0  # check at most this many of its tokens (0: no limit); the node paces each scout
    source: str = ""  # who drafted it (a scout's peer id): the engine learns each source's acceptance
    confidence: list[int] | None = None  # with tokens: each one's stated probability, in percent (policy.Calibration)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> DraftRequest:
        if not isinstance(d, dict):
            raise ProtocolError("the body must be a JSON object")
        text = d.get("text")
        if (text is None) == (d.get("tokens") is None):
            raise ProtocolError("give exactly one of 'text' or 'tokens'")
        if text is not None and (not isinstance(text, str) or not text or len(text) > MAX_DRAFT_CHARS):
            raise ProtocolError(f"'text' must be a non-empty string of at most {MAX_DRAFT_CHARS} characters")
        return cls(
            job=_int(d, "job", 0, 1, 1 << 62),
            position=_int(d, "position", 0, 0, 1 << 30),
            text=text,
            tokens=token_ids(d, "tokens") if d.get("tokens") is not None else None,
            limit=_int(d, "limit", 0, 0, 1 << 16),
            source=_source(d),
            confidence=_confidence(d),
        )


def _confidence(d: dict[str, Any]) -> list[int] | None:
    v = d.get("confidence")
    if v is None:
        return None
    tokens = d.get("tokens")
    if (
        not isinstance(v, list)
        or not isinstance(tokens, list)
        or len(v) != len(tokens)
        or not all(type(c) is int and 0 <= c <= 100 for c in v)
    ):
        raise ProtocolError("'confidence' must give each of the draft's tokens a whole percent (0 to 100)")
    return v


def _source(d: dict[str, Any]) -> str:
    v = d.get("source", "")
    if not isinstance(v, str) or len(v) > 128:
        raise ProtocolError("'source' must be a string of at most 128 characters")
    return v


@dataclass
class DraftVerdict:
    proposed: int  # draft tokens that were checked (0 if the draft was not used)
    accepted: int  # of those, how many the target model kept
    # "verified", "stale" (superseded, or nothing new), "missed" (late, and its start disagreed with what
    # was generated: a wrong guess), "finished" (too late), "invalid"
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class VerifyResult:
    accepted: list[int]  # the accepted draft prefix followed by the target's own next token
    n_draft_accepted: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MAX_CHECK_CHARS = 65536


@dataclass
class CheckRequest:
    """POST /check: would this model, sampling as `generate` says, have written `expect` right
    after `generate`'s prompt (and its continuation)? A remote Oracle's answer, checked by a node
    that has the model. At most `limit` tokens of it are followed (0: all that fit)."""

    generate: GenerateRequest
    expect: str
    limit: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"generate": self.generate.to_dict(), "expect": self.expect, "limit": self.limit}

    @classmethod
    def from_dict(cls, d: Any) -> CheckRequest:
        if not isinstance(d, dict):
            raise ProtocolError("the body must be a JSON object")
        expect = d.get("expect")
        if not isinstance(expect, str) or not expect or len(expect) > MAX_CHECK_CHARS:
            raise ProtocolError(f"'expect' must be a text of 1 to {MAX_CHECK_CHARS} characters")
        return cls(
            generate=GenerateRequest.from_dict(d.get("generate")),
            expect=expect,
            limit=_int(d, "limit", 0, 0, MAX_TOKENS_PER_REQUEST),
        )


@dataclass
class CheckResult:
    agrees: bool  # every token followed was one an honest sampler could have chosen
    checked: int  # tokens followed (of `limit`)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MAX_EMBED_INPUTS = 2048


@dataclass
class EmbedRequest:
    """POST /embed: texts (or token lists) to embed; answered with L2-normalized vectors."""

    inputs: list[str] | None = None
    tokens: list[list[int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> EmbedRequest:
        if not isinstance(d, dict):
            raise ProtocolError("the body must be a JSON object")
        inputs, tokens = d.get("inputs"), d.get("tokens")
        if (inputs is None) == (tokens is None):
            raise ProtocolError("give exactly one of 'inputs' or 'tokens'")
        if inputs is not None and (not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs)):
            raise ProtocolError("'inputs' must be a list of strings")
        if tokens is not None:
            if not isinstance(tokens, list):
                raise ProtocolError("'tokens' must be a list of token lists")
            tokens = [token_ids({"t": t}, "t") for t in tokens]
        if not 1 <= len(inputs if inputs is not None else tokens or []) <= MAX_EMBED_INPUTS:
            raise ProtocolError(f"give between 1 and {MAX_EMBED_INPUTS} inputs")
        return cls(inputs=inputs, tokens=tokens)
