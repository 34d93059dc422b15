"""Run the test suite many times in a row beside a CPU hog, and report every failure.

A test that passes on an idle machine but fails when the machine is busy is a
test that will one day fail in CI and throw a good change away. This script makes
the busy machine on purpose: it starts ``--hogs`` processes that spin on a core
each (two by default: a 2-core machine fully loaded), runs ``python -m pytest``
``--rounds`` times (20 by default), and prints which tests failed in which round,
with the first line of each failure. It exits 1 if anything failed.

    python tools/flake_sweep.py                     # the default suite, 20 rounds
    python tools/flake_sweep.py --rounds 5 -- tests/test_faults.py -k frozen

Arguments after ``--`` go to pytest (default: the whole default run, which
covers every test that starts processes, uses real sockets with real time or
asserts a wall-clock window). Run it from the repository root in the test
environment (``pip install -e '.[test]'``). It is not part of ``.ci/run``: 20
rounds take about an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOG = "while True: pass"


def start_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-c", HOG], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]


def stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    for hog in hogs:
        if hog.poll() is None:
            os.kill(hog.pid, signal.SIGKILL)
        hog.wait()


def failures(junit: Path) -> dict[str, str]:
    """Test id -> first line of its failure, from a JUnit XML report."""
    found: dict[str, str] = {}
    if not junit.exists():
        return {"<pytest>": "no report was written (pytest crashed or was killed)"}
    for case in ET.parse(junit).getroot().iter("testcase"):
        for kind in ("failure", "error"):
            problem = case.find(kind)
            if problem is not None:
                name = f"{case.get('classname')}::{case.get('name')}"
                message = (problem.get("message") or problem.text or kind).strip()
                found[name] = message.splitlines()[0][:200] if message else kind
    return found


def run_round(pytest_args: list[str], junit: Path, timeout: float) -> tuple[int, float]:
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        f"--junitxml={junit}", *pytest_args,
    ]  # fmt: skip
    started = time.monotonic()
    try:
        result = subprocess.run(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=timeout, check=False,
        )  # fmt: skip
        code = result.returncode
    except subprocess.TimeoutExpired:
        code = -1
    return code, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        description="Run the tests repeatedly under CPU load; report every failure.",
        allow_abbrev=False,
    )
    parser.add_argument("--rounds", type=int, default=20, help="default: 20")
    parser.add_argument(
        "--hogs", type=int, default=2, help="busy processes beside the tests (2)"
    )
    parser.add_argument(
        "--round-timeout", type=float, default=900,
        help="seconds before a round counts as hung (900)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    seen: dict[str, list[int]] = defaultdict(list)
    first_message: dict[str, str] = {}
    hogs = start_hogs(args.hogs)
    print(f"{args.hogs} CPU hogs (pids {', '.join(str(h.pid) for h in hogs)}); "
          f"pytest {' '.join(extra) or '(default run)'}", flush=True)  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for number in range(1, args.rounds + 1):
                junit = Path(tmp) / f"round{number}.xml"
                code, took = run_round(extra, junit, args.round_timeout)
                failed = failures(junit) if code != -1 else {"<round>": "timed out"}
                if code not in (0, -1) and not failed:
                    failed = {"<pytest>": f"exit code {code} without a failed test"}
                for name, message in failed.items():
                    seen[name].append(number)
                    first_message.setdefault(name, message)
                status = "ok" if not failed else f"{len(failed)} failed"
                print(f"round {number:2}/{args.rounds}: {status} ({took:.0f} s)",
                      flush=True)  # fmt: skip
                for name in failed:
                    print(f"    {name}: {failed[name]}", flush=True)
    finally:
        stop_hogs(hogs)
    if not seen:
        print(f"no failure in {args.rounds} rounds under {args.hogs} CPU hogs")
        return 0
    print(f"\n{len(seen)} test(s) failed at least once in {args.rounds} rounds:")
    for name, rounds in sorted(seen.items(), key=lambda item: -len(item[1])):
        print(f"  {len(rounds):2}x {name}\n       {first_message[name]}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
