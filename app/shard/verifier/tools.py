"""Tool calling on the model's side: the prompt with the declared tools, and the grammar that forces
a call when one is required or named.

The GGUF's own chat template is rendered with `tools` (as llama.cpp's --jinja does). A template that
ignores tools (ChatML, as SmolLM2's) gets a Hermes-style system block describing them instead, and the
tool calls and results in the history are written in the same Hermes form, so nothing is dropped.

The grammar is compiled here, on the machine that runs the model, from the JSON schemas declared
with the tools: a peer never sends a grammar (llama.cpp's GBNF parser can be crashed by one).
"""

from __future__ import annotations

import json
import re
from typing import Any

from shard.verifier.jsonschema import schema_to_gbnf

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
MAX_PARALLEL_CALLS = 16  # calls one forced answer may hold

HERMES_SYSTEM = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": '
    "<args-json-object>}}\n</tool_call>"
)


def template_format(template: str) -> str:
    """How a chat template writes tool calls: 'hermes' (<tool_call>), 'mistral' ([TOOL_CALLS] [...]),
    'llama3' ({"name", "parameters"}), or 'none' when the template ignores tools (we add Hermes)."""
    if "tools" not in template:
        return "none"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if TOOL_CALL_OPEN in template:
        return "hermes"
    if "<|python_tag|>" in template or "ipython" in template:
        return "llama3"
    return "hermes"


def _arguments(call: dict[str, Any]) -> Any:
    """OpenAI sends arguments as a JSON string; templates expect an object (as llama.cpp passes them)."""
    args = call.get("function", {}).get("arguments", "{}")
    if isinstance(args, str):
        try:
            return json.loads(args)
        except ValueError:
            return args
    return args


def native_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for a template that knows tools: tool call arguments as objects."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [{**c, "function": {**c.get("function", {}), "arguments": _arguments(c)}} for c in m["tool_calls"]]
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out


def hermes_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Messages for a template that ignores tools: the tools in a system block, assistant tool calls
    as <tool_call> text, tool results as <tool_response> text (role 'tool' kept: ChatML writes it)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("tool_calls"):
            calls = "\n".join(
                f"{TOOL_CALL_OPEN}\n"
                + json.dumps(
                    {"name": c.get("function", {}).get("name"), "arguments": _arguments(c)}, ensure_ascii=False
                )
                + f"\n{TOOL_CALL_CLOSE}"
                for c in m["tool_calls"]
            )
            content = f"{content}\n{calls}" if content else calls
        elif m.get("role") == "tool":
            content = f"<tool_response>\n{content}\n</tool_response>"
        out.append({"role": m.get("role"), "content": content})
    if tools:
        block = HERMES_SYSTEM.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{block}"}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def forced_name(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, dict):
        return str(tool_choice.get("function", {}).get("name") or tool_choice.get("name") or "")
    return None


def call_grammar(tools: list[dict[str, Any]], tool_choice: Any, parallel: bool, fmt: str) -> str | None:
    """GBNF that admits only well-formed calls of the declared tools (the named one, when named), in
    the template's format; None when no call is forced ('auto' or 'none')."""
    name = forced_name(tool_choice)
    if tool_choice != "required" and not name:
        return None
    chosen = [t["function"] for t in tools if not name or t["function"]["name"] == name]
    key = "parameters" if fmt == "llama3" else "arguments"
    alternatives = [
        {
            "type": "object",
            "properties": {"name": {"const": f["name"]}, key: f.get("parameters") or {"type": "object"}},
            "required": ["name", key],
            "additionalProperties": False,
        }
        for f in chosen
    ]
    schema = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    body = schema_to_gbnf(schema)
    # The converter's root becomes one call; the new root wraps calls in the format's markers.
    body = re.sub(r"^root ::=", "call ::=", body, count=1, flags=re.M)
    many = parallel and not name
    if fmt == "mistral":
        root = (
            'root ::= "[TOOL_CALLS]" "[" call '
            + (f'("," space call){{0,{MAX_PARALLEL_CALLS - 1}}} ' if many else "")
            + '"]"'
        )
    elif fmt == "llama3":
        root = "root ::= call"
    else:
        one = f'"{TOOL_CALL_OPEN}\\n" call "\\n{TOOL_CALL_CLOSE}"'
        root = f"root ::= {one}" + (f' ("\\n" {one}){{0,{MAX_PARALLEL_CALLS - 1}}}' if many else "")
    if "space ::=" not in body:
        body += '\nspace ::= | " "'
    return root + "\n" + body
