"""One schema per wire format (issue 13): the OpenAI shapes are pydantic models (shard.api.wire) that
validate the requests, generate /openapi.json and describe the answers a real node gives; the
sampling ranges are written once (shard.verifier.protocol) and the verifier protocol uses them."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from typing import Any

import pytest
import requests
from aiohttp import web
from pydantic import BaseModel

import shard.api
from conftest import ServedNode
from shard.api import openapi
from shard.api.errors import ApiError
from shard.api.schemas import parse_chat, parse_completion
from shard.api.wire import ollama, responses, system
from shard.api.wire import openai as wire
from shard.verifier.protocol import GenerateRequest, ProtocolError, Sampling, SamplingParams, VerifyRequest

MSG = [{"role": "user", "content": "hello there"}]


def _registered_routes() -> set[tuple[str, str]]:
    """(method, path) of every route that shard.api's modules register, as create_app calls them."""
    app = web.Application()
    for info in pkgutil.iter_modules(shard.api.__path__):
        module = importlib.import_module(f"shard.api.{info.name}")
        if callable(getattr(module, "add_routes", None)):
            module.add_routes(app)
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        path = route.resource.canonical if route.resource else ""
        out.add((route.method.lower(), re.sub(r"\{(\w+)(:[^}]*)?\}", "{}", path)))
    return out


def test_every_registered_route_is_in_the_openapi_document() -> None:
    spec = openapi.build_spec()
    described = {(m, re.sub(r"\{\w+\}", "{}", p)) for p, ops in spec["paths"].items() for m in ops}
    routes = _registered_routes()
    assert len(routes) >= 35
    assert routes <= described, sorted(routes - described)


def test_the_documents_bodies_are_generated_from_the_models() -> None:
    schemas = openapi.build_spec()["components"]["schemas"]
    for model in openapi.MODELS:
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
        generated.pop("$defs", None)
        assert schemas[model.__name__] == generated
    chat = schemas["ChatCompletionRequest"]["properties"]
    # The ranges come from the verifier's protocol (written once), through the request model.
    temperature = SamplingParams.model_json_schema()["properties"]["temperature"]
    assert chat["temperature"] == temperature
    assert {"minimum": 0.0, "maximum": 2.0} == {k: temperature["anyOf"][0][k] for k in ("minimum", "maximum")}
    text = json.dumps(schemas)
    assert "#/$defs/" not in text  # every reference points into components/schemas
    assert not [name for name in schemas if "__" in name]  # two models of one name would be renamed


@pytest.mark.parametrize(
    "sampling",
    [{"temperature": 2.5}, {"top_p": -0.1}, {"top_k": 1 << 21}, {"min_p": "0.1"}, {"presence_penalty": True}],
)
def test_the_api_and_the_verifier_refuse_the_same_sampling(sampling: dict[str, Any]) -> None:
    key = next(iter(sampling))
    with pytest.raises(ApiError) as api:
        parse_chat({"messages": MSG, **sampling}, 10_000)
    assert api.value.status == 400 and api.value.param == key
    with pytest.raises(ProtocolError, match=key):
        GenerateRequest.from_dict({"prompt": "x", "sampling": sampling})
    with pytest.raises(ProtocolError, match=key):
        VerifyRequest.from_dict({"context": [1], "sampling": sampling})


