"""The OpenAI-compatible HTTP API on 127.0.0.1 (aiohttp)."""
