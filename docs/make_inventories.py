"""Write the intersphinx inventories the docs link to Trio's and Python's with.

Regenerate with:  python docs/make_inventories.py

Sphinx's intersphinx fetches ``objects.inv`` from each project's site when the
docs are built, and CI builds them offline. So the docs ship small inventories
of their own (``docs/_inventories``), listing the names these pages and the
API reference's signatures use, with their places in Trio's and Python's
documentation. Add a name here when a page starts using it.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent / "_inventories"

TRIO = {
    "reference-core.html": [
        ("trio.run", "py:function"),
        ("trio.open_nursery", "py:function"),
        ("trio.Nursery", "py:class"),
        ("trio.CancelScope", "py:class"),
        ("trio.move_on_after", "py:function"),
        ("trio.fail_after", "py:function"),
        ("trio.current_time", "py:function"),
        ("trio.sleep", "py:function"),
        ("trio.Cancelled", "py:exception"),
        ("trio.TaskStatus", "py:class"),
        ("trio.TASK_STATUS_IGNORED", "py:data"),
        ("trio.Event", "py:class"),
        ("trio.abc.Clock", "py:class"),
        ("trio.open_signal_receiver", "py:function"),
    ],
    "reference-io.html": [
        ("trio.abc.Stream", "py:class"),
        ("trio.abc.HalfCloseableStream", "py:class"),
        ("trio.abc.SendStream", "py:class"),
        ("trio.abc.ReceiveStream", "py:class"),
        ("trio.abc.Listener", "py:class"),
        ("trio.SocketStream", "py:class"),
        ("trio.SocketListener", "py:class"),
        ("trio.SSLStream", "py:class"),
        ("trio.SSLListener", "py:class"),
        ("trio.serve_tcp", "py:function"),
        ("trio.serve_listeners", "py:function"),
        ("trio.open_tcp_stream", "py:function"),
        ("trio.open_tcp_listeners", "py:function"),
        ("trio.open_ssl_over_tcp_stream", "py:function"),
        ("trio.BrokenResourceError", "py:exception"),
        ("trio.ClosedResourceError", "py:exception"),
    ],
    "reference-testing.html": [
        ("trio.testing.MockClock", "py:class"),
        ("trio.testing.memory_stream_pair", "py:function"),
        ("trio.testing.lockstep_stream_pair", "py:function"),
    ],
    "reference-lowlevel.html": [
        ("trio.lowlevel.ParkingLot", "py:class"),
    ],
}

PYTHON = {
    "library/ssl.html": [
        ("ssl.SSLContext", "py:class"),
        ("ssl.SSLError", "py:exception"),
        ("ssl.SSLCertVerificationError", "py:exception"),
    ],
    "library/socket.html": [("socket.socket", "py:class")],
    "library/logging.handlers.html": [("logging.NullHandler", "py:class")],
    "library/random.html": [("random.Random", "py:class")],
    "library/typing.html": [("typing.Any", "py:data")],
    "library/collections.abc.html": [
        ("collections.abc.Callable", "py:class"),
        ("collections.abc.Awaitable", "py:class"),
        ("collections.abc.Mapping", "py:class"),
        ("collections.abc.Sequence", "py:class"),
        ("collections.abc.Set", "py:class"),
    ],
    "library/exceptions.html": [
        ("OSError", "py:exception"),
        ("ValueError", "py:exception"),
        ("TypeError", "py:exception"),
        ("KeyboardInterrupt", "py:exception"),
        ("ExceptionGroup", "py:exception"),
        ("BaseException", "py:exception"),
    ],
    "library/functions.html": [
        ("float", "py:class"),
        ("int", "py:class"),
        ("bool", "py:class"),
        ("str", "py:class"),
        ("bytes", "py:class"),
    ],
}


def write(name: str, version: str, pages: dict[str, list[tuple[str, str]]]) -> None:
    lines = []
    for page, entries in pages.items():
        for entry, role in entries:
            lines.append(f"{entry} {role} 1 {page}#$ -\n")
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {name}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = zlib.compress("".join(sorted(lines)).encode())
    HERE.mkdir(exist_ok=True)
    (HERE / f"{name.lower()}.inv").write_bytes(header.encode() + body)


def main() -> None:
    write("Trio", "stable", TRIO)
    write("Python", "3", PYTHON)
    print(f"wrote {HERE}/trio.inv and python.inv")


if __name__ == "__main__":
    main()
