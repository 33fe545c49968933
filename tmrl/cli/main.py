"""``tmrl`` and its subcommands; ``tmrl-server``, ``tmrl-worker``, ``tmrl-trainer``.

Every command takes the configuration options (``--data-dir``, ``--config``, ``--set``) and its own flags; a
flag tied to a configuration key overrides it (``--workers 2`` is ``--set run.workers=2``). A ``TmrlError`` is
printed as one line ``tmrl: error: ...`` and exits with status 2; Ctrl-C exits with 130. Heavy modules (torch,
the games) are imported inside the command that needs them, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tmrl.errors import ConfigError, TmrlError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------------------------------------------
# Parser plumbing


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default; for flags tied to a configuration key, the key and its built-in default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        key = getattr(action, "config_key", None)
        if key is not None:
            return (
                f"{action.help} (default: configuration key {key}, built-in default {_builtin_default(key)})"
            )
        return super()._get_help_string(action) or ""


def _builtin_default(key: str) -> str:
    from tmrl.config import TmrlConfig, toml_value

    node: Any = TmrlConfig.model_construct()
    for part in key.split("."):
        model_fields = type(node).model_fields
        info = model_fields[part]
        node = info.get_default(call_default_factory=True)
    if hasattr(node, "get_secret_value"):
        return "(secret)"
    if node is None:
        return "unset"
    return toml_value(node.model_dump(mode="json") if hasattr(node, "model_dump") else _jsonable(node))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _config_flag(parser: argparse.ArgumentParser, *names: str, key: str, **kwargs: Any) -> None:
    """A flag overriding configuration key ``key``; its value is None unless given."""
    action = parser.add_argument(*names, default=None, **kwargs)
    action.config_key = key  # type: ignore[attr-defined]
    flags: list[tuple[str, str]] = parser.get_default("_config_flags") or []
    parser.set_defaults(_config_flags=[*flags, (action.dest, key)])


def _common_options() -> argparse.ArgumentParser:
    from tmrl.config import default_data_dir

    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("configuration")
    group.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="data directory: config.toml and runs/ (env TMRL_DATA_DIR; else $XDG_DATA_HOME/tmrl)",
    )
    group.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="configuration file instead of <data-dir>/config.toml (env TMRL_CONFIG)",
    )
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one configuration value (repeatable); same as env TMRL_<SECTION>__<KEY>=VALUE",
    )
    group.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    return common


def load(args: argparse.Namespace) -> Any:
    """The ``TmrlConfig`` for this invocation: file, then environment, then ``--set``, then dedicated flags."""
    from tmrl.config import load_config, toml_value

    overrides = list(args.overrides)
    for dest, key in getattr(args, "_config_flags", None) or []:
        value = getattr(args, dest)
        if value is not None:
            overrides.append(f"{key}={toml_value(_jsonable(value))}")
    return load_config(data_dir=args.data_dir, config_file=args.config, overrides=overrides)


# --------------------------------------------------------------------------------------------------------------
# Commands


def cmd_run(args: argparse.Namespace) -> int:
    from tmrl.run import Supervisor

    config = load(args)
    return Supervisor(
        config, fresh=args.fresh, duration=args.duration, live=getattr(args, "live", None)
    ).run()


def cmd_server(args: argparse.Namespace) -> int:
    from tmrl.run import relay_main

    config = load(args)
    _watch_parent(args)
    return relay_main(config)


def cmd_worker(args: argparse.Namespace) -> int:
    from tmrl.worker import worker_main

    config = load(args)
    _role_logging()
    _watch_parent(args)
    return worker_main(config, worker_id=args.id)


def cmd_trainer(args: argparse.Namespace) -> int:
    from tmrl.run import trainer_main as run_trainer

    config = load(args)
    _role_logging()
    _watch_parent(args)
    return run_trainer(config, fresh=args.fresh)


def cmd_test(args: argparse.Namespace) -> int:
    from tmrl.worker import test_main

    config = load(args)
    _passive_omp()
    return test_main(config, weights=args.weights, episodes=args.episodes, trace=args.trace)


def cmd_trace(args: argparse.Namespace) -> int:
    from tmrl.traces import ending, newest_trace, read_trace

    if not args.seconds > 0.0:
        raise ConfigError(f"--seconds must be > 0, not {args.seconds}")
    path = args.file
    if path is None:
        path = newest_trace(load(args).run_dir / "traces")
        print(f"{path}:")
    print(ending(read_trace(path), seconds=args.seconds))
    return 0


def cmd_record_reward(args: argparse.Namespace) -> int:
    from tmrl.envs import record_reward

    config = load(args)
    output = Path(args.output if args.output is not None else config.env.reward.path).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    record_reward(config.game_config(), output)
    print(f"reward trajectory written to {output}")
    return 0


def cmd_check_env(args: argparse.Namespace) -> int:
    from tmrl.cli.check_env import check_env

    config = load(args)
    _passive_omp()
    return check_env(config, driver=args.driver, steps=args.steps, output=args.output, every=args.every)


def cmd_status(args: argparse.Namespace) -> int:
    from tmrl.cli.status import status_command

    config = load(args)
    return status_command(config, as_json=args.json, watch=args.watch)


def cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    from tmrl.cli.benchreport import results_markdown, update_readme

    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "common.py").exists():
        raise TmrlError("the benchmarks live in the source checkout (bench/); run `tmrl bench` from a clone")
    if not (args.report or args.update_readme):
        names = ["core", "relay", "train", "jitter"] if args.which == "all" else [args.which]
        for name in names:
            if not (root / "bench" / f"{name}.py").exists():
                raise TmrlError(f"benchmark bench/{name}.py is not in this checkout")
        for name in names:
            code = subprocess.call([sys.executable, "-m", f"bench.{name}"], cwd=root)
            if code != 0:
                raise TmrlError(
                    f"benchmark bench/{name}.py failed with exit code {code} (its output is above)"
                )
        return 0
    tables = results_markdown(root / "bench" / "results")
    if args.update_readme:
        update_readme(root / "README.md", tables)
        print(f"benchmark tables written into {root / 'README.md'}")
    else:
        sys.stdout.write(tables)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from tmrl.rl.metrics import plot_run

    config = load(args)
    run_dir = _run_dir(config, args.run)
    out = Path(args.output) if args.output else run_dir / "curves.png"
    plot_run(run_dir, out)
    print(f"learning curves written to {out}")
    return 0


def _run_dir(config: Any, run: str | None) -> Path:
    """A run given by name (under <data-dir>/runs/) or by path; the configured run when omitted."""
    if run is None:
        path = config.run_dir
    elif os.sep in run or run.startswith("."):
        path = Path(run).expanduser()
    else:
        path = config.data_dir / "runs" / run
    if not path.is_dir():
        raise TmrlError(f"run directory {path} does not exist; start a run with `tmrl run --name NAME`")
    return path


def cmd_cert(args: argparse.Namespace) -> int:
    from tmrl.net.tls import create_self_signed

    config = load(args)
    directory = Path(args.dir) if args.dir else config.data_dir / "tls"
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    if (cert.exists() or key.exists()) and not args.force:
        raise TmrlError(f"{cert} or {key} already exists; pass --force to replace them")
    hosts = list(dict.fromkeys([*args.hosts, "localhost", "127.0.0.1"]))
    create_self_signed(cert, key, hosts=hosts, days=args.days)
    print(f"certificate: {cert}\nprivate key: {key}")
    print(
        "use them with: --set relay.tls=true "
        f'--set relay.tls_cert="{cert}" --set relay.tls_key="{key}" (workers and trainer need only the cert)'
    )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from tmrl.config import render_toml

    config = load(args)
    if args.path:
        print(args.config or config.data_dir / "config.toml")
    else:
        sys.stdout.write(render_toml(config, title="Effective tmrl configuration"))
    return 0


def _passive_omp() -> None:
    """Idle OpenMP threads sleep instead of spinning (set before torch loads): on a machine shared with a
    real-time game, spinning threads steal the cores (measured here under load: 0.4 vs 9.6 SAC updates/s)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _role_logging() -> None:
    """Log lines of the long-running roles (relay, trainer, worker): INFO and above, timestamped, to stderr."""
    import logging

    _passive_omp()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _watch_parent(args: argparse.Namespace) -> None:
    if args.parent_pid is not None:
        from tmrl.run import watch_parent

        watch_parent(args.parent_pid)


