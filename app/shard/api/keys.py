"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from shard.node import Node

NODE: web.AppKey[Node] = web.AppKey("node")
