"""protocol/fixtures/: valid and invalid examples of every network message. The Python models
(shard.network.messages, credit.receipts) accept each valid one and refuse each invalid one; the
web scout's parsers (web-scout/test/fixtures.test.ts) and the sidecar (sidecar/tests/fixtures.rs)
read the same files, so the three languages cannot drift apart."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shard.credit import receipts
from shard.network import messages

FIXTURES = Path(__file__).resolve().parents[1] / "protocol" / "fixtures"


def _receipt(body: Any) -> object:
    parsed = receipts.parse_signed(body)
    if parsed is None:
        raise messages.MessageError("not a signed receipt")
    return parsed


PARSERS: dict[str, Callable[[Any], object]] = {
    **{name: cls.from_dict for name, cls in messages.MESSAGES.items()},  # type: ignore[attr-defined]
    "receipt": _receipt,
}
CASES = sorted(FIXTURES.glob("*/*.json"))


def test_every_message_has_valid_and_invalid_fixtures() -> None:
    folders = {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    assert folders == set(PARSERS), folders ^ set(PARSERS)
    for name in folders:
        kinds = {p.name.split("-", 1)[0] for p in (FIXTURES / name).glob("*.json")}
        assert kinds == {"valid", "invalid"}, name


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_python_reads_each_fixture_as_its_name_says(path: Path) -> None:
    body = json.loads(path.read_text())
    parse = PARSERS[path.parent.name]
    if path.name.startswith("valid-"):
        parse(body)
    else:
        with pytest.raises(messages.MessageError):
            parse(body)


def test_valid_messages_survive_a_round_trip() -> None:
    for path in FIXTURES.glob("*/valid-*.json"):
        cls = messages.MESSAGES.get(path.parent.name)
        if cls is not None:
            once = cls.from_dict(json.loads(path.read_text()))  # type: ignore[attr-defined]
            assert cls.from_dict(once.to_dict()) == once, path  # type: ignore[attr-defined]
