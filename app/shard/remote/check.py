"""A remote Oracle's answer checked by this node's own model (when it has the Oracle's model).

The answer is teacher-forced: the verifier evaluates the prompt and the Oracle's text in batched
steps and asks, at each position, whether an honest sampler with the request's settings could have
chosen that token (greedy: the argmax; sampled: a token the top-k/top-p/min-p filter keeps; see
verifier/sampling.py `admissible`). One window of the answer is checked (CHECK_TOKENS tokens from a
random word boundary; the text before it is read as context, unchecked), so a check costs about one
prompt evaluation, and an Oracle cannot tell which part of its answer will be looked at.
"""

from __future__ import annotations

import dataclasses
import logging
import random

from shard import errors
from shard.ports import LocalModel
from shard.verifier.protocol import CheckRequest, GenerateRequest

log = logging.getLogger("shard.infer")

CHECK_TOKENS = 64  # tokens of an answer followed by one check
CHECK_CHARS = 4 * CHECK_TOKENS  # a window starts at least this far from the answer's end (about that many tokens)


def window_start(text: str) -> int:
    """Where the checked window starts: 0, or a random space between two words (a word starts
    there: the text before it tokenizes as the Oracle's did) that leaves about CHECK_TOKENS tokens
    after it. Not a space next to other white space: in a run of them (code's indentation) a token
    of several spaces can span the cut, and the text before it then tokenized otherwise than the
    Oracle's (an honest answer to "def fibonacci(n):" at temperature 1.4 was flagged once in CI)."""
    starts = [0] + [
        i
        for i in range(1, len(text) - CHECK_CHARS + 1)
        if text[i] == " " and not text[i - 1].isspace() and not text[i + 1].isspace()
    ]
    return random.choice(starts)


async def by_local_model(local: LocalModel, request: GenerateRequest, model: str, text: str) -> bool | None:
    """Whether this node's own model could have written `text` for `request`; None when it cannot
    tell: another model, no ready verifier, a grammar or tools (compiled by the Oracle from the
    schema: its mask is not this node's to reproduce exactly), or an answer with no text."""
    verifier = local.verifier
    if (
        verifier is None
        or not verifier.supervisor.ready
        or model != local.model_id()
        or not text
        or request.sampling.grammar
        or request.tools
    ):
        return None
    cut = window_start(text)
    generate = dataclasses.replace(
        request,
        continuation=request.continuation + text[:cut],
        max_tokens=0,
        stop=[],
        drafter="none",
        share_context=False,
        logprobs=-1,
    )
    try:
        result = await verifier.check(CheckRequest(generate=generate, expect=text[cut:], limit=CHECK_TOKENS))
    except errors.ShardError as exc:
        log.info("could not check an Oracle's answer locally: %s", exc)
        return None
    return result.agrees
