"""The installed app against the app run from source: sizes of the bundle and its installers, and
time from launch to `/health` 200 for `dist/shard/Shard serve` and `.venv/bin/shard serve` with the
same model, flags and sidecar (loopback, any ports, no mDNS); median of a few runs, interleaved.

    bash installer/build.sh linux && bash installer/build.sh nsis-standin
    .venv/bin/python bench/bundle_bench.py --runs 5
    .venv/bin/python bench/bundle_bench.py --nsis-payload   # also pack the Linux bundle with the NSIS script:
                                                            # an estimate of the Windows installer's size (minutes)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import start_node, stop
from shard import __version__

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist"
VERSION = __version__
TEST_DATA = Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache" / "shard" / "test-data"))
SMOLLM2 = TEST_DATA / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def tree_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def time_to_health(cmd: list[str], model: Path, tmp: Path) -> float:
    t0 = time.perf_counter()
    node = start_node(
        model, tmp, "--parallel", "2", "--ctx-size", "1024", command=(*cmd, "serve"), sidecar=True, wait=False
    )
    try:
        node.wait_ready(180, interval=0.02)
        return time.perf_counter() - t0
    finally:
        stop(node.proc, 30, reap=10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--nsis-payload", action="store_true", help="compile the NSIS script with the Linux bundle as payload"
    )
    args = ap.parse_args()

    bundle = DIST / "shard"
    exe = bundle / "Shard"
    if not exe.exists():
        print("no dist/shard: run `bash installer/build.sh linux` first", file=sys.stderr)
        return 2
    internal = bundle / "_internal"
    deb = next(DIST.glob(f"shard_{VERSION}_*.deb"), None)
    tarball = next(DIST.glob(f"shard-{VERSION}-linux-*.tar.gz"), None)
    standin = DIST / f"Shard-{VERSION}-setup-standin.exe"
    rows = [
        ("bundle dist/shard (installed size)", tree_bytes(bundle)),
        ("  of which PySide6 / Qt", tree_bytes(internal / "PySide6")),
        ("  of which llama.cpp libraries", tree_bytes(internal / "llama_cpp")),
        ("  of which numpy (+ OpenBLAS)", tree_bytes(internal / "numpy") + tree_bytes(internal / "numpy.libs")),
        (
            "  of which shard-daemon (sidecar)",
            (internal / "shard-daemon").stat().st_size if (internal / "shard-daemon").exists() else None,
        ),
        ("  of which web scout", tree_bytes(internal / "web-scout") if (internal / "web-scout").exists() else None),
        (
            "  of which libpython + stdlib",
            (internal / "libpython3.11.so.1.0").stat().st_size
            + tree_bytes(internal / "python3.11")
            + (internal / "base_library.zip").stat().st_size,
        ),
        (f".deb ({deb.name if deb else 'not built'})", deb.stat().st_size if deb else None),
        (f"portable tarball ({tarball.name if tarball else 'not built'})", tarball.stat().st_size if tarball else None),
        ("NSIS installer, stand-in payload (script overhead)", standin.stat().st_size if standin.exists() else None),
    ]
    if args.nsis_payload:
        out = DIST / "Shard-linux-payload-nsis-estimate.exe"
        subprocess.run(
            [
                "makensis",
                "-V1",
                f"-DVERSION={VERSION}",
                f"-DPAYLOAD={bundle}",
                f"-DOUTFILE={out}",
                f"-DROOT={ROOT}",
                str(ROOT / "installer" / "windows" / "shard.nsi"),
            ],
            check=True,
        )
        rows.append(("NSIS installer with the Linux bundle as payload (estimate for Windows)", out.stat().st_size))

    print("| artifact | MB |\n|---|---|")
    for name, size in rows:
        print(f"| {name} | {mb(size)} |")

    models = [("tiny (random weights)", None), ("SmolLM2-135M Q4_1", SMOLLM2)]
    cmds = [
        ("bundle: dist/shard/Shard serve", [str(exe)]),
        ("source: .venv/bin/shard serve", [str(ROOT / ".venv" / "bin" / "shard")]),
    ]
    print(f"\n| app | model | launch to /health 200, median of {args.runs} (s) | min | max |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="shard-bundle-bench-") as tmpdir:
        tmp = Path(tmpdir)
        from harness.tiny_gguf import write_tiny_gguf

        tiny = write_tiny_gguf(tmp / "tiny.gguf", seed=1)
        results: dict[tuple[str, str], list[float]] = {}
        for mname, mpath in models:
            model = tiny if mpath is None else mpath
            if not model.exists():
                print(f"| - | {mname} | not at {model} | | |")
                continue
            for _, cmd in cmds:  # one warm-up each: the page cache holds both apps' files afterwards
                time_to_health(cmd, model, tmp)
            for _ in range(args.runs):
                for cname, cmd in cmds:  # interleaved, so a busy moment hits both
                    results.setdefault((cname, mname), []).append(time_to_health(cmd, model, tmp))
        for (cname, mname), times in results.items():
            print(f"| {cname} | {mname} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
