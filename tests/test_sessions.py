"""Every shell session of the README and the docs runs as shown.

See tests/shell_sessions.py for how a page is run: each page in a network
namespace of its own (port 5005 is the page's), servers in the background as
in a second terminal, every other block compared line by line with its output.
The example files are in the session's directory, as a reader who downloaded
them has them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import shell_sessions
from .netns import Namespaces

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ["README.md", *sorted(p.name for p in DOCS.glob("*.rst"))]


def blocks_of(page: str) -> list[shell_sessions.Block]:
    if page.endswith(".md"):
        return shell_sessions.markdown_blocks(ROOT / page)
    return shell_sessions.rst_blocks(DOCS / page)


@contextlib.contextmanager
def page_namespace(tag: str = "") -> Iterator[str | None]:
    """A network namespace for the page; else the machine's own (None), if
    the documented port is free there."""
    made = Namespaces(f"d{os.getpid() % 100000}{tag}")
    try:
        try:
            namespace = made.add("docs")
        except (pytest.skip.Exception, subprocess.SubprocessError, OSError):
            namespace = None
        if namespace is None:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", 5005))
                except OSError:
                    pytest.skip("no network namespace, and port 5005 is taken")
        yield namespace
    finally:
        made.close()


def run_page(page: str, session_root: Path, tag: str = "") -> list[str]:
    """Run ``page``'s sessions; the problems found."""
    session = session_root / "session"
    # Where the reader is: the README's reader in the project's directory, the
    # docs' reader in a directory holding the downloaded example files.
    where = session / "docs" / "examples" if page == "README.md" else session
    shutil.copytree(DOCS / "examples", where)
    with page_namespace(tag) as namespace:
        return list(shell_sessions.run_page(blocks_of(page), namespace, session))


SESSION_PAGES = [p for p in PAGES if blocks_of(p)]

#: Pages run at once (see :func:`side_by_side`).
LANES = 2
#: About how long the slow pages take, in seconds (the rest take a few).
PAGE_SECONDS = {"tutorials.rst": 52, "mobile.rst": 21, "presence.rst": 13}


@pytest.fixture(scope="module")
def side_by_side(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, list[str] | BaseException] | None:
    """The pages run two at a time, each in a network namespace and a
    directory of its own: a page's time is mostly its sleeps (in turn they
    took 90 s, in two lanes as long as the longest page). Two, not all at
    once: ten pages starting their servers and clients together kept a client
    from starting within a second on 2 cores, and the pages' timing assumes
    a client that starts like one on an idle machine. Slowest first, so the
    other lane runs the rest meanwhile. None where namespaces cannot be made:
    then each test runs its page alone, on the machine's own port."""
    probe = Namespaces(f"p{os.getpid() % 100000}")
    try:
        probe.add("docs")
    except (pytest.skip.Exception, subprocess.SubprocessError, OSError):
        return None
    finally:
        probe.close()
    order = sorted(SESSION_PAGES, key=lambda page: -PAGE_SECONDS.get(page, 0))
    roots = [tmp_path_factory.mktemp("page") for _ in order]

    def run(index: int, page: str, root: Path) -> list[str] | BaseException:
        try:
            return run_page(page, root, f"p{index}")
        except BaseException as exc:  # reported by the page's own test
            return exc

    with concurrent.futures.ThreadPoolExecutor(LANES) as pool:
        outcomes = pool.map(run, range(len(order)), order, roots)
        results = dict(zip(order, outcomes, strict=True))
    return results


@pytest.mark.parametrize("page", SESSION_PAGES)
def test_shell_sessions_run_as_shown(
    page: str,
    tmp_path: Path,
    side_by_side: dict[str, list[str] | BaseException] | None,
) -> None:
    if side_by_side is None:
        problems = run_page(page, tmp_path)
    else:
        outcome = side_by_side[page]
        if isinstance(outcome, BaseException):
            raise outcome
        problems = outcome
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def test_the_parsers_see_commands_and_output() -> None:
    blocks = shell_sessions.markdown_blocks(ROOT / "README.md")
    assert any(block.is_server for block in blocks)
    assert any(block.output for block in blocks if not block.is_server)
    tutorials = shell_sessions.rst_blocks(DOCS / "tutorials.rst")
    assert any(block.is_server for block in tutorials)
