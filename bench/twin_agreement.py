"""How often a drafter's greedy token equals a twin's along the twin's own greedy text (teacher-forced):
the per-token acceptance a scout running the drafter can reach for an Oracle running the twin, at best
(a draft token is kept only if the ones before it were: this is the chance of each, given the past).

    .venv/bin/python bench/twin_agreement.py DRAFTER TWIN [--tokens 64] [--prompts 3]

The noisy twins of bench/coop_bench.py should land at 50-80% (a real small-drafts-for-large pair);
--noise there is calibrated with this.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PROMPTS = [
    "What are three good habits for staying healthy?",
    "Explain how a bicycle works in simple terms.",
    "Write a short story about a lighthouse keeper.",
]


def chat(prompt: str) -> str:
    return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def agreement(drafter: Path, twin: Path, tokens: int = 64, prompts: int = 3) -> tuple[float, list[float]]:
    """(overall agreement, per prompt) of `drafter`'s argmax with `twin`'s greedy tokens."""
    from llama_cpp import Llama

    target = Llama(model_path=str(twin), n_ctx=512, n_threads=1, verbose=False)
    draft = Llama(model_path=str(drafter), n_ctx=512, n_threads=1, logits_all=True, verbose=False)
    per: list[float] = []
    same_all = total = 0
    for p in PROMPTS[:prompts]:
        prompt = target.tokenize(chat(p).encode(), special=True)
        out: list[int] = []
        for tok in target.generate(prompt, top_k=1, temp=0.0, reset=True):
            if tok == target.token_eos() or len(out) >= tokens:
                break
            out.append(int(tok))
        draft.reset()
        draft.eval(prompt + out)
        logits = np.asarray(draft.scores[: len(prompt) + len(out)])
        guesses = logits[len(prompt) - 1 : len(prompt) - 1 + len(out)].argmax(axis=1)
        same = int((guesses == np.asarray(out)).sum())
        per.append(same / len(out) if out else 0.0)
        same_all, total = same_all + same, total + len(out)
    return (same_all / total if total else 0.0), per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("drafter", type=Path)
    ap.add_argument("twin", type=Path)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=3)
    args = ap.parse_args()
    overall, per = agreement(args.drafter, args.twin, args.tokens, args.prompts)
    print(f"agreement {overall:.0%} (per prompt: {' / '.join(f'{v:.0%}' for v in per)})")


if __name__ == "__main__":
    main()
