"""The node's HTTP API as an OpenAPI 3.1 document, served at GET /openapi.json (open, like /health).

One description of every endpoint in docs/protocol.md's node API table, with the request bodies that
`shard.api.schemas` accepts (same names, types and limits) and the answers the routes give. The
schemathesis test (tests/test_reliability.py) holds the routes to it: a status, content type or
body that this document does not describe is a failing test.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shard import __version__
from shard.api.schemas import MAX_N, ROLES, UNSUPPORTED
from shard.verifier.protocol import MAX_EMBED_INPUTS, MAX_TOKENS_PER_REQUEST, MAX_TOOLS

JSON = "application/json"
SSE = "text/event-stream"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    out = _json(_ref("Error"), description)
    if retry_after:
        out["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        }
    return out


# Errors any route can give: the Host/Origin check, API keys, an unknown path or method.
_COMMON_ERRORS = {
    "401": _error("no API key, or a wrong one (`missing_api_key`, `invalid_api_key`); only when keys are configured"),
    "403": _error(
        "a Host header that is not loopback nor in `allowed_hosts` (`host_not_allowed`), or a foreign Origin "
        "(`origin_not_allowed`)"
    ),
    "404": _error("no such endpoint (`not_found`)"),
    "405": _error("method not allowed on this path (`method_not_allowed`)"),
}
_POST_ERRORS = {
    "400": _error(
        "the body is not JSON (`invalid_json`), a field has the wrong type or range (`invalid_request`, `param` "
        "names it), an unsupported parameter (`unsupported_parameter`), or a prompt over the limits "
        "(`context_length_exceeded`)"
    ),
    "404": _error("the model is not served here (`model_not_found`), or no such endpoint (`not_found`)"),
    "413": _error("the body is larger than `max_body_bytes` (`body_too_large`)"),
    "429": _error(
        "over `rate_limit_per_minute` POSTs in 60 s from one key or address (`rate_limit_exceeded`)", retry_after=True
    ),
    "503": _error(
        "no model (`no_model`), the model loading or failed, the verifier restarting (`verifier_unavailable`), "
        "or `max_queue` requests waiting already (`queue_full`)",
        retry_after=True,
    ),
}

_NUM = {"type": "number"}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_OBJ = {"type": "object"}


def _sampling_fields() -> dict[str, Any]:
    """The fields chat and text completions share (`schemas._common`)."""
    return {
        "model": {
            **_STR,
            "description": "the served id, its file name, '' or 'default'; anything else is 404 model_not_found",
        },
        "max_tokens": {**_INT, "minimum": 1, "maximum": MAX_TOKENS_PER_REQUEST},
        "max_completion_tokens": {**_INT, "minimum": 1, "maximum": MAX_TOKENS_PER_REQUEST},
        "temperature": {**_NUM, "minimum": 0, "maximum": 2, "description": "0 is greedy; default 0.8"},
        "top_p": {**_NUM, "minimum": 0, "maximum": 1},
        "top_k": {**_INT, "minimum": 0, "maximum": 1 << 20, "description": "extension; default 40"},
        "min_p": {**_NUM, "minimum": 0, "maximum": 1, "description": "extension; default 0.05"},
        "presence_penalty": {**_NUM, "minimum": -2, "maximum": 2},
        "frequency_penalty": {**_NUM, "minimum": -2, "maximum": 2},
        "seed": {**_INT, "minimum": -(2**63), "maximum": 2**64 - 1},
        "stop": {
            "anyOf": [_STR, {"type": "array", "items": _STR, "maxItems": 4}, {"type": "null"}],
            "description": "never sent, even split across tokens",
        },
        "stream": _BOOL,
        "stream_options": _nullable({"type": "object", "properties": {"include_usage": _BOOL}}),
        "response_format": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"enum": ["text", "json_object", "json_schema"]},
                "json_schema": {"type": "object", "properties": {"schema": _OBJ}},
            },
        },
        "n": {
            **_INT,
            "minimum": 1,
            "maximum": MAX_N,
            "description": "choices, generated side by side; at most `parallel`",
        },
        "user": _STR,
        **{key: {"description": f"refused: {why} (400 unsupported_parameter)"} for key, why in UNSUPPORTED.items()},
    }


def _usage() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": _INT,
            "completion_tokens": _INT,
            "total_tokens": _INT,
            "prompt_tokens_details": {"type": "object", "properties": {"cached_tokens": _INT}},
        },
    }


def _envelope(obj: str, choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": _STR,
            "object": {"const": obj},
            "created": _INT,
            "model": _STR,
            "system_fingerprint": _nullable(_STR),
            "choices": {"type": "array", "items": choice},
            "usage": _ref("Usage"),
        },
    }


_FINISH = _nullable({"enum": ["stop", "length", "tool_calls"]})
_ANY: dict[str, Any] = {}
NDJSON = "application/x-ndjson"


def _tool_call(streamed: bool) -> dict[str, Any]:
    fn = {"type": "object", "properties": {"name": _STR, "arguments": _STR}}
    return {
        "type": "object",
        "required": ["index"] if streamed else ["id", "type", "function"],
        "properties": {"index": _INT, "id": _STR, "type": {"const": "function"}, "function": fn},
    }


def _tools_fields() -> dict[str, Any]:
    function = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {**_STR, "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
            "description": _STR,
            "parameters": _OBJ,
            "strict": _BOOL,
        },
    }
    return {
        "tools": {
            "type": "array",
            "maxItems": MAX_TOOLS,
            "items": {
                "type": "object",
                "required": ["type", "function"],
                "properties": {"type": {"const": "function"}, "function": function},
            },
        },
        "tool_choice": {
            "anyOf": [
                {"enum": ["auto", "none", "required"]},
                {
                    "type": "object",
                    "required": ["type", "function"],
                    "properties": {
                        "type": {"const": "function"},
                        "function": {"type": "object", "required": ["name"], "properties": {"name": _STR}},
                    },
                },
            ],
            "description": "'required' or a named function: the answer is a call, constrained by a grammar from "
            "the schemas",
        },
        "parallel_tool_calls": _BOOL,
        "functions": {"type": "array", "items": function, "description": "legacy: mapped onto tools"},
        "function_call": {"description": "legacy: mapped onto tool_choice"},
        "logprobs": _BOOL,
        "top_logprobs": {**_INT, "minimum": 0, "maximum": 20, "description": "needs logprobs: true"},
    }


_LOGPROB = {
    "type": "object",
    "required": ["token", "logprob"],
    "properties": {
        "token": _STR,
        "logprob": _NUM,
        "bytes": {"type": "array", "items": _INT},
        "top_logprobs": {"type": "array"},
    },
}


def _schemas() -> dict[str, Any]:
    text_part = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": _STR},
    }
    message = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"enum": list(ROLES), "description": "'developer' is treated as 'system', 'function' as 'tool'"},
            "content": {"anyOf": [_STR, {"type": "array", "items": text_part}, {"type": "null"}]},
            "name": _STR,
            "tool_call_id": _STR,
            "tool_calls": {"type": "array", "items": _tool_call(False)},
        },
    }
    chat_logprobs = _nullable({"type": "object", "properties": {"content": {"type": "array", "items": _LOGPROB}}})
    chat_choice = {
        "type": "object",
        "required": ["index", "message", "finish_reason"],
        "properties": {
            "index": _INT,
            "logprobs": chat_logprobs,
            "finish_reason": _FINISH,
            "message": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"const": "assistant"},
                    "content": _nullable(_STR),
                    "refusal": {"type": "null"},
                    "tool_calls": {"type": "array", "items": _tool_call(False)},
                },
            },
        },
    }
    chunk_choice = {
        "type": "object",
        "required": ["index", "delta", "finish_reason"],
        "properties": {
            "index": _INT,
            "logprobs": chat_logprobs,
            "finish_reason": _FINISH,
            "delta": {
                "type": "object",
                "properties": {
                    "role": {"const": "assistant"},
                    "content": _STR,
                    "tool_calls": {"type": "array", "items": _tool_call(True)},
                },
            },
        },
    }
    text_choice = {
        "type": "object",
        "required": ["index", "text", "finish_reason"],
        "properties": {
            "index": _INT,
            "text": _STR,
            "finish_reason": _FINISH,
            "logprobs": _nullable(
                {
                    "type": "object",
                    "properties": {
                        "tokens": {"type": "array", "items": _STR},
                        "token_logprobs": {"type": "array", "items": _NUM},
                        "top_logprobs": {"type": "array"},
                        "text_offset": {"type": "array", "items": _INT},
                    },
                }
            ),
        },
    }
    model = {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {"id": _STR, "object": {"const": "model"}, "created": _INT, "owned_by": {"const": "shard"}},
    }
    health = {
        "type": "object",
        "required": ["status", "message", "model", "version"],
        "properties": {
            "status": {"enum": ["ok", "loading", "no_model", "error", "stopped"]},
            "message": _STR,
            "model": _nullable(_STR),
            "version": _STR,
            "contributing": _BOOL,
        },
    }
    child_properties = {"state": _STR, "pid": _nullable(_INT), "restarts": _INT, "last_error": _STR}
    child = {"type": "object", "properties": child_properties}
    status = {
        "allOf": [
            _ref("Health"),
            {
                "type": "object",
                "required": ["api_url", "model_path", "model_info", "verifier", "sidecar", "queue"],
                "properties": {
                    "api_url": _STR,
                    "model_path": _nullable(_STR),
                    "model_info": _OBJ,
                    "verifier": _nullable(child),
                    "sidecar": {
                        "type": "object",
                        "required": ["state"],
                        "properties": {
                            **child_properties,
                            "message": _STR,
                            "peer_id": _nullable(_STR),
                            "peers": _INT,
                        },
                    },
                    "queue": {
                        "type": "object",
                        "required": ["in_flight", "waiting"],
                        "properties": {"in_flight": _INT, "waiting": _INT},
                    },
                },
            },
        ]
    }
    addrs = {"type": "array", "items": _STR}
    topology = {
        "type": "object",
        "required": ["sidecar", "peer_id", "listen_addrs", "ws_addrs"],
        "properties": {
            "sidecar": {"enum": ["running", "not running", "error"]},
            "message": _STR,
            "peer_id": _nullable(_STR),
            "listen_addrs": addrs,
            "ws_addrs": addrs,
            "tcp_addrs": addrs,
            "quic_addrs": addrs,
            "tcp_port": _INT,
            "ws_port": _INT,
            "quic_port": _nullable(_INT),
            "reachability": {
                "type": "object",
                "properties": {
                    "mode": {"enum": ["public", "relayed", "hole-punched", "private", "unknown"]},
                    "nat": _STR,
                    "relay_addrs": addrs,
                    "relay_server": _BOOL,
                    "hole_punched_peers": _INT,
                },
            },
            "provided_models": addrs,
            "target_peers": _INT,
            "remembered_peers": _INT,
            "gossip_mesh_peers": _INT,
        },
    }
    peer = {
        "type": "object",
        "required": ["peer_id"],
        "properties": {
            "peer_id": _STR,
            "addrs": addrs,
            "roles": addrs,
            "models": addrs,
            "capacity": _nullable(_INT),
            "load": _nullable(_INT),
            "agent": _nullable(_STR),
            "latency_ms": _nullable(_NUM),
            "connected_since": _nullable(_NUM),
            "local": _nullable(_BOOL),
            "reputation": _NUM,
            "accepted": _INT,
            "credit": _NUM,
        },
    }
    peers = {
        "type": "object",
        "required": ["sidecar", "peers"],
        "properties": {
            "sidecar": {"enum": ["running", "not running"]},
            "message": _STR,
            "peer_id": _nullable(_STR),
            "peers": {"type": "array", "items": peer},
        },
    }
    credit_peer = {
        "type": "object",
        "required": [
            "peer_id",
            "drafts",
            "proposed",
            "accepted",
            "acceptance_rate",
            "reputation",
            "credit",
            "earned",
            "spent",
            "last_seen",
        ],
        "properties": {
            "peer_id": _STR,
            "drafts": _INT,
            "proposed": _INT,
            "accepted": _INT,
            "acceptance_rate": _NUM,
            "reputation": _NUM,
            "credit": _NUM,
            "earned": _NUM,
            "spent": _NUM,
            "last_seen": _NUM,
        },
    }
    credit = {
        "type": "object",
        "required": ["balance", "earned", "spent", "peers", "history"],
        "properties": {
            "balance": _NUM,
            "earned": _NUM,
            "spent": _NUM,
            "peers": {"type": "array", "items": credit_peer},
            "history": {
                "type": "array",
                "items": {"type": "object", "required": ["t", "balance"], "properties": {"t": _NUM, "balance": _NUM}},
            },
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "code", "param"],
                    "properties": {"message": _STR, "type": _STR, "code": _nullable(_STR), "param": _nullable(_STR)},
                }
            },
        },
        "Message": message,
        "ChatRequest": {
            "type": "object",
            "required": ["messages"],
            "properties": {
                **_sampling_fields(),
                **_tools_fields(),
                "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
            },
        },
        "CompletionRequest": {
            "type": "object",
            "required": ["prompt"],
            "properties": {
                **_sampling_fields(),
                "prompt": {"anyOf": [_STR, {"type": "array", "items": _STR, "minItems": 1, "maxItems": 1}]},
                "echo": {"description": "refused when true (400 unsupported_parameter)"},
                "suffix": {
                    **_STR,
                    "description": "fill in the middle, with the model's FIM tokens (400 for a model without them)",
                },
                "logprobs": {
                    **_INT,
                    "minimum": 0,
                    "maximum": 20,
                    "description": "alternatives per token (the legacy shape)",
                },
                "best_of": {"description": "only 1 or n (else 400 unsupported_parameter)"},
            },
        },
        "Usage": _usage(),
        "ChatCompletion": _envelope("chat.completion", chat_choice),
        "ChatCompletionChunk": _envelope("chat.completion.chunk", chunk_choice),
        "TextCompletion": _envelope("text_completion", text_choice),
        "Model": model,
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}},
        },
        "Health": health,
        **_new_schemas(),
        "SystemStatus": status,
        "Topology": topology,
        "Peers": peers,
        "Credit": credit,
    }


def _new_schemas() -> dict[str, Any]:
    """Embeddings, Responses and Ollama's shapes (kept loose where the body echoes what was sent)."""
    embedding_input = {
        "anyOf": [
            _STR,
            {"type": "array", "minItems": 1, "maxItems": MAX_EMBED_INPUTS, "items": _STR},
            {"type": "array", "minItems": 1, "items": _INT},
            {"type": "array", "minItems": 1, "items": {"type": "array", "items": _INT}},
        ]
    }
    response = {
        "type": "object",
        "required": ["id", "object", "created_at", "status", "model", "output"],
        "properties": {
            "id": _STR,
            "object": {"const": "response"},
            "created_at": _INT,
            "model": _STR,
            "status": {"enum": ["completed", "incomplete", "in_progress", "failed"]},
            "output": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"enum": ["message", "function_call"]}},
                },
            },
            "usage": _nullable(
                {"type": "object", "properties": {"input_tokens": _INT, "output_tokens": _INT, "total_tokens": _INT}}
            ),
        },
    }
    ollama_model = {
        "type": "object",
        "required": ["name", "model", "size", "digest", "details"],
        "properties": {"name": _STR, "model": _STR, "size": _INT, "digest": _STR, "modified_at": _STR, "details": _OBJ},
    }
    return {
        "EmbeddingRequest": {
            "type": "object",
            "required": ["input"],
            "properties": {
                "input": embedding_input,
                "model": _STR,
                "encoding_format": {"enum": ["float", "base64"]},
                "dimensions": {**_INT, "minimum": 1},
                "user": _STR,
            },
        },
        "Embeddings": {
            "type": "object",
            "required": ["object", "data", "model", "usage"],
            "properties": {
                "object": {"const": "list"},
                "model": _STR,
                "usage": _OBJ,
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["object", "index", "embedding"],
                        "properties": {
                            "object": {"const": "embedding"},
                            "index": _INT,
                            "embedding": {"anyOf": [{"type": "array", "items": _NUM}, _STR]},
                        },
                    },
                },
            },
        },
        "ResponseRequest": {
            "type": "object",
            "required": ["input"],
            "description": "also `previous_response_id` (a stored "
            "response's id: its conversation goes first; 404 when not stored)",
            "properties": {
                "model": _STR,
                "input": {
                    "anyOf": [
                        {**_STR, "minLength": 1},
                        {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "anyOf": [
                                    {
                                        "type": "object",
                                        "required": ["role", "content"],
                                        "properties": {
                                            "type": {"const": "message"},
                                            "role": {"enum": ["system", "developer", "user", "assistant"]},
                                            "content": _STR,
                                        },
                                    },
                                    {
                                        "type": "object",
                                        "required": ["type", "call_id", "name", "arguments"],
                                        "properties": {
                                            "type": {"const": "function_call"},
                                            "call_id": _STR,
                                            "name": _STR,
                                            "arguments": _STR,
                                        },
                                    },
                                    {
                                        "type": "object",
                                        "required": ["type", "call_id", "output"],
                                        "properties": {
                                            "type": {"const": "function_call_output"},
                                            "call_id": _STR,
                                            "output": _STR,
                                        },
                                    },
                                ]
                            },
                        },
                    ]
                },
                "instructions": _STR,
                "tools": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "name"],
                        "properties": {
                            "type": {"const": "function"},
                            "name": {**_STR, "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
                            "description": _STR,
                            "parameters": {"type": "object", "properties": {"type": {"const": "object"}}},
                        },
                    },
                },
                "tool_choice": {"enum": ["auto", "none"]},
                "parallel_tool_calls": _BOOL,
                "stream": _BOOL,
                "store": _BOOL,
                "max_output_tokens": {**_INT, "minimum": 1, "maximum": MAX_TOKENS_PER_REQUEST},
                "temperature": {**_NUM, "minimum": 0, "maximum": 2},
                "top_p": {**_NUM, "minimum": 0, "maximum": 1},
                "text": {
                    "type": "object",
                    "properties": {
                        "format": {
                            "type": "object",
                            "required": ["type"],
                            "properties": {"type": {"enum": ["text", "json_object"]}},
                        }
                    },
                    "description": "or json_schema with a `schema`",
                },
                "metadata": _OBJ,
            },
        },
        "Response": response,
        "ResponseDeleted": {
            "type": "object",
            "required": ["id", "deleted"],
            "properties": {"id": _STR, "deleted": {"const": True}},
        },
        "OllamaError": {"type": "object", "required": ["error"], "properties": {"error": _STR}},
        "OllamaChatRequest": {
            "type": "object",
            "required": ["model", "messages"],
            "properties": {
                "model": _STR,
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"enum": ["system", "user", "assistant", "tool"]},
                            "content": _STR,
                            "tool_name": _STR,
                            "tool_calls": {"type": "array", "items": _OBJ},
                        },
                    },
                },
                "stream": _BOOL,
                "format": {"anyOf": [{"const": "json"}, _OBJ]},
                "options": _OBJ,
                "tools": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "function"],
                        "properties": {
                            "type": {"const": "function"},
                            "function": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {**_STR, "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
                                    "description": _STR,
                                    "parameters": _OBJ,
                                },
                            },
                        },
                    },
                },
                "keep_alive": _ANY,
            },
        },
        "OllamaShowRequest": {"type": "object", "required": ["model"], "properties": {"model": _STR}},
        "OllamaGenerateRequest": {
            "type": "object",
            "required": ["model"],
            "properties": {
                "model": _STR,
                "prompt": _STR,
                "system": _STR,
                "suffix": _STR,
                "raw": _BOOL,
                "stream": _BOOL,
                "format": _ANY,
                "options": _OBJ,
                "keep_alive": _ANY,
            },
        },
        "OllamaAnswer": {
            "type": "object",
            "required": ["model", "created_at", "done"],
            "properties": {
                "model": _STR,
                "created_at": _STR,
                "done": _BOOL,
                "done_reason": _STR,
                "message": _OBJ,
                "response": _STR,
                "eval_count": _INT,
                "prompt_eval_count": _INT,
                "total_duration": _INT,
            },
        },
        "OllamaModels": {
            "type": "object",
            "required": ["models"],
            "properties": {"models": {"type": "array", "items": ollama_model}},
        },
        "OllamaShow": {
            "type": "object",
            "required": ["details", "capabilities"],
            "properties": {
                "details": _OBJ,
                "capabilities": {"type": "array", "items": _STR},
                "model_info": _OBJ,
                "modelfile": _STR,
            },
        },
        "OllamaEmbedRequest": {
            "type": "object",
            "required": ["model", "input"],
            "properties": {
                "model": _STR,
                "input": embedding_input,
                "truncate": _BOOL,
                "dimensions": {**_INT, "minimum": 1},
            },
        },
        "OllamaEmbed": {
            "type": "object",
            "required": ["model", "embeddings"],
            "properties": {"model": _STR, "embeddings": {"type": "array", "items": {"type": "array", "items": _NUM}}},
        },
    }


