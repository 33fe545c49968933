"""Every command's --help lists every option with its default; user errors are one line and exit 2."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tmrl.cli.main import _Formatter, build_parser, main

COMMANDS = [
    "run",
    "server",
    "worker",
    "trainer",
    "test",
    "trace",
    "record-reward",
    "check-env",
    "status",
    "bench",
    "plot",
    "cert",
    "config",
]


def _commands() -> dict[str, argparse.ArgumentParser]:
    return build_parser().get_default("_commands")


def test_every_command_exists() -> None:
    assert sorted(_commands()) == sorted(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_every_default(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _commands()[name]
    formatter = _Formatter(prog=parser.prog)
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        text = formatter._get_help_string(action)
        assert "default" in text, f"{name} {action.option_strings or action.dest}: {text!r}"
    with pytest.raises(SystemExit) as code:
        main([name, "--help"])
    assert code.value.code == 0
    out = capsys.readouterr().out
    for action in parser._actions:
        for opt in action.option_strings:
            if action.help != argparse.SUPPRESS:
                assert opt in out


def test_entry_points_as_processes(tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    env = {**os.environ, "TMRL_DATA_DIR": str(tmp_path)}
    for exe in ("tmrl-server", "tmrl-worker", "tmrl-trainer"):
        out = subprocess.run(
            [str(bindir / exe), "--help"], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"usage: {exe} ")
        assert "--set SECTION.KEY=VALUE" in out.stdout


def test_user_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["config", "--data-dir", str(tmp_path), "--set", "trainer.nope=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("tmrl: error: ") and err.count("\n") == 1
    assert "trainer.nope" in err


def test_user_error_in_a_process_has_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "TMRL_DATA_DIR": str(tmp_path), "TMRL_RUN__WORKERS": "zero"}
    out = subprocess.run(
        [sys.executable, "-m", "tmrl.cli.main", "config"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "run.workers" in out.stderr and "TMRL_RUN__WORKERS" in out.stderr


def test_config_command_prints_effective_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--data-dir", str(tmp_path), "--set", "run.workers=4"]) == 0
    assert "workers = 4" in capsys.readouterr().out
    assert main(["config", "--data-dir", str(tmp_path), "--path"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "config.toml")
