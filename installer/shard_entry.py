"""The bundle's entry point: `Shard` (tray app), `Shard serve`, `Shard verifier ...` (the node starts
its verifier child from this same executable), `Shard scout`, `Shard models ...`."""

import multiprocessing
import sys

from shard.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # harmless; guards against a library spawning a child through us
    sys.exit(main())
