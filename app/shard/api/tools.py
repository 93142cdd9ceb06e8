"""Tool calls in the model's output, as OpenAI returns them.

The output is parsed for the formats models are trained on (as llama.cpp's common/chat.cpp does):
Hermes/Qwen `<tool_call>{json}</tool_call>`, Llama 3.x `{"name", "parameters"}` (after
`<|python_tag|>`), Mistral `[TOOL_CALLS] [...]`, and generic JSON (an object or a list of objects
with a name and arguments, also in a ``` fence). Control tokens (`<|python_tag|>`, Mistral's
`[TOOL_CALLS]`) do not reach the text, so their JSON is recognized on its own. Only calls of declared
tools count; anything else stays text. The format need not be known here: a node without a model
parses what its Oracle produced the same way.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

TRIGGERS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>")
LEADING = ("{", "[", "```")  # generic JSON counts only at the start of the output
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(</tool_call>|$)", re.S)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object as text, as OpenAI sends it
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    def openai(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
        return out if index is None else {"index": index, **out}


def _as_call(obj: Any, names: set[str]) -> ToolCall | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # {"type": "function", "function": {...}}
        obj = obj["function"]
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args, strict=False)
        except ValueError:
            return None
    if not isinstance(name, str) or name not in names or not isinstance(args, dict):
        return None
    text = json.dumps(args, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \\u escape: keep it escaped
        text = json.dumps(args)
    return ToolCall(name, text)


def _json_calls(text: str, names: set[str]) -> list[ToolCall] | None:
    """Calls from text that is wholly JSON (an object, a list, {"tool_calls": [...]}), else None."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text, strict=False)  # a raw control character in a string is still a call
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        value = value["tool_calls"]
    items = value if isinstance(value, list) else [value]
    calls = [_as_call(v, names) for v in items]
    return calls if calls and all(calls) else None  # type: ignore[return-value]


def parse(text: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    """(content, calls) from a model's whole output; no calls: the text unchanged."""
    if "<tool_call>" in text:
        calls: list[ToolCall] = []
        for m in _HERMES.finditer(text):
            call = _json_calls(m.group(1), names)
            if call is None:
                if calls and not m.group(2):  # an output cut off (max_tokens) inside a later call: keep the whole ones
                    break
                return text, []
            calls.extend(call)
        return _HERMES.sub("", text).strip(), calls
    for marker in ("[TOOL_CALLS]", "<|python_tag|>"):
        if marker in text:
            head, _, tail = text.partition(marker)
            found = _json_calls(tail, names) or _json_lines(tail, names)
            return (head.strip(), found) if found else (text, [])
    found = _json_calls(text, names) or _json_lines(text, names)
    return ("", found) if found else (text, [])


def _json_lines(text: str, names: set[str]) -> list[ToolCall] | None:
    """Llama 3.x may write several calls as JSON objects separated by ';' or new lines."""
    parts = [p for p in re.split(r";\s*|\n+", text.strip()) if p.strip()]
    if len(parts) < 2:
        return None
    calls = [_json_calls(p, names) for p in parts]
    return [c for cs in calls for c in cs] if all(calls) else None  # type: ignore[union-attr]


class ToolStream:
    """Splits streamed text into content to send now and a tail that may be a tool call.

    Content goes out as it comes, except a tail that could be the start of a call marker. Once a
    marker appears (or, at the very start, a '{', '[' or ``` that may open JSON), the rest is held
    and parsed at the end. With a forced call everything is held."""

    def __init__(self, names: set[str], forced: bool = False) -> None:
        self.names = names
        self.sent = ""  # content already sent
        self.held = ""
        self.capturing = forced

    def push(self, text: str) -> str:
        """Content that can be sent now."""
        self.held += text
        if self.capturing:
            return ""
        if not self.sent:
            lead = self.held.lstrip()
            if any(lead.startswith(p) for p in LEADING):
                self.capturing = True
                return ""
            if lead and any(p.startswith(lead) for p in LEADING) or not lead:
                return ""
        for t in TRIGGERS:
            i = self.held.find(t)
            if i >= 0:
                out, self.held = self.held[:i], self.held[i:]
                self.capturing = True
                self.sent += out
                return out
        cut = len(self.held)
        for t in TRIGGERS:  # keep back a tail that is the start of a marker
            for k in range(min(len(t) - 1, len(self.held)), 0, -1):
                if self.held.endswith(t[:k]):
                    cut = min(cut, len(self.held) - k)
                    break
        out, self.held = self.held[:cut], self.held[cut:]
        self.sent += out
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(content still to send, calls) at the end of the output."""
        content, calls = parse(self.held, self.names)
        if not calls:
            return self.held, []
        return content, calls
