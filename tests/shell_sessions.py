"""The shell sessions of the README and the docs, parsed and run as shown.

A reader copies commands from the README's ``sh`` blocks (the output follows in
a ``text`` block of its own) and from the docs' ``console`` blocks (``$ `` marks
a command, the other lines are its output). This module turns both into
:class:`Block` objects and runs them the way a reader would, so that every
command shown works and prints what the page says.

How a page runs:

* its blocks run top to bottom, in one network namespace made for the page, so
  the documented port 5005 is free whatever else runs on the machine;
* a block that starts a server (``python -m trio_heartbeat serve``, an example
  program that serves, ``redis-server``) is a server in a terminal of its own:
  it keeps running in the background, the next block waits until its first
  output line has appeared, and the rest of its output is checked when it
  stops (Ctrl-C, that is SIGINT, as the page says). Servers on different ports
  run side by side (two nodes and their Redis); a server started on a port
  stops the one there first; an example program runs alone (it stops the
  others, and the next server stops it); the rest stop at the end of the page,
  the last started first;
* every other block runs as one bash script (so ``$!`` and ``wait`` work across
  its lines) and must print exactly its output lines, in order;
* setting up (``python3 -m venv``, activating, ``pip install``) and the test
  suite itself (``python -m pytest``) are not run here: ``.ci/run`` runs the
  README's two commands verbatim from a fresh clone;
* benchmark commands (``python benchmarks/...``, minutes each) are checked for
  an existing script whose argument parser accepts the arguments shown.

Output lines are compared after :func:`normalise` (timestamps, PIDs and
ephemeral ports vary); a line ``...`` in the expected output stands for any
number of lines.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[1]

# Servers: the CLI's, and the example programs that serve (they run until
# Ctrl-C, in a terminal of their own).
SERVER = re.compile(
    r"^(python (-m trio_heartbeat serve\b|\w*(server|gateway)\.py\b)|redis-server\b)"
)
# The port a server block listens on (servers on different ports run side by
# side; a new server on a port stops the one there first).
PORT = re.compile(r"--port[ =](\d+)")
DEFAULT_PORTS = {"redis-server": 6379, "python -m trio_heartbeat serve": 5005}
SETUP = re.compile(
    r"^(python3? -m venv \S+|\. \S*/bin/activate|source \S*/bin/activate"
    r"|pip install .*|python -m pip install .*)$"
)
# What .ci/run runs itself: the whole suite, the slow tests, the docs build.
SUITE = re.compile(r"^python -m (pytest( -m slow)?|sphinx .*)$")
# Minutes each: checked for a script that accepts the arguments shown.
BENCHMARK = re.compile(r"^(taskset -c \S+ )?python ((?:benchmarks|tools)/\S+\.py)(.*)$")
ELLIPSIS = "..."


@attrs.frozen
class Block:
    """One shell block: where it is, its commands, the output it shows."""

    source: str
    line: int
    commands: tuple[str, ...]
    output: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def is_server(self) -> bool:
        runnable = self.runnable
        return bool(runnable) and bool(SERVER.match(runnable[0]))

    @property
    def runnable(self) -> list[str]:
        """The commands run here: setup, the suite and benchmarks taken out."""
        kept = []
        for command in self.commands:
            parts = [
                part
                for part in (_bare(part) for part in command.split(" && "))
                if not (SETUP.match(part) or SUITE.match(part) or BENCHMARK.match(part))
            ]
            if parts:
                kept.append(" && ".join(parts))
        return kept

    @property
    def benchmarks(self) -> list[tuple[str, str]]:
        """(script, arguments) of each benchmark command."""
        found = []
        for command in self.commands:
            for part in command.split(" && "):
                match = BENCHMARK.match(_bare(part))
                if match:
                    found.append((match.group(2), match.group(3).strip()))
        return found


def _bare(command: str) -> str:
    """A command without its trailing ``  # comment``."""
    return command.split("  #", 1)[0].strip()


def _join_continuations(lines: list[str]) -> list[str]:
    joined: list[str] = []
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].rstrip() + " "
            continue
        joined.append((pending + line.strip()).strip())
        pending = ""
    return joined


