"""The configuration system: commented default file, overrides by env and flags, clear errors, snapshots."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tmrl.config import (
    CONFIG_FILE_NAME,
    TmrlConfig,
    default_data_dir,
    load_config,
    render_toml,
    write_snapshot,
)
from tmrl.errors import ConfigError


def _load(tmp_path: Path, overrides=(), environ=None, **kw) -> TmrlConfig:
    return load_config(data_dir=tmp_path, overrides=overrides, environ=environ or {}, **kw)


def test_first_use_writes_commented_defaults(tmp_path: Path) -> None:
    config = _load(tmp_path)
    path = tmp_path / CONFIG_FILE_NAME
    assert path.exists()
    text = path.read_text()
    # Every key line has a comment line right above it (its description).
    lines = text.splitlines()
    keys = [i for i, ln in enumerate(lines) if ln and not ln.startswith(("#", "[")) and "=" in ln]
    assert len(keys) > 50
    for i in keys:
        assert lines[i - 1].startswith("#"), f"no comment above {lines[i]!r}"
    # The file holds exactly the defaults.
    doc = tomllib.loads(text)
    assert TmrlConfig.model_validate({**doc, "data_dir": tmp_path}) == TmrlConfig(data_dir=tmp_path)
    assert config.run.name == "default"
    assert config.run_dir == tmp_path / "runs" / "default"
    # The reward trajectory defaults into the data directory, per game and track.
    assert config.env.reward.path == tmp_path / "rewards" / "carracing-seed0.json"


def test_every_section_is_in_the_file(tmp_path: Path) -> None:
    doc = tomllib.loads(render_toml(TmrlConfig()))
    for name, info in TmrlConfig.model_fields.items():
        if not info.exclude:
            assert name in doc, name
    assert "data_dir" not in doc
    assert doc["env"]["reward"]["mode"] == "auto"  # nested tables are written too


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    _load(tmp_path)
    path = tmp_path / CONFIG_FILE_NAME
    path.write_text(path.read_text().replace("batch_size = 128", "batch_size = 64"))
    assert _load(tmp_path).trainer.batch_size == 64
    env = {
        "TMRL_TRAINER__BATCH_SIZE": "96",
        "TMRL_RUN__WORKERS": "3",
        "TMRL_ENV__REWARD__MODE": "trajectory",
    }
    config = _load(tmp_path, environ=env)
    assert (config.trainer.batch_size, config.run.workers, config.env.reward.mode) == (96, 3, "trajectory")
    config = _load(tmp_path, environ=env, overrides=["trainer.batch_size=32", "env.lidar.origin=[60, 40]"])
    assert config.trainer.batch_size == 32
    assert config.env.lidar.origin == (60, 40)
    assert config.run.workers == 3


def test_values_keep_their_types(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        environ={"TMRL_RELAY__SECRET": "12345"},
        overrides=[
            "relay.host=0.0.0.0",
            "run.name=exp.1",
            "algorithm.lr_actor=1e-3",
            "worker.random_until_weights=false",
        ],
    )
    assert config.relay.secret.get_secret_value() == "12345"
    assert config.relay.host == "0.0.0.0"
    assert config.run.name == "exp.1"
    assert config.algorithm.lr_actor == pytest.approx(1e-3)
    assert config.worker.random_until_weights is False


@pytest.mark.parametrize(
    ("overrides", "environ", "needles"),
    [
        (["trainer.batchsize=3"], {}, ["unknown key 'trainer.batchsize'", "--set trainer.batchsize=3"]),
        (["trainer.batch_size=abc"], {}, ["trainer.batch_size", "'abc'", "--set"]),
        ([], {"TMRL_RUN__WORKERS": "0"}, ["run.workers", "TMRL_RUN__WORKERS"]),
        ([], {"TMRL_NOPE__X": "1"}, ["unknown key 'nope'", "TMRL_NOPE__X"]),
        (["novalue"], {}, ["SECTION.KEY=VALUE"]),
        (["data_dir.x=1"], {}, ["data_dir"]),
    ],
)
def test_bad_overrides_name_key_and_source(tmp_path: Path, overrides, environ, needles) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, overrides=overrides, environ=environ)
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg


def test_a_check_across_keys_blames_the_layer_that_set_one_last(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILE_NAME
    path.write_text("[algorithm]\nredq_n = 10\nredq_m = 2\nlr_final_scale = 0.1\n")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, overrides=["algorithm.redq_m=11"])
    assert "redq_m (11) must be <= redq_n (10)" in str(err.value) and "--set algorithm.redq_m=11" in str(
        err.value
    )
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, environ={"TMRL_ALGORITHM__LR_DECAY_STEPS": "[9, 8]"})
    assert "lr_decay_steps [9, 8]" in str(err.value) and "TMRL_ALGORITHM__LR_DECAY_STEPS" in str(err.value)
    path.write_text("[algorithm]\nredq_n = 3\nredq_m = 4\n")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path)
    assert str(path) in str(err.value)


def test_bad_file_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILE_NAME
    path.write_text('[trainer]\nbatch_size = 8\nbach = 1\n[relay]\nport = "x"\n')
    with pytest.raises(ConfigError) as err:
        _load(tmp_path)
    msg = str(err.value)
    assert "unknown key 'trainer.bach'" in msg and str(path) in msg
    assert "relay.port" in msg
    path.write_text("[trainer\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        _load(tmp_path)
    with pytest.raises(ConfigError, match="configuration file not found"):
        _load(tmp_path, config_file=tmp_path / "missing.toml")


def test_data_dir_resolution(tmp_path: Path) -> None:
    assert default_data_dir({"TMRL_DATA_DIR": str(tmp_path / "a")}) == tmp_path / "a"
    assert default_data_dir({"XDG_DATA_HOME": str(tmp_path / "x")}) == tmp_path / "x" / "tmrl"
    assert default_data_dir({}) == Path.home() / ".local" / "share" / "tmrl"
    config = load_config(environ={"TMRL_DATA_DIR": str(tmp_path / "d")})
    assert config.data_dir == tmp_path / "d"
    assert (tmp_path / "d" / CONFIG_FILE_NAME).exists()


def test_snapshot_round_trip(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        overrides=[
            "relay.secret=s3cr3t",
            "relay.tls=true",
            f'relay.tls_cert="{tmp_path / "c.pem"}"',
            "env.extra_telemetry=['steer', 'yaw_rate']",
            "model.hidden=[64, 64, 32]",
            "run.workers=2",
        ],
    )
    snap = tmp_path / "runs" / "x" / "config.toml"
    write_snapshot(config, snap)
    again = load_config(data_dir=tmp_path, config_file=snap, environ={})
    assert again == config
    assert again.relay.secret.get_secret_value() == "s3cr3t"


def test_gamma_and_alpha_are_resolved_for_the_games_time_step(tmp_path: Path) -> None:
    def rl(*sets: str) -> tuple[float | None, float | None]:
        algo = _load(tmp_path, overrides=list(sets)).rl().algorithm
        return algo.gamma, algo.alpha

    # The built-in game at 50 Hz keeps the 8 s horizon and the entropy bonus per second tuned at 25 Hz.
    assert rl() == pytest.approx((0.9975, 0.005))
    assert rl("env.rtgym.time_step_s=0.04") == pytest.approx((0.995, 0.01))
    assert rl('env.game="tm2020"') == pytest.approx((0.995, 0.01))  # TMRL's, at its 20 Hz
    assert rl("algorithm.gamma=0.99", "algorithm.alpha=0.2") == (0.99, 0.2)  # set values are used as set
