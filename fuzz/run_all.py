"""Run every fuzz harness (``fuzz/*_fuzz.py``) for a fixed time and report runs and crashes.

Usage: ``python fuzz/run_all.py --seconds 600 [--only NAME ...] [--jobs 2] [--tolerate-known]``.

Each harness fuzzes with a fresh scratch directory as libFuzzer's *first* corpus
directory (where it writes new inputs) followed by the committed seeds in
``fuzz/corpus/<name>/``, so a run never changes the committed corpus. A crashing
input is kept under ``fuzz/crashes/<name>-crash-<sha1>`` (that directory ignores
itself in git). Exit status 1 when any harness crashed or failed to run.
``--tolerate-known`` sets ``FUZZ_TOLERATE_KNOWN=1`` so harnesses skip product bugs
already reported (see ``KNOWN_*`` in ``fuzz/properties.py``) and look for new ones.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS_DIR = FUZZ_DIR / "corpus"
CRASH_DIR = FUZZ_DIR / "crashes"
RSS_LIMIT_MB = 2048
#: One input running longer than this is reported as a hang (libFuzzer ``-timeout``).
INPUT_TIMEOUT_S = 25

_DONE = re.compile(r"^Done (\d+) runs in", re.MULTILINE)
_PROGRESS = re.compile(r"^#(\d+)\s", re.MULTILINE)
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass
class Outcome:
    name: str
    runs: int
    crashed: bool
    returncode: int
    seconds: float
    artifacts: list[Path]
    log: Path


def harnesses() -> dict[str, Path]:
    """``{name: script}`` for every ``<name>_fuzz.py`` next to this file."""
    return {path.name.removesuffix("_fuzz.py"): path
            for path in sorted(FUZZ_DIR.glob("*_fuzz.py"))}


def _ensure_crash_dir() -> None:
    CRASH_DIR.mkdir(exist_ok=True)
    ignore = CRASH_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# crashing inputs found by fuzz/run_all.py; never committed\n*\n")


def run_one(name: str, script: Path, seconds: int, log_dir: Path,
            tolerate_known: bool = False) -> Outcome:
    _ensure_crash_dir()
    scratch = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    corpus = CORPUS_DIR / name
    command = [
        sys.executable, str(script), str(scratch),
        *([str(corpus)] if corpus.is_dir() else []),
        f"-max_total_time={seconds}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-timeout={INPUT_TIMEOUT_S}",
        f"-artifact_prefix={CRASH_DIR}/{name}-",
        "-print_final_stats=1",
    ]
    env = dict(os.environ)
    if tolerate_known:
        env["FUZZ_TOLERATE_KNOWN"] = "1"
    log = log_dir / f"{name}.log"
    started = time.monotonic()
    try:
        with log.open("wb") as out:
            # The extra minute covers start-up and loading the corpus.
            completed = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                       timeout=seconds + 120, check=False, env=env)
        returncode = completed.returncode
    except subprocess.TimeoutExpired:
        returncode = -1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = log.read_text(errors="replace")
    done = _DONE.findall(text)
    progress = _PROGRESS.findall(text)
    runs = int(done[-1]) if done else (int(progress[-1]) if progress else 0)
    artifacts = [Path(match) for match in _ARTIFACT.findall(text)]
    return Outcome(name=name, runs=runs, crashed=returncode != 0 or bool(artifacts),
                   returncode=returncode, seconds=time.monotonic() - started,
                   artifacts=artifacts, log=log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600, help="fuzzing time per harness")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this harness (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="harnesses run in parallel")
    parser.add_argument("--tolerate-known", action="store_true",
                        help="skip the product bugs already reported (FUZZ_TOLERATE_KNOWN=1)")
    parser.add_argument("--logs", type=Path, default=None,
                        help="keep the libFuzzer logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    available = harnesses()
    selected = args.only or list(available)
    unknown = [name for name in selected if name not in available]
    if unknown:
        parser.error(f"unknown harness {unknown[0]!r}; known: {', '.join(available)}")
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="fuzz-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(pool.map(
            lambda name: run_one(name, available[name], args.seconds, log_dir,
                                args.tolerate_known), selected))
    print(f"{'harness':<14}{'runs':>12}{'seconds':>10}  result")
    for outcome in outcomes:
        result = "ok" if not outcome.crashed else f"CRASH (exit {outcome.returncode})"
        print(f"{outcome.name:<14}{outcome.runs:>12}{outcome.seconds:>10.0f}  {result}")
        for artifact in outcome.artifacts:
            print(f"    input kept: {artifact}")
        if outcome.crashed:
            print(f"    log: {outcome.log}")
    return 1 if any(outcome.crashed for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