def markdown_blocks(path: Path) -> list[Block]:
    """The ``sh`` blocks of a Markdown file, each with its output: the ``text``
    block right after it (prose may come between)."""
    text = path.read_text()
    fences = list(re.finditer(r"^```(\w*)\n(.*?)^```\n", text, flags=re.S | re.M))
    blocks = []
    for index, fence in enumerate(fences):
        if fence.group(1) != "sh":
            continue
        output: list[str] = []
        if index + 1 < len(fences) and fences[index + 1].group(1) == "text":
            output = fences[index + 1].group(2).splitlines()
        lines = [line for line in fence.group(2).splitlines() if line.strip()]
        blocks.append(
            Block(
                path.name,
                text.count("\n", 0, fence.start()) + 1,
                tuple(_join_continuations(lines)),
                tuple(output),
            )
        )
    return blocks


def rst_blocks(path: Path) -> list[Block]:
    """The ``.. code-block:: console`` blocks of a reStructuredText file."""
    lines = path.read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        if lines[index].strip() != ".. code-block:: console":
            index += 1
            continue
        start = index + 1
        indent = len(lines[index]) - len(lines[index].lstrip()) + 1
        body: list[str] = []
        index += 1
        while index < len(lines) and (
            not lines[index].strip()
            or len(lines[index]) - len(lines[index].lstrip()) >= indent
        ):
            body.append(lines[index])
            index += 1
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        margin = min(len(line) - len(line.lstrip()) for line in body if line.strip())
        body = [line[margin:] for line in body]
        commands: list[str] = []
        output: list[str] = []
        continued = False
        for line in body:
            if line.startswith("$ ") or continued:
                commands.append(line[2:] if line.startswith("$ ") else line)
                continued = line.rstrip().endswith("\\")
            elif line.strip():
                output.append(line)
        blocks.append(
            Block(path.name, start, tuple(_join_continuations(commands)), tuple(output))
        )
    return blocks


_NORMALISE = [
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"), "<time>"),
    (re.compile(r"\[\d+\]"), "[<pid>]"),
    (re.compile(r"127\.0\.0\.1:(?!5005\b)\d+"), "127.0.0.1:<port>"),
    (re.compile(r"\b\d+\.\d+ ms\b"), "<n> ms"),
    # JSON log lines (--log-format json).
    (re.compile(r'"time": "[^"]+"'), '"time": "<time>"'),
    (re.compile(r'"pid": \d+'), '"pid": <pid>'),
    # The machine's own descriptor limit.
    (re.compile(r"up to \d+, room for about \d+"), "up to <n>, room for about <n>"),
    (re.compile(r"\bin \d+\.\d+s\b"), "in <n>s"),
    # redis-server's log lines: "32010:M 30 Nov 2026 00:17:32.817 * ..."
    (re.compile(r"^\d+:[CMSX] \d+ \w+ \d{4} \d\d:\d\d:\d\d\.\d{3} "), "<redis> "),
    # presence's "since" column.
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"), "<time>"),
]


def normalise(line: str) -> str:
    """A line with what varies from run to run replaced by placeholders."""
    for pattern, replacement in _NORMALISE:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def matches(expected: list[str], actual: list[str], *, exact: bool) -> bool:
    """Whether ``actual`` shows ``expected``.

    ``exact``: line for line, where a ``...`` line stands for any number of
    lines. Not ``exact`` (a server's log): the expected lines appear in this
    order, whatever comes between them.
    """
    want = [normalise(line) for line in expected]
    got = [normalise(line) for line in actual]
    position = 0
    floating = not exact
    for line in want:
        if line == ELLIPSIS:
            floating = True
            continue
        if floating:
            while position < len(got) and got[position] != line:
                position += 1
            if position == len(got):
                return False
        elif position >= len(got) or got[position] != line:
            return False
        position += 1
        floating = not exact
    return floating or position == len(got)


