"""JSON Schema -> GBNF, with the checks that make a schema from a client or a peer safe to compile.

llama-cpp-python's converter does the work. Before it: the size and nesting are bounded (llama.cpp's
GBNF parser recurses per nesting level), every `$ref` must point inside the schema (the converter
would fetch https:// refs), chains of refs are followed a bounded number of hops (a cycle of bare
refs is refused), and a top-level `$ref` (pydantic's schema for a recursive model) is inlined.
Recursion through properties stays recursion between grammar rules, which is fine.
"""

from __future__ import annotations

import json
from typing import Any

MAX_SCHEMA_CHARS = 65536
MAX_SCHEMA_DEPTH = 32
MAX_REF_HOPS = 16


class SchemaError(ValueError):
    """The schema cannot be compiled; the text says why."""


def depth(node: Any, limit: int) -> int:
    """Nesting depth of a JSON value, without recursion (a deep value must not blow the stack here)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        value, d = stack.pop()
        if d > limit:
            return d
        deepest = max(deepest, d)
        if isinstance(value, dict):
            stack.extend((v, d + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, d + 1) for v in value)
    return deepest


def _pointer(root: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#"):
        raise SchemaError(f"only local $refs ('#/...') are supported, not {ref[:80]!r}")
    target: Any = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            raise SchemaError(f"$ref {ref[:80]!r} points to nothing in the schema")
    return target


def _follow(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The schema a chain of bare refs ends at, in at most MAX_REF_HOPS hops."""
    for _ in range(MAX_REF_HOPS):
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node
        target = _pointer(root, ref)
        if not isinstance(target, dict):
            raise SchemaError(f"$ref {ref[:80]!r} does not point to a schema object")
        node = target
    raise SchemaError(f"a chain of $refs longer than {MAX_REF_HOPS} (or a cycle of bare refs)")


def check_schema(schema: Any) -> dict[str, Any]:
    """The schema, checked and with a top-level $ref inlined; SchemaError if it cannot be used."""
    if not isinstance(schema, dict):
        raise SchemaError("a JSON Schema must be an object")
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise SchemaError(f"the schema is larger than {MAX_SCHEMA_CHARS} characters")
    if depth(schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise SchemaError(f"the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels")
    stack: list[Any] = [schema]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if "$ref" in value:
                if not isinstance(value["$ref"], str):
                    raise SchemaError("$ref must be a string")
                _follow(schema, value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    if "$ref" in schema:
        # Inline the root's target; keep the definitions it (and its children) point into.
        target = _follow(schema, schema)
        schema = {**{k: v for k, v in schema.items() if k != "$ref"}, **target}
    return schema


def json_object_grammar() -> str:
    """The GBNF grammar of any JSON value (`response_format: json_object`)."""
    from llama_cpp.llama_grammar import JSON_GBNF  # here, not at the top: the node loads llama.cpp only when asked

    return str(JSON_GBNF)


def schema_to_gbnf(schema: Any) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf  # here, not at the top (see json_object_grammar)

    checked = check_schema(schema)
    try:
        return json_schema_to_gbnf(json.dumps(checked))
    except (RecursionError, Exception) as exc:  # the converter raises bare asserts and KeyErrors
        raise SchemaError(f"the JSON schema cannot be turned into a grammar: {exc}") from None
