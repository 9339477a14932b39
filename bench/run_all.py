"""``make bench``: run every benchmark, save the results, refresh docs/performance.md.

    .venv/bin/python bench/run_all.py [--only NAME ...] [--quick]

Each benchmark script prints ``{"benchmarks": [...]}`` with ``--json``. The rows
are collected into ``bench/results/<date>.json`` and the table between the markers
in ``docs/performance.md`` is rewritten (metric, target, measured, ratio, machine,
date). Rows of benchmarks that were not run this time are kept from the old table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

#: script -> (arguments for a full run, arguments for --quick)
SUITE: dict[str, tuple[list[str], list[str]]] = {
    "actors": ([], ["--seconds", "0.5", "--restarts", "100"]),
    "store": ([], ["--seconds", "0.5"]),
    "vms": ([], ["--vms", "200", "--adopt", "100", "--crashes", "20"]),
    "sse": ([], []),
    "api_load": ([], ["--seconds", "3", "--vms", "10"]),
    "boot": ([], []),
    "guest_boot": ([], []),
}


def machine() -> str:
    model = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, Python {platform.python_version()}"


def run_one(name: str, args: list[str]) -> list[dict[str, Any]]:
    script = BENCH / f"{name}.py"
    if not script.exists():
        return []
    print(f"== bench/{name}.py {' '.join(args)}", flush=True)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), "--json", *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        return [{"name": f"bench/{name}.py failed (exit {proc.returncode})", "unit": "",
                 "target": 0, "measured": 0, "ratio": 0, "higher_is_better": True,
                 "bench": name}]
    rows: list[dict[str, Any]] = json.loads(proc.stdout)["benchmarks"]
    for row in rows:
        row["bench"] = name
    print(f"   {len(rows)} results in {time.monotonic() - started:.0f} s", flush=True)
    return rows


def render(rows: list[dict[str, Any]], when: str, where: str) -> str:
    lines = ["| benchmark | metric | target | measured | ratio to target | date |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        cmp = ">=" if row.get("higher_is_better") else "<="
        status = "" if row.get("ratio", 0) >= 1 else " (below target)"
        lines.append(
            f"| {row['bench']} | {row['name']} | {cmp} {row['target']:g} {row['unit']} | "
            f"{row['measured']:.4g} {row['unit']} | {row['ratio']:.2f}{status} | "
            f"{row.get('date', when)} |")
    return f"{BEGIN}\nMachine: {where}.\n\n" + "\n".join(lines) + f"\n{END}"


def old_rows() -> list[dict[str, Any]]:
    results = sorted((BENCH / "results").glob("*.json"))
    if not results:
        return []
    latest: list[dict[str, Any]] = json.loads(results[-1].read_text())["benchmarks"]
    return latest


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    parser.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    args = parser.parse_args()
    names = args.only or list(SUITE)
    when = time.strftime("%Y-%m-%d")
    fresh: list[dict[str, Any]] = []
    for name in names:
        full, quick = SUITE.get(name, ([], []))
        rows = run_one(name, quick if args.quick else full)
        for row in rows:
            row["date"] = when
        fresh.extend(rows)
    ran = {row["bench"] for row in fresh}
    rows = [r for r in old_rows() if r.get("bench") not in ran and r.get("bench") in SUITE]
    rows += fresh
    rows.sort(key=lambda r: (list(SUITE).index(r["bench"]) if r["bench"] in SUITE else 99))
    out = BENCH / "results" / f"{when}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "date": when, "benchmarks": rows},
                              indent=2) + "\n")
    table = render(rows, when, machine())
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    DOC.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _m: table, text,
                          flags=re.S))
    print(f"wrote {out.relative_to(ROOT)} and refreshed {DOC.relative_to(ROOT)}")
    below = [r for r in fresh if r.get("ratio", 0) < 1]
    for row in below:
        print(f"below target: {row['bench']}: {row['name']} ({row['ratio']:.2f})")


if __name__ == "__main__":
    main()