class _Server:
    """A server block running in the background; its output collected."""

    def __init__(self, block: Block, argv: list[str], env: dict[str, str]) -> None:
        self.block = block
        self.expected = list(block.output)
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            cwd=env["SESSION_DIR"], start_new_session=True, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def expect(self, more: tuple[str, ...]) -> None:
        self.expected.extend(more)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_first_line(self, timeout: float) -> None:
        first = normalise(self.block.output[0]) if self.block.output else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if first is None or any(normalise(line) == first for line in self.lines):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{self.block.where}: the server never printed {first!r}; "
            f"it printed {self.lines!r}"
        )

    def stop(self) -> list[str]:
        """Ctrl-C, as the reader would; then the output it printed."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.lines

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def check_benchmark(block: Block, script: str, arguments: str) -> None:
    """The script exists and its argument parser accepts ``arguments``."""
    path = ROOT / script
    assert path.is_file(), f"{block.where}: no such script {script}"
    probe = (
        "import argparse, runpy, sys\n"
        "parse = argparse.ArgumentParser.parse_args\n"
        "def checked(self, *a, **k):\n"
        "    parse(self, *a, **k)\n"
        "    raise SystemExit(0)\n"
        "argparse.ArgumentParser.parse_args = checked\n"
        "sys.argv = [sys.argv[1], *sys.argv[2:]]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "raise SystemExit('the script did not parse arguments')\n"
    )
    argv = [sys.executable, "-c", probe, str(path), *arguments.split()]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (
        f"{block.where}: python {script} {arguments}: {result.stderr.strip()}"
    )


def _run_block(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> tuple[list[str], bool]:
    """Run a block's script; its output lines and whether it finished in time.

    The script runs in a process group of its own, killed by its id once the
    script ends, so that nothing it left in the background (a ``sleep`` that
    fed a pipe) outlives it or holds its output open.
    """
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        process.wait(timeout=timeout)
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    reader.join(timeout=10)
    assert process.stdout is not None
    process.stdout.close()
    return lines, finished


def environment(session_dir: Path) -> dict[str, str]:
    """The reader's environment: the project's Python first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # A terminal flushes every line; a pipe would hold print() output back.
    env["PYTHONUNBUFFERED"] = "1"
    env["SESSION_DIR"] = str(session_dir)
    env["COLUMNS"] = "80"  # pytest's progress line, as in an 80-column terminal
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def run_page(
    blocks: list[Block],
    netns: str | None,
    session_dir: Path,
    *,
    timeout: float = 60,
) -> Iterator[str]:
    """Run a page's blocks in ``session_dir`` (inside network namespace
    ``netns``, if given); yield a description of each problem found."""
    env = environment(session_dir)
    # Running servers by the port they hold (None: an example program's),
    # in the order they started; ``server`` is the latest.
    servers: dict[int | None, _Server] = {}
    server: _Server | None = None
    # Scripts live beside the session directory, not in it (a reader's
    # directory holds only what the page made), and run from a file so that
    # their text is in no process's command line (pkill -f must not match).
    scripts = session_dir.parent

    def command_line(script: str, number: int) -> list[str]:
        path = scripts / f"block{number}.sh"
        path.write_text(script + "\n")
        prefix = [] if netns is None else ["ip", "netns", "exec", netns]
        return [*prefix, "bash", str(path)]

    def stop(key: int | None) -> Iterator[str]:
        stopping = servers.pop(key)
        lines = stopping.stop()
        if not matches(stopping.expected, lines, exact=False):
            yield (
                f"{stopping.block.where}: the server's output does not show "
                f"{stopping.expected!r}; it printed {lines!r}"
            )

    def stop_all() -> Iterator[str]:
        for key in reversed(list(servers)):  # the last started first
            yield from stop(key)

    try:
        for number, block in enumerate(blocks):
            for script, arguments in block.benchmarks:
                check_benchmark(block, script, arguments)
            commands = block.runnable
            if not block.commands and block.output:
                # More of the running server's terminal, shown further down.
                assert server is not None, f"{block.where}: output of no server"
                server.expect(block.output)
                continue
            if not commands:
                continue
            if block.is_server:
                assert len(commands) == 1, f"{block.where}: one command per server"
                key = server_port(commands[0])
                if key is None:
                    yield from stop_all()  # an example program: alone
                else:
                    if None in servers:  # an example program, on any port
                        yield from stop(None)
                    if key in servers:
                        yield from stop(key)  # Ctrl-C, then the new one there
                argv = command_line(f"exec {commands[0]}", number)
                server = servers[key] = _Server(block, argv, env)
                server.wait_for_first_line(timeout=15)
                continue
            argv = command_line("\n".join(commands), number)
            lines, finished = _run_block(argv, env, session_dir, timeout)
            if not finished:
                yield f"{block.where}: still running after {timeout} s: {lines!r}"
                continue
            if not matches(list(block.output), lines, exact=True):
                yield (
                    f"{block.where}: {commands!r} printed {lines!r}, "
                    f"the page shows {list(block.output)!r}"
                )
        yield from stop_all()
    finally:
        for running in servers.values():
            running.kill()


def server_port(command: str) -> int | None:
    """The port a server command listens on; None for an example program."""
    for prefix, default in DEFAULT_PORTS.items():
        if command.startswith(prefix):
            found = PORT.search(command)
            return int(found.group(1)) if found else default
    return None