def test_parsed_requests_keep_their_meaning() -> None:
    parsed = parse_chat(
        {
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
                *MSG,
            ],
            "temperature": 0,
            "seed": -1,
            "stop": "x",
            "top_k": None,  # null: the default
            "max_completion_tokens": 7,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": 5,  # what does not change the answer is not checked
        },
        10_000,
    )
    gen = parsed.generate
    assert gen.messages and gen.messages[0] == {"role": "system", "content": "be brief"}
    assert gen.sampling == Sampling(temperature=0.0, seed=2**64 - 1)
    assert (gen.stop, gen.max_tokens, parsed.stream, parsed.include_usage) == (["x"], 7, True, True)
    completion = parse_completion({"prompt": ["hi"], "logprobs": 2, "n": 2, "best_of": 2}, 100)
    assert (completion.generate.prompt, completion.generate.logprobs, completion.n) == ("hi", 2, 2)
    assert completion.generate.max_tokens == 16
    for bad, param in (
        ({"messages": MSG, "stream": "yes"}, "stream"),
        ({"messages": MSG, "max_tokens": 1.5}, "max_tokens"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages"),
        ({"messages": MSG, "tool_choice": "sometimes"}, "tools"),
        ({"messages": MSG, "response_format": {"type": "json_schema"}}, "response_format"),
    ):
        with pytest.raises(ApiError) as err:
            parse_chat(bad, 10_000)
        assert err.value.param == param, (bad, err.value.message)
    with pytest.raises(ApiError) as err:
        parse_completion({"prompt": ["a", "b"]}, 100)
    assert err.value.param == "prompt"


def _sse_chunks(text: str) -> list[dict[str, Any]]:
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def _check(model: type[BaseModel], body: Any) -> None:
    model.model_validate(body, strict=False)


def test_a_real_nodes_answers_fit_the_answer_models(tiny_node: ServedNode) -> None:
    api = tiny_node.api
    body = {"messages": MSG, "max_tokens": 4, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    _check(wire.ChatCompletion, requests.post(api + "/chat/completions", json=body, timeout=60).json())
    r = requests.post(
        api + "/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}, timeout=60
    )
    chunks = _sse_chunks(r.text)
    assert len(chunks) >= 2
    for chunk in chunks:
        _check(wire.ChatCompletionChunk, chunk)
    text = {"prompt": "hello", "max_tokens": 4, "temperature": 0, "logprobs": 2}
    _check(wire.TextCompletion, requests.post(api + "/completions", json=text, timeout=60).json())
    for chunk in _sse_chunks(requests.post(api + "/completions", json={**text, "stream": True}, timeout=60).text):
        _check(wire.TextCompletion, chunk)
    models = requests.get(api + "/models", timeout=10).json()
    _check(wire.ModelList, models)
    _check(wire.Model, requests.get(api + "/models/" + models["data"][0]["id"], timeout=10).json())
    _check(wire.Embeddings, requests.post(api + "/embeddings", json={"input": ["a", "b"]}, timeout=60).json())
    bad = requests.post(api + "/chat/completions", json={"messages": MSG, "temperature": "hot"}, timeout=10)
    assert bad.status_code == 400
    _check(wire.Error, bad.json())
    assert bad.json()["error"]["param"] == "temperature"


def test_the_other_answers_fit_their_models_too(tiny_node: ServedNode) -> None:
    url, api = tiny_node.url, tiny_node.api
    _check(system.Health, requests.get(url + "/health", timeout=10).json())
    _check(system.SystemStatus, requests.get(api + "/system/status", timeout=10).json())
    _check(system.Topology, requests.get(api + "/system/topology", timeout=10).json())
    _check(system.Peers, requests.get(api + "/system/peers", timeout=10).json())
    _check(system.Credit, requests.get(api + "/system/credit", timeout=10).json())
    tags = requests.get(url + "/api/tags", timeout=10).json()
    _check(ollama.OllamaModels, tags)
    _check(ollama.OllamaModels, requests.get(url + "/api/ps", timeout=10).json())
    name = tags["models"][0]["name"]
    chat = {"model": name, "messages": MSG, "stream": False, "options": {"num_predict": 3, "temperature": 0}}
    _check(ollama.OllamaAnswer, requests.post(url + "/api/chat", json=chat, timeout=60).json())
    for line in requests.post(url + "/api/chat", json={**chat, "stream": True}, timeout=60).text.splitlines():
        _check(ollama.OllamaAnswer, json.loads(line))
    gen = {"model": name, "prompt": "hi", "stream": False, "options": {"num_predict": 3}}
    _check(ollama.OllamaAnswer, requests.post(url + "/api/generate", json=gen, timeout=60).json())
    _check(
        ollama.OllamaEmbed, requests.post(url + "/api/embed", json={"model": name, "input": "hi"}, timeout=60).json()
    )
    _check(ollama.OllamaShow, requests.post(url + "/api/show", json={"model": name}, timeout=10).json())
    bad = requests.post(url + "/api/chat", json={"model": name, "messages": "hi"}, timeout=10)
    assert bad.status_code == 400
    _check(ollama.OllamaError, bad.json())
    answer = requests.post(api + "/responses", json={"input": "hi", "max_output_tokens": 3}, timeout=60).json()
    _check(responses.Response, answer)
    _check(responses.Response, requests.get(api + "/responses/" + answer["id"], timeout=10).json())
    _check(responses.ResponseDeleted, requests.delete(api + "/responses/" + answer["id"], timeout=10).json())
