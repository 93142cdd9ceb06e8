"""End to end with a real instruct model: SmolLM2-135M through `shard serve` and the openai client."""

from __future__ import annotations

from pathlib import Path

import openai

from harness import start_node


def test_openai_client_streams_from_smollm2(smollm2: Path, tmp_path: Path) -> None:
    node = start_node(smollm2, tmp_path, "--ctx-size", "2048", "--parallel", "2")
    try:
        client = openai.OpenAI(base_url=node.api, api_key="none")
        [model] = client.models.list().data
        assert model.id == "SmolLM2-135M-Instruct.Q4_1"
        stream = client.chat.completions.create(
            model=model.id,
            messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
            max_tokens=16,
            temperature=0,
            stream=True,
        )
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        text = "".join(pieces)
        assert len([p for p in pieces if p]) >= 1 and "Paris" in text, text
        out = client.chat.completions.create(
            model=model.id,
            messages=[{"role": "user", "content": "Give a JSON object with keys city and country for Paris."}],
            max_tokens=60,
            temperature=0,
            response_format={"type": "json_object"},
        )
        import json

        assert isinstance(json.loads(out.choices[0].message.content), dict)
    finally:
        node.stop()
