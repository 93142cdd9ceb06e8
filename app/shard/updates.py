"""Update check: reads a signed JSON feed and says whether a newer Shard exists. It only tells the
user (a notification and the About page); it never downloads, installs or restarts anything, so it
can never interrupt a request in flight.

The feed is an envelope whose payload is signed with the release key (ed25519):

    {"payload": "<base64 of a JSON object>", "signature": "<base64 of the ed25519 signature of those bytes>"}
    payload: {"version": "0.2.0", "url": "https://... release page", "notes": "one line", "published": "2026-12-01"}

A feed that is not signed by the release key is refused (a forged feed could point users at a
malicious download). The feed is bounded in size and every field is checked.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger("shard.updates")

# The release key's public half (raw ed25519, base64). Empty until the project's release key exists:
# the check then says so instead of trusting an unsigned feed.
RELEASE_PUBLIC_KEY = ""
MAX_FEED_BYTES = 64 * 1024
CHECK_EVERY_S = 24 * 3600
_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


@dataclass
class UpdateResult:
    state: str  # "current", "available", "error", "off"
    current: str
    version: str = ""
    url: str = ""
    notes: str = ""
    message: str = ""
    checked_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeedError(Exception):
    pass


def version_tuple(v: str) -> tuple[int, ...]:
    if not _VERSION.match(v):
        raise FeedError(f"not a release version: {v[:40]!r}")
    return tuple(int(x) for x in v.split("."))


def verify_feed(raw: bytes, public_key_b64: str) -> dict[str, Any]:
    """The feed's payload, once its signature is checked against the release key; FeedError otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not public_key_b64:
        raise FeedError("no release key is built into this version, so no feed can be trusted")
    try:
        envelope = json.loads(raw)
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signature"], validate=True)
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise FeedError(f"the feed is not a signed envelope: {exc}") from None
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        raise FeedError("the feed's signature is not the release key's: ignored") from None
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise FeedError(f"the signed payload is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("version"), str):
        raise FeedError("the signed payload has no version")
    version_tuple(data["version"])
    url = data.get("url", "")
    if not isinstance(url, str) or (url and not url.startswith("https://")):
        raise FeedError("the release URL must be https")
    return {"version": data["version"], "url": url, "notes": str(data.get("notes", ""))[:500]}


class UpdateChecker:
    """Checks the feed on demand ("Check now") and once a day while enabled."""

    def __init__(
        self,
        feed_url: str,
        current: str,
        enabled: bool = True,
        public_key: str = RELEASE_PUBLIC_KEY,
        on_result: Callable[[UpdateResult], None] | None = None,
    ) -> None:
        self.feed_url = feed_url
        self.current = current
        self.enabled = enabled
        self.public_key = public_key
        self.on_result = on_result
        self.last: UpdateResult | None = None

    async def check(self) -> UpdateResult:
        if not self.public_key:  # nothing could be trusted: do not even fetch
            result = UpdateResult(
                "off", self.current, message="this build has no release key, so it cannot check for updates"
            )
            self.last = result
            return result
        try:
            timeout = aiohttp.ClientTimeout(total=20)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.feed_url) as resp:
                if resp.status != 200:
                    raise FeedError(f"{self.feed_url} answered HTTP {resp.status}")
                raw = await resp.content.read(MAX_FEED_BYTES + 1)
            if len(raw) > MAX_FEED_BYTES:
                raise FeedError(f"the feed is larger than {MAX_FEED_BYTES // 1024} KB")
            feed = verify_feed(raw, self.public_key)
            newer = version_tuple(feed["version"]) > version_tuple(self.current)
            result = UpdateResult(
                "available" if newer else "current",
                self.current,
                **feed,
                message=f"Shard {feed['version']} is available"
                if newer
                else f"Shard {self.current} is the latest version",
            )
        except FeedError as exc:
            result = UpdateResult("error", self.current, message=str(exc))
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            result = UpdateResult(
                "error", self.current, message=f"cannot read {self.feed_url}: {exc or type(exc).__name__}"
            )
        if result.state == "error":
            log.warning("update check: %s", result.message)
        else:
            log.info("update check: %s", result.message)
        self.last = result
        if self.on_result is not None:
            self.on_result(result)
        return result

    async def run(self, first_delay_s: float = 60.0) -> None:
        """Check a minute after start, then daily, while enabled (the switch is read each time)."""
        await asyncio.sleep(first_delay_s)
        while True:
            if self.enabled:
                await self.check()
            await asyncio.sleep(CHECK_EVERY_S)
