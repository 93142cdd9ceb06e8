"""The node's HTTP API as pydantic models, one module per family: `openai` (chat, completions,
embeddings, models, errors, stream chunks), `responses` (OpenAI's Responses API), `ollama`
(Ollama's /api/*) and `system` (health, status, topology, peers, credit). Requests are validated
with them where the routes use them (api/schemas.py) and /openapi.json is generated from all of
them (api/openapi.py)."""
