"""Settings: defaults < config file (TOML) < environment (SHARD_*) < command-line flags.

Every setting is one field of `Settings`; its environment variable is `SHARD_` plus the field name
in capitals, and its TOML key is the field name. Lists come from the environment comma-separated.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shard import paths

PRIVACY_LEVELS = ("local", "lan", "peers", "anyone")


# Bootstrap peers shipped with the app (a new node joins through them with no flag). Empty: no
# public Shard node is run yet; a `/dnsaddr/` entry goes here once one is (the DNS TXT records
# then list its current addresses). A node that was on the mesh once rejoins through the peers
# its sidecar remembers (DATA_DIR/sidecar/peers.json) with or without this list.
DEFAULT_BOOTSTRAP: tuple[str, ...] = ()


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """Immutable: a change makes a new Settings (`changed`), which the node applies and publishes
    (`Node.apply_settings`); the core's parts read the current one when they use it."""

    # OpenAI-compatible endpoint
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str] = field(default_factory=list)
    rate_limit_per_minute: int = 60
    max_prompt_chars: int = 16000
    max_body_bytes: int = 2 * 1024 * 1024
    max_queue: int = 64
    # A streaming client that reads nothing for this long is treated as gone: its slot is freed.
    stall_timeout_s: float = 60.0
    # Extra origins allowed to call the API from a browser (the node's own origin always is).
    allowed_origins: list[str] = field(default_factory=list)
    # Extra Host header values accepted (DNS rebinding guard); loopback names always are.
    allowed_hosts: list[str] = field(default_factory=list)
    # Rate-limit loopback clients too when no API keys are set (off: local agent loops must not stall).
    rate_limit_loopback: bool = False
    # The completion cap for requests that set no max_tokens (0: until the context is full).
    default_max_tokens: int = 4096
    # Other names clients may use for the served model (apps with a hard-coded "gpt-4o-mini").
    model_aliases: list[str] = field(default_factory=list)

    # Model and verifier
    model: str = ""
    model_alias: str = ""
    n_gpu_layers: int = -1
    n_ctx: int = 4096
    parallel: int = 4
    n_threads: int = 0
    verifier_start_timeout_s: float = 300.0
    draft_lookup: bool = True  # the verifier's own prompt-lookup drafter (adapts to what it gets accepted)
    # A GGUF for /v1/embeddings; empty: the served model's own embeddings.
    embedding_model: str = ""
    # A small GGUF with the model's tokenizer that scouts draft with (sent to them); empty: the
    # smallest such GGUF in the models folder, if any.
    draft_model: str = ""

    # Sidecar (shard-daemon)
    sidecar: bool = True
    daemon_path: str = ""
    control_port: int = 9091
    tcp_port: int = 4001
    ws_port: int = 0
    webrtc: bool = True  # WebRTC-direct for browsers on other machines (pages served over https too)
    webrtc_port: int = 0  # its UDP port; 0: the WebSocket port's number
    bootstrap: list[str] = field(default_factory=lambda: list(DEFAULT_BOOTSTRAP))
    p2p_host: str = "0.0.0.0"  # where peers reach the sidecar (the control API is always 127.0.0.1)
    mdns: bool = True  # find peers on the local network
    target_peers: int = 32  # peers kept connected; above 1.5x the least useful are closed
    relay_server: bool = True  # relay (v2, limited) for NATed peers when AutoNAT finds this node public
    reach_private_addrs: bool = False  # AutoNAT counts private IP ranges as reachable (LANs, namespace tests)
    # Who may receive this user's prompts as draft work: "local" (scouts on this machine),
    # "lan" (the local network), "peers" (the peer ids in trusted_peers), "anyone".
    prompt_privacy: str = "local"
    trusted_peers: list[str] = field(default_factory=list)
    # A scout's pairing key (`shard scout --pair`): else it reads <data dir>/pair.key (network/pairing.py).
    pair_key: str = ""
    # Share of requests sent to scouts that a golden ticket follows, later (a check of honesty).
    golden_rate: float = 0.1
    # Scouts on this machine share its cores: they draft only while that measures faster than
    # without them (coop/local_gate.py). False: they always draft (benchmarks of a remote scout).
    local_scout_gate: bool = True
    # Share of answers from a remote Oracle that are spot-checked: by the local model when this node
    # has the Oracle's model (any sampling), else (greedy only) asked again of another Oracle.
    spot_check_rate: float = 0.1
    # With a model of its own, send requests to Oracles on the network first (this node's own model
    # then checks their answers, see spot_check_rate); with none connected, generate here.
    prefer_network: bool = False
    # A remote Oracle must send a first token within this long (however often it says "queued"),
    # and may then be silent no longer than this; else the request goes to another Oracle.
    remote_timeout_s: float = 300.0

    # Files and logs
    data_dir: str = ""
    log_level: str = "INFO"

    # The tray app
    network_only: bool = False  # the user chose to serve no model of their own (first-run choice)
    update_check: bool = True  # look for new versions in a signed feed (a notification, never an install)
    update_feed_url: str = "https://shard-node.github.io/updates/feed.json"
    notifications: list[str] = field(default_factory=lambda: ["peer_joined", "credit", "model_downloaded", "update"])

    def __post_init__(self) -> None:
        if not self.data_dir:
            object.__setattr__(self, "data_dir", str(paths.default_data_dir()))  # frozen: set once, here

    def changed(self, **changes: Any) -> Settings:
        """A new Settings with `changes` (each coerced as the config file's values are), checked."""
        unknown = sorted(set(changes) - set(_FIELDS))
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(unknown)}")
        new = dataclasses.replace(self, **{k: _coerce(k, v) for k, v in changes.items()})
        new.validate()
        return new

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def api_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/v1"

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0-65535, got {self.port}")
        for name in (
            "rate_limit_per_minute",
            "max_prompt_chars",
            "max_body_bytes",
            "n_ctx",
            "parallel",
            "remote_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.default_max_tokens < 0:
            raise ConfigError(f"default_max_tokens must be >= 0, got {self.default_max_tokens}")
        if not 1 <= self.target_peers <= 1000:
            raise ConfigError(f"target_peers must be 1-1000, got {self.target_peers}")
        if self.max_queue < 0:
            raise ConfigError(f"max_queue must be >= 0, got {self.max_queue}")
        if not 0.0 <= self.spot_check_rate <= 1.0:
            raise ConfigError(f"spot_check_rate must be between 0 and 1, got {self.spot_check_rate}")
        if not 0.0 <= self.golden_rate <= 1.0:
            raise ConfigError(f"golden_rate must be between 0 and 1, got {self.golden_rate}")
        if self.prompt_privacy not in PRIVACY_LEVELS:
            raise ConfigError(f"prompt_privacy must be one of {', '.join(PRIVACY_LEVELS)}, got {self.prompt_privacy!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def env_name(field_name: str) -> str:
    return "SHARD_" + field_name.upper()


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML or environment value into the field's type, or say clearly what is wrong."""
    default = _FIELDS[name].default
    if _FIELDS[name].default_factory is not dataclasses.MISSING:  # list fields
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(f"{name} must be a list of strings")
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use {value!r} as {type(default).__name__}") from None


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"config file {path} has unknown settings: {', '.join(unknown)}")
    return {k: _coerce(k, v) for k, v in data.items()}


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    return {name: _coerce(name, environ[env_name(name)]) for name in _FIELDS if env_name(name) in environ}


def config_file_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("SHARD_CONFIG", "") or paths.default_config_file())


def save_settings(changes: Mapping[str, Any], path: Path) -> None:
    """Merge `changes` into the TOML file at `path`, atomically (a crash leaves the old file)."""
    import tomli_w

    unknown = sorted(set(changes) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)}")
    current = read_config_file(path)
    current.update({k: _coerce(k, v) for k, v in changes.items()})
    Settings(**current).validate()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(tomli_w.dumps(current), encoding="utf-8")
    os.replace(tmp, path)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Layer the sources in order; flags whose value is None were not given and change nothing."""
    environ = os.environ if environ is None else environ
    if config_file is None:
        config_file = config_file_path(environ)
    values: dict[str, Any] = {}
    values.update(read_config_file(config_file))
    values.update(read_environment(environ))
    for name, value in (flags or {}).items():
        if value is not None and name in _FIELDS:
            values[name] = value
    settings = Settings(**values)
    settings.validate()
    return settings