# --------------------------------------------------------------------------------------------------------------
# The parser


def build_parser(prog: str = "tmrl") -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog=prog,
        formatter_class=_Formatter,
        description="Distributed real-time reinforcement learning on TrackMania 2020 and a built-in racing game.",
        epilog="Configuration: <data-dir>/config.toml (created with comments on first use), overridden by "
        "TMRL_<SECTION>__<KEY> environment variables and --set SECTION.KEY=VALUE. `tmrl config` prints it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands: dict[str, argparse.ArgumentParser] = {}
    parser.set_defaults(_commands=commands)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, parents=[common], formatter_class=_Formatter, help=help_text, description=help_text
        )
        p.set_defaults(_handler=handler)
        commands[name] = p
        return p

    games = ["carracing", "tm2020"]

    p = add("run", cmd_run, "train on this machine: relay + trainer + N workers, each with its own game")
    _config_flag(p, "--name", key="run.name", help="run name")
    _config_flag(p, "--game", key="env.game", choices=games, help="game the workers play")
    _config_flag(p, "--workers", key="run.workers", type=int, help="number of rollout workers")
    _config_flag(p, "--port", key="relay.port", type=int, help="relay TCP port (0 = any free port)")
    p.add_argument("--fresh", action="store_true", help="start over: move an existing run of that name aside")
    p.add_argument(
        "--duration", type=float, default=0.0, help="stop by itself after this many seconds (0 = never)"
    )
    p.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="live status view (default: on when stdout is a terminal); --no-live prints a status line every few "
        "seconds instead",
    )

    p = add("server", cmd_server, "the relay server (same as tmrl-server)")
    _config_flag(p, "--host", key="relay.host", help="address to bind")
    _config_flag(p, "--port", key="relay.port", type=int, help="TCP port")

    p = add("worker", cmd_worker, "a rollout worker with its game (same as tmrl-worker)")
    _config_flag(p, "--game", key="env.game", choices=games, help="game to play")
    _config_flag(p, "--host", key="relay.host", help="relay address")
    _config_flag(p, "--port", key="relay.port", type=int, help="relay TCP port")
    _config_flag(
        p, "--episodes", key="worker.max_episodes", type=int, help="stop after this many episodes (0 = never)"
    )
    p.add_argument(
        "--id",
        default=f"{os.uname().nodename if hasattr(os, 'uname') else 'worker'}-{os.getpid()}",
        help="worker id (unique per relay)",
    )

    p = add("trainer", cmd_trainer, "the trainer (same as tmrl-trainer); resumes the run's checkpoint if any")
    _config_flag(p, "--name", key="run.name", help="run name")
    _config_flag(p, "--host", key="relay.host", help="relay address")
    _config_flag(p, "--port", key="relay.port", type=int, help="relay TCP port")
    p.add_argument("--fresh", action="store_true", help="ignore the run's checkpoint and start from scratch")

    p = add("test", cmd_test, "drive with a policy (no training) and report returns and lap times")
    _config_flag(p, "--name", key="run.name", help="run whose weights are used")
    _config_flag(p, "--game", key="env.game", choices=games, help="game to play")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="actor weights file (default: the run's best actor, else its latest; the shipped actor on the "
        "built-in game)",
    )
    p.add_argument("--episodes", type=int, default=3, help="test episodes to drive")
    p.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="folder for a step-by-step trace of each episode (CSV: episode-NNNNNN.csv)",
    )

    p = add(
        "trace", cmd_trace, "show how a traced episode ended (speed, pedals, steering over its last seconds)"
    )
    _config_flag(
        p, "--name", key="run.name", help="run whose newest test-episode trace is shown (without FILE)"
    )
    p.add_argument(
        "file",
        type=Path,
        nargs="?",
        default=None,
        help="trace file (tmrl test --trace, or <run dir>/traces/<worker>/test-NNNNNN.csv); default: the run's "
        "newest test-episode trace",
    )
    p.add_argument("--seconds", type=float, default=2.0, help="seconds before the end to show")

    p = add("record-reward", cmd_record_reward, "record the reference trajectory the reward is computed from")
    _config_flag(
        p, "--game", key="env.game", choices=games, help="game (carracing: the scripted pilot drives)"
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="output file (default: env.reward.path, else <data-dir>/rewards/<game>.json)",
    )

    p = add("check-env", cmd_check_env, "drive and show what the agent sees (LIDAR beams drawn on the frame)")
    _config_flag(p, "--game", key="env.game", choices=games, help="game")
    p.add_argument(
        "--driver",
        choices=["pilot", "keyboard", "random"],
        default="pilot",
        help="who drives: the scripted pilot (built-in game), the keyboard, or random actions",
    )
    p.add_argument("--steps", type=int, default=200, help="time steps to drive")
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder for PNG snapshots (default: <data-dir>/check-env); used when there is no display",
    )
    p.add_argument("--every", type=int, default=20, help="save one PNG every this many steps")

    p = add("status", cmd_status, "print the relay's status (workers, trainer, throughput, drops, weights)")
    _config_flag(p, "--host", key="relay.host", help="relay address")
    _config_flag(p, "--port", key="relay.port", type=int, help="relay TCP port")
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.add_argument("--watch", type=float, default=0.0, help="refresh every this many seconds (0 = once)")

    p = add("bench", cmd_bench, "run the benchmarks (from the source checkout); results in bench/results/")
    p.add_argument(
        "which",
        nargs="?",
        default="all",
        choices=["all", "core", "relay", "train", "jitter"],
        help="which benchmark",
    )
    p.add_argument(
        "--report", action="store_true", help="print bench/results/*.json as markdown tables, run nothing"
    )
    p.add_argument(
        "--update-readme", action="store_true", help="write those tables into README.md's benchmark section"
    )

    p = add("plot", cmd_plot, "render a run's learning curves to PNG")
    p.add_argument("run", nargs="?", default=None, help="run name or run directory (default: run.name)")
    p.add_argument("--output", type=Path, default=None, help="PNG file (default: <run dir>/curves.png)")

    p = add("cert", cmd_cert, "create a self-signed TLS certificate and key for the relay")
    p.add_argument("--dir", type=Path, default=None, help="output folder (default: <data-dir>/tls)")
    p.add_argument(
        "--host",
        dest="hosts",
        action="append",
        default=[],
        help="extra host name or IP the certificate is valid for (repeatable; localhost and 127.0.0.1 always)",
    )
    p.add_argument("--days", type=int, default=3650, help="validity in days")
    p.add_argument("--force", action="store_true", help="replace existing files")

    p = add("config", cmd_config, "print the effective configuration (file + environment + flags) as TOML")
    p.add_argument("--path", action="store_true", help="print only the configuration file's path")
    return parser


# --------------------------------------------------------------------------------------------------------------
# Entry points


def main(argv: Sequence[str] | None = None, prog: str = "tmrl", role: str | None = None) -> int:
    """``tmrl``: parse, dispatch, and turn user errors into one line and exit status 2.

    With ``role`` (``server``, ``worker``, ``trainer``) the arguments are that subcommand's alone, under ``prog``.
    """
    try:
        parser = build_parser(prog)
        if role is not None:
            parser = parser.get_default("_commands")[role]
            parser.prog = prog
        args = parser.parse_args(argv)
        code: int = args._handler(args)
        return code
    except TmrlError as exc:
        print(f"{prog}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _role_main(role: str, prog: str) -> int:
    return main(sys.argv[1:], prog=prog, role=role)


def server_main() -> int:
    """``tmrl-server``."""
    return _role_main("server", "tmrl-server")


def worker_main() -> int:
    """``tmrl-worker``."""
    return _role_main("worker", "tmrl-worker")


def trainer_main() -> int:
    """``tmrl-trainer``."""
    return _role_main("trainer", "tmrl-trainer")


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "load", "main", "server_main", "trainer_main", "worker_main"]
