"""Status displays: `tmrl status` against a real relay, the live view of `tmrl run`, the benchmark tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from tmrl.cli.benchreport import END, START, results_markdown, update_readme
from tmrl.cli.main import main
from tmrl.cli.status import format_status
from tmrl.config import load_config
from tmrl.errors import TmrlError
from tmrl.net.config import RelayConfig
from tmrl.net.testing import RelayThread
from tmrl.run import RunStatus, StatusCollector, render_status, write_json_atomic


def test_status_of_a_real_relay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with RelayThread(RelayConfig(port=0)) as relay:
        port = relay.config.port
        assert main(["status", "--data-dir", str(tmp_path), "--port", str(port)]) == 0
        out = capsys.readouterr().out
        assert "trainer" in out and "not connected" in out and "weights version" in out
        assert main(["status", "--data-dir", str(tmp_path), "--port", str(port), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["workers"] == [] and doc["samples_in"] == 0
        assert format_status(doc).count("\n") >= 5


def test_status_without_relay_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with RelayThread(RelayConfig(port=0)) as relay:
        port = relay.config.port
    assert main(["status", "--data-dir", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tmrl: error: cannot reach the relay") and err.count("\n") == 1


def test_live_view_reads_role_status_files(tmp_path: Path) -> None:
    config = load_config(data_dir=tmp_path, environ={}, overrides=["run.workers=2", "relay.port=1"])
    status_dir = config.run_dir / "status"
    status_dir.mkdir(parents=True)
    write_json_atomic(
        status_dir / "worker-0.json",
        {"episodes": 3, "steps": 300, "timeouts": 1, "recent_returns": [1.0, 3.0], "last_return": 3.0,
         "weight_version": 4},
    )  # fmt: skip
    write_json_atomic(
        status_dir / "worker-1.json",
        {"episodes": 2, "steps": 200, "timeouts": 0, "recent_returns": [5.0], "last_return": 5.0,
         "last_test_return": 7.5, "weight_version": 5},
    )  # fmt: skip
    write_json_atomic(
        status_dir / "trainer.json",
        {
            "updates": 900,
            "updates_per_s": 12.5,
            "buffer_fill": 500,
            "buffer_capacity": 1000,
            "weight_version": 6,
            "best_test": {"return": 812.25, "episodes": 3, "weight_version": 5, "updates": 500},
        },
    )
    collector = StatusCollector(config)
    st = collector.collect()
    collector.close()
    assert (st.episodes, st.env_steps, st.timeouts) == (5, 500, 1)
    assert st.mean_return == pytest.approx(3.0)
    assert st.test_return == 7.5 and st.worker_weight_version == 4 and st.weight_version == 6
    assert st.workers_connected is None  # no relay on port 1
    console = Console(record=True, width=100)
    console.print(render_status(st, config))
    text = console.export_text()
    assert "500 / 1000 (50.0 %)" in text and "6 / 4" in text and "- / 2" in text
    assert "episodes=5" in st.line() and "updates/s=12.5" in st.line()
    assert st.best_test == 812.25 and "best=812.2" in st.line() and "812.2" in text
    console.print(render_status(RunStatus(), config))  # everything unknown still renders


def test_bench_tables(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    with pytest.raises(TmrlError, match="no benchmark results"):
        results_markdown(results)
    (results / "relay.json").write_text(
        json.dumps(
            {
                "bench": "relay",
                "date": "2026-01-01",
                "machine": {"cpus": 2},
                "figures": [
                    {"name": "1 worker | LIDAR", "unit": "samples/s", "ours": 123456.0, "anchor": 1000.0,
                     "anchor_name": "tlspyo", "ratio": 123.456, "target": ">= 20x", "met": True, "note": ""},
                    {"name": "weights", "unit": "ms", "ours": 60.0, "anchor": None, "ratio": None,
                     "target": "<= 50 ms", "met": False, "note": "loaded"},
                ],
            }
        )
    )  # fmt: skip
    tables = results_markdown(results)
    assert "#### relay (2026-01-01, 2 CPUs)" in tables
    assert (
        "| 1 worker \\| LIDAR | 1.23e+05 samples/s | 1,000 samples/s (tlspyo) | 123.46x | >= 20x | yes |"
        in tables
    )
    assert "| weights | 60.00 ms | - | - | <= 50 ms | **no** | loaded |" in tables
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\noutro\n")
    update_readme(readme, tables)
    text = readme.read_text()
    assert "old" not in text and tables in text and text.startswith("intro") and text.endswith("outro\n")