def _post(op: str, summary: str, request: str, ok: dict[str, Any], ollama: bool = False) -> dict[str, Any]:
    errors = {**_COMMON_ERRORS, **_POST_ERRORS}
    if ollama:  # Ollama's own error shape from the route; OpenAI's from the checks before it (keys, size, rate)
        either = {"anyOf": [_ref("OllamaError"), _ref("Error")]}
        errors = {code: {**e, "content": {JSON: {"schema": either}}} for code, e in errors.items()}
    return {
        "post": {
            "operationId": op,
            "summary": summary,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(request)}}},
            "responses": {"200": ok, **errors},
        }
    }


def _sse_event(chunk: str) -> dict[str, Any]:
    """One Server-Sent Event (OpenAPI 3.1 and 3.2's reading of `schema` under text/event-stream):
    its `data` is JSON text, a chunk (or an error body), or `[DONE]` last."""
    extra = {"event": _STR, "id": _STR, "retry": _INT}
    return {
        "anyOf": [
            {"type": "object", "required": ["data"], "properties": {"data": {"const": "[DONE]"}, **extra}},
            {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {
                        "type": "string",
                        "contentMediaType": JSON,
                        "contentSchema": {"anyOf": [_ref(chunk), _ref("Error")]},
                    },
                    **extra,
                },
            },
        ]
    }


