"""Faults on real sockets, with processes the tests start themselves."""

from __future__ import annotations

import resource
import subprocess
import sys
from functools import partial

import trio

from trio_heartbeat import FrameDecoder, Hello, encode

FD_LIMIT = 40


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


async def _hello(port: int) -> tuple[trio.SocketStream, bool]:
    """Connect and send HELLO; True if answered within 0.5 s."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(encode(Hello({"version": 1})))
    decoder = FrameDecoder()
    with trio.move_on_after(0.5):
        while decoder.next_frame() is None:
            decoder.receive_data(await stream.receive_some(65536))
        return stream, True
    return stream, False


async def test_out_of_file_descriptors_is_survived() -> None:
    async with trio.open_nursery() as nursery:
        server: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [sys.executable, "-m", "trio_heartbeat", "serve", "--port", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
                preexec_fn=_low_fd_limit,
            )
        )  # fmt: skip
        assert server.stdout is not None and server.stderr is not None
        with trio.fail_after(60):
            line = b""
            while not line.endswith(b"\n"):
                line += await server.stdout.receive_some(1)
            port = int(line.decode().strip().rsplit(":", 1)[1])
            # Fill the server's descriptor table: the kernel still completes
            # the TCP handshakes (backlog), but accept() fails with EMFILE.
            held: list[trio.SocketStream] = []
            while True:
                stream, answered = await _hello(port)
                held.append(stream)
                if not answered:
                    break
                assert len(held) < FD_LIMIT, "the limit was never reached"
            log = b""
            while b"EMFILE" not in log:
                log += await server.stderr.receive_some(65536)
            assert b"accept returned EMFILE" in log
            assert server.returncode is None  # still running
            # Free descriptors: the waiting client is accepted and answered.
            for stream in held[:5]:
                await stream.aclose()
            waiting = held[-1]
            decoder = FrameDecoder()
            while (frame := decoder.next_frame()) is None:
                decoder.receive_data(await waiting.receive_some(65536))
            assert isinstance(frame, Hello)
            fresh, answered = await _hello(port)
            assert answered
            for stream in [*held[5:], fresh]:
                await stream.aclose()
            server.terminate()
            assert await server.wait() == 0
        nursery.cancel_scope.cancel()
