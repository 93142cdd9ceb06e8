"""Decode a GGUF forever on one thread: the load a scout puts on its core, without the scout.

coop_bench.py --busy-core runs plain beside it (pinned to the scout's CPU), so that a scout row's
ratio can also be read against an Oracle that shares the machine with the same decoding load: on a
2-core VM the two cores share caches and the memory bus, and a real scout drafts on another machine.

    .venv/bin/python bench/busy_core.py MODEL.gguf
"""

from __future__ import annotations

import sys

from llama_cpp import Llama


def main() -> None:
    llm = Llama(model_path=sys.argv[1], n_ctx=512, n_threads=1, n_batch=64, verbose=False)
    prompt = llm.tokenize(b"Write a long story about a lighthouse keeper and the sea.")
    print("ready", flush=True)  # coop_bench.py waits for this line, then pauses the process until needed
    while True:
        llm.reset()
        for n, _ in enumerate(llm.generate(prompt, temp=0.0)):
            if n >= 400:  # stay inside n_ctx
                break


if __name__ == "__main__":
    main()