def _generation(summary: str, request: str, whole: str, chunk: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": request[0].lower() + request[1:].replace("Request", ""),
            "summary": summary,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(request)}}},
            "responses": {
                "200": {
                    "description": "the whole answer, or with `stream: true` Server-Sent Events: "
                    f"`data: <{chunk}>` lines, "
                    "a last chunk with `usage` and empty `choices` when `stream_options.include_usage`, then "
                    '`data: [DONE]`; an error mid-stream arrives as `data: {"error": {...}}` and ends it',
                    "content": {JSON: {"schema": _ref(whole)}, SSE: {"schema": _sse_event(chunk)}},
                },
                **_COMMON_ERRORS,
                **_POST_ERRORS,
            },
        }
    }


def _get(op: str, summary: str, responses: dict[str, Any], open_: bool = False, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op, "summary": summary, "responses": {**_COMMON_ERRORS, **responses}, **extra}
    if open_:
        out["security"] = []  # no API key needed
        out["responses"].pop("401")
    return {"get": out}


def build_spec() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict each call: callers may change it)."""
    paths: dict[str, Any] = {
        "/v1/chat/completions": _generation(
            "Chat completion (OpenAI's shape)", "ChatRequest", "ChatCompletion", "ChatCompletionChunk"
        ),
        "/v1/completions": _generation(
            "Text completion (OpenAI's legacy shape)", "CompletionRequest", "TextCompletion", "TextCompletion"
        ),
        "/v1/models": _get(
            "listModels",
            "The served model (an empty list without one)",
            {"200": _json(_ref("ModelList"), "the served models")},
        ),
        "/v1/models/{model}": _get(
            "getModel",
            "One model",
            {
                "200": _json(_ref("Model"), "the model"),
                "404": _error("not served here (`model_not_found`)"),
                "503": _error("no model loaded (`no_model`)"),
            },
            parameters=[
                {"name": "model", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            ],
        ),
        "/v1/embeddings": _post(
            "createEmbeddings",
            "Embeddings from the served model (its GGUF's pooling) or `embedding_model`",
            "EmbeddingRequest",
            _json(_ref("Embeddings"), "one L2-normalized vector per input, float or base64"),
        ),
        "/v1/responses": _post(
            "createResponse",
            "OpenAI's Responses API: text or items in, message and function_call items out",
            "ResponseRequest",
            {
                "description": "the response, or with `stream: true` Responses events "
                "(`event: response.created` ... `response.completed`/`response.incomplete`)",
                "content": {JSON: {"schema": _ref("Response")}, SSE: {"schema": _OBJ}},
            },
        ),
        "/v1/responses/{response_id}": {
            **_get(
                "getResponse",
                "A stored response",
                {"200": _json(_ref("Response"), "the response"), "404": _error("not stored (`not_found`)")},
                parameters=[{"name": "response_id", "in": "path", "required": True, "schema": _STR}],
            ),
            "delete": {
                "operationId": "deleteResponse",
                "summary": "Forget a stored response",
                "parameters": [{"name": "response_id", "in": "path", "required": True, "schema": _STR}],
                "responses": {
                    **_COMMON_ERRORS,
                    "200": _json(_ref("ResponseDeleted"), "deleted"),
                    "404": _error("not stored (`not_found`)"),
                },
            },
        },
        "/api/chat": _post(
            "ollamaChat",
            "Ollama's chat (NDJSON stream by default)",
            "OllamaChatRequest",
            {
                "description": "the answer; streamed as NDJSON lines, the last with `done: true`",
                "content": {JSON: {"schema": _ref("OllamaAnswer")}, NDJSON: {"schema": _STR}},
            },
            ollama=True,
        ),
        "/api/generate": _post(
            "ollamaGenerate",
            "Ollama's generate (NDJSON stream by default)",
            "OllamaGenerateRequest",
            {
                "description": "the answer; streamed as NDJSON lines, the last with `done: true`",
                "content": {JSON: {"schema": _ref("OllamaAnswer")}, NDJSON: {"schema": _STR}},
            },
            ollama=True,
        ),
        "/api/embed": _post(
            "ollamaEmbed",
            "Ollama's embeddings",
            "OllamaEmbedRequest",
            _json(_ref("OllamaEmbed"), "the vectors"),
            ollama=True,
        ),
        "/api/show": _post(
            "ollamaShow",
            "Ollama's model details",
            "OllamaShowRequest",
            _json(_ref("OllamaShow"), "the model"),
            ollama=True,
        ),
        "/api/tags": _get(
            "ollamaTags", "Ollama's model list", {"200": _json(_ref("OllamaModels"), "the served model")}
        ),
        "/api/ps": _get("ollamaPs", "Ollama's loaded models", {"200": _json(_ref("OllamaModels"), "the loaded model")}),
        "/api/version": _get(
            "ollamaVersion",
            "The Ollama API version followed",
            {"200": _json({"type": "object", "required": ["version"], "properties": {"version": _STR}}, "the version")},
        ),
        "/health": _get(
            "health",
            "Liveness and readiness (open: no API key)",
            {
                "200": _json(_ref("Health"), "ready: `status` is `ok`"),
                "503": _json(
                    _ref("Health"),
                    "not ready: `status` is `loading`, `no_model`, `error` or `stopped`; `message` says why",
                ),
            },
            open_=True,
        ),
        "/metrics": _get(
            "metrics",
            "Prometheus text, every name prefixed `shard_`",
            {"200": {"description": "Prometheus exposition format 0.0.4", "content": {"text/plain": {"schema": _STR}}}},
        ),
        "/openapi.json": _get(
            "openapi", "This document (open: no API key)", {"200": _json(_OBJ, "OpenAPI 3.1")}, open_=True
        ),
        "/v1/system/status": _get(
            "systemStatus",
            "Health plus the node's parts: verifier, sidecar, queue",
            {"200": _json(_ref("SystemStatus"), "the node's state")},
        ),
        "/v1/system/topology": _get(
            "systemTopology",
            "The sidecar's libp2p addresses",
            {"200": _json(_ref("Topology"), "`sidecar` says whether it runs; addresses end in /p2p/<peer id>")},
        ),
        "/v1/system/peers": _get(
            "systemPeers", "Connected peers, with their credit here", {"200": _json(_ref("Peers"), "the peers")}
        ),
        "/v1/system/credit": _get(
            "systemCredit", "The credit ledger", {"200": _json(_ref("Credit"), "balance, per-peer figures, history")}
        ),
    }
    # The same operations without /v1, for clients given a base URL without it.
    for path in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/responses/{response_id}",
    ):
        paths[path.removeprefix("/v1")] = {
            m: {**op, "operationId": op["operationId"] + "Unprefixed"} for m, op in paths[path].items()
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Shard node API",
            "version": __version__,
            "description": "The OpenAI-compatible endpoint of a Shard node and its system endpoints "
            "(docs/protocol.md). "
            "Bound to 127.0.0.1 by default; API keys apply only when configured.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        # Keys are optional: a node without configured keys takes requests without one ({}).
        "security": [{"bearer": []}, {"apiKey": []}, {}],
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[_SPEC])


_SPEC: web.AppKey[dict[str, Any]] = web.AppKey("openapi_spec")


def add_routes(app: web.Application) -> None:
    app[_SPEC] = build_spec()
    app.router.add_get("/openapi.json", openapi_json, name="openapi")
