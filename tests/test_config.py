"""Settings layer as documented: defaults < config file < environment < flags; bad values are named."""

from pathlib import Path

import pytest

from shard.config import ConfigError, load_settings


def test_layers_override_in_order(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('port = 9000\nrate_limit_per_minute = 10\napi_keys = ["from-file"]\nlog_level = "DEBUG"\n')
    env = {"SHARD_PORT": "9100", "SHARD_API_KEYS": "a, b", "SHARD_SIDECAR": "false"}
    s = load_settings({"port": 9200, "model": None}, config_file=cfg, environ=env)
    assert s.port == 9200  # flag beats env beats file
    assert s.rate_limit_per_minute == 10  # file beats default
    assert s.api_keys == ["a", "b"]  # env list, comma separated
    assert s.sidecar is False
    assert s.log_level == "DEBUG"
    assert s.max_prompt_chars == 16000 and s.host == "127.0.0.1"  # defaults


def test_defaults_without_any_source(tmp_path: Path) -> None:
    s = load_settings(config_file=tmp_path / "missing.toml", environ={})
    assert (s.host, s.port, s.rate_limit_per_minute, s.max_prompt_chars) == ("127.0.0.1", 8000, 60, 16000)
    assert s.api_url == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"SHARD_PORT": "eighty"}, "port"),
        ({"SHARD_PORT": "70000"}, "port must be"),
        ({"SHARD_RATE_LIMIT_PER_MINUTE": "0"}, "rate_limit_per_minute must be positive"),
        ({"SHARD_LOG_LEVEL": "LOUD"}, "log_level"),
        ({"SHARD_SIDECAR": "maybe"}, "sidecar"),
    ],
)
def test_bad_environment_values_are_named(tmp_path: Path, env: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(config_file=tmp_path / "none.toml", environ=env)


def test_bad_config_file_is_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("port = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_file=cfg, environ={})
    cfg.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown settings: prot"):
        load_settings(config_file=cfg, environ={})


def test_save_merges_atomically_and_validates(tmp_path: Path) -> None:
    from shard.config import save_settings

    cfg = tmp_path / "sub" / "config.toml"
    save_settings({"port": 8100, "bootstrap": ["/ip4/127.0.0.1/tcp/4001"]}, cfg)
    save_settings({"n_gpu_layers": 10}, cfg)
    s = load_settings(config_file=cfg, environ={})
    assert (s.port, s.n_gpu_layers, s.bootstrap) == (8100, 10, ["/ip4/127.0.0.1/tcp/4001"])
    with pytest.raises(ConfigError):
        save_settings({"port": 99999}, cfg)
    with pytest.raises(ConfigError, match="unknown"):
        save_settings({"colour": "blue"}, cfg)
    assert load_settings(config_file=cfg, environ={}).port == 8100  # the failed saves changed nothing


def test_settings_are_immutable_and_a_change_makes_a_new_one(tmp_path: Path) -> None:
    import dataclasses

    s = load_settings(config_file=tmp_path / "missing.toml", environ={"SHARD_DATA_DIR": str(tmp_path)})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.prompt_privacy = "anyone"  # type: ignore[misc]
    t = s.changed(prompt_privacy="lan", trusted_peers="a, b")
    assert (t.prompt_privacy, t.trusted_peers, s.prompt_privacy) == ("lan", ["a", "b"], "local")
    with pytest.raises(ConfigError, match="prompt_privacy"):
        s.changed(prompt_privacy="everyone")
    with pytest.raises(ConfigError, match="unknown settings: nonsense"):
        s.changed(nonsense=1)


async def test_a_settings_change_goes_through_the_node(tmp_path: Path) -> None:
    """Checked, saved, in use at once (a new Settings the parts read) and published; ports wait for
    the next start; a bad value changes nothing."""
    from shard.node import Node, NodeEvent

    cfg = tmp_path / "config.toml"
    node = Node(load_settings({"data_dir": str(tmp_path / "data")}, config_file=cfg, environ={}), cfg)
    seen: list[NodeEvent] = []
    node.subscribe(seen.append)
    before = node.settings
    applied = await node.apply_settings({"prompt_privacy": "anyone", "port": 9123, "update_check": before.update_check})
    assert (applied.now, applied.needs_restart, applied.refused) == (["prompt_privacy"], ["port"], {})
    assert node.settings is not before and node.settings.prompt_privacy == "anyone"
    assert node.settings.port == before.port, "a port is read at start: in use from the next one"
    assert node.coop.admitted_scouts() == []  # the parts read the current Settings (and no sidecar here)
    saved = load_settings({}, config_file=cfg, environ={})
    assert (saved.prompt_privacy, saved.port) == ("anyone", 9123)
    assert [e.data for e in seen if e.kind == "settings"] == [{"now": ["prompt_privacy"], "needs_restart": ["port"]}]
    with pytest.raises(ConfigError):
        await node.apply_settings({"prompt_privacy": "everyone", "trusted_peers": ["x"]})
    assert node.settings.trusted_peers == [] and load_settings({}, config_file=cfg, environ={}).trusted_peers == []
    assert (await node.apply_settings({"prompt_privacy": "anyone"})).now == [], "no change, nothing applied"


def test_the_webrtc_settings_reach_the_sidecars_command_line(tmp_path: Path) -> None:
    """Issue 15: WebRTC-direct on by default (the daemon's own default port: the WebSocket port's
    number), a port of its own when set, off with `webrtc = false`."""
    from shard.network.sidecar import daemon_command

    def argv(**env: str) -> list[str]:
        s = load_settings(config_file=tmp_path / "missing.toml", environ={"SHARD_DATA_DIR": str(tmp_path), **env})
        return daemon_command(Path("shard-daemon"), s)

    default = argv()
    assert "--no-webrtc" not in default and "--webrtc-port" not in default
    own = argv(SHARD_WEBRTC_PORT="4555")
    assert own[own.index("--webrtc-port") + 1] == "4555"
    off = argv(SHARD_WEBRTC="false", SHARD_WEBRTC_PORT="4555")
    assert "--no-webrtc" in off and "--webrtc-port" not in off
