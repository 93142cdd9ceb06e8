"""Shard node: a peer-to-peer LLM inference node with an OpenAI-compatible endpoint on localhost."""

__version__ = "0.1.0"
