"""Markdown tables from ``bench/results/*.json`` (``tmrl bench --report``), and the README section they fill.

``tmrl bench --update-readme`` replaces the text between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in
README.md with the tables, so the README always shows the figures last measured.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tmrl.errors import TmrlError

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-2):
            return f"{value:.3g}"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def results_markdown(results_dir: Path) -> str:
    """One table per results file: figure, ours, anchor, ratio, target, met, note."""
    files = sorted(results_dir.glob("*.json"))
    if not files:
        raise TmrlError(f"no benchmark results in {results_dir}; run `tmrl bench` first")
    parts = []
    for path in files:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TmrlError(
                f"{path}: unreadable benchmark results ({exc}); run the benchmark again"
            ) from None
        if not doc.get("figures"):
            continue
        machine = doc.get("machine", {})
        parts.append(
            f"#### {doc.get('bench', path.stem)} ({doc.get('date', '?')}, {machine.get('cpus', '?')} CPUs)\n"
        )
        parts.append("| figure | ours | anchor | ratio | target | met | note |")
        parts.append("| --- | ---: | ---: | ---: | --- | :---: | --- |")
        for fig in doc.get("figures", []):
            unit = fig.get("unit", "")
            anchor = fig.get("anchor")
            anchor_txt = "-" if anchor is None else f"{_num(anchor)} {unit} ({fig.get('anchor_name', '')})"
            met = fig.get("met")
            parts.append(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        str(fig.get("name", "")),
                        f"{_num(fig.get('ours'))} {unit}",
                        anchor_txt,
                        "-" if fig.get("ratio") is None else f"{fig['ratio']:.2f}x",
                        str(fig.get("target") or "-"),
                        "-" if met is None else ("yes" if met else "**no**"),
                        str(fig.get("note") or ""),
                    )
                )
                + " |"
            )
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def update_readme(readme: Path, tables: str) -> None:
    """Replace the bench section of ``readme`` with ``tables``."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise TmrlError(f"{readme} has no {START} ... {END} section to fill")
    new = re.sub(
        re.escape(START) + r".*?" + re.escape(END), lambda _: f"{START}\n{tables}{END}", text, flags=re.DOTALL
    )
    readme.write_text(new, encoding="utf-8")
