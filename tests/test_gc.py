"""``serve`` freezes what its connections make out of the cyclic collector's
reach, every second (``freeze_settled``). That is safe only while heartbeats
and endings leave no reference cycle behind: a frozen cycle is never freed.
Here, a connection of ``serve``'s kind (a per-message handler, over TCP) is
checked to leave none while it heartbeats and in every way it can end."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from functools import partial

import pytest
import trio

from trio_heartbeat import (
    Close,
    CloseCode,
    Data,
    HeartbeatServer,
    Hello,
    Ping,
    Pong,
    ProtocolFailure,
    Role,
    ServerConfig,
    Session,
    UnknownFrameTypeError,
    encode,
    negotiate,
)
from trio_heartbeat._cli._serve import echo_upper

from .helpers import RawPeer, tcp_peer

CONNECTIONS = 20


@pytest.fixture
def frozen_gc() -> Iterator[None]:
    """Unfreeze and forget afterwards whatever the test froze."""
    yield
    gc.unfreeze()
    gc.set_debug(0)
    gc.garbage.clear()


def cyclic_garbage() -> Counter[str]:
    """What a full collection finds unreachable, by type (kept, not freed)."""
    gc.unfreeze()
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    found = Counter(type(o).__name__ for o in gc.garbage)
    gc.set_debug(0)
    gc.garbage.clear()
    return found


async def _end(peers: list[RawPeer], how: str) -> None:
    if how == "close":
        for peer in peers:
            await peer.send(Close(CloseCode.NORMAL, ""))
    elif how == "protocol error":
        for peer in peers:
            await peer.send_bytes(b"\x7f\x05hello")
    elif how == "kicked":
        await trio.sleep(1.5)  # silent past the 1 s timeout
    await trio.sleep(0.3)
    for peer in peers:
        await peer.stream.aclose()  # "dropped": just this


# (A server shutting down leaves Trio's Cancelled cycles behind: once, as the
# process ends, which leaks nothing that matters.)
@pytest.mark.parametrize(
    "how", ["close", "dropped", "kicked", "protocol error", "refused"]
)
async def test_ended_connections_leave_no_cycles(frozen_gc: None, how: str) -> None:
    config = ServerConfig(timeout=1, min_interval=0.1)
    ended: list[object] = []
    all_ended = trio.Event()

    def count(*_: object) -> None:
        ended.append(None)
        if len(ended) == CONNECTIONS:
            all_ended.set()

    server = HeartbeatServer(
        echo_upper, config=config, on_disconnect=count, on_refuse=count
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(server.serve_tcp, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            peers = []
            for _ in range(CONNECTIONS):
                peer = await tcp_peer(port)
                if how == "refused":
                    await peer.send(Hello({"version": 9}))
                else:
                    await peer.hello(interval=0.5)
                    await peer.send(Data(b"hi"))
                    assert await peer.receive() == Data(b"HI")  # in use
                peers.append(peer)
            # What serve's freeze_settled does: a cycle formed after this
            # through frozen objects is never freed.
            await trio.sleep(0.2)
            gc.collect()
            gc.freeze()
            if how != "refused":
                for _ in range(3):  # heartbeats: the steady state
                    for peer in peers:
                        await peer.send(Ping())
                    for peer in peers:
                        assert await peer.receive() == Pong()
            await _end(peers, how)
            await all_ended.wait()
            await trio.sleep(0.2)  # the connections' tasks finish
            garbage = cyclic_garbage()  # the server still running
            nursery.cancel_scope.cancel()
    assert garbage == Counter()


def test_a_peers_protocol_error_keeps_no_traceback() -> None:
    """The error's traceback would hold the session's frames, and with them the
    events list that holds the error: a cycle through the (frozen) connection."""
    session = Session(Role.SERVER)
    session.receive_data(encode(Hello({"version": 1})), 0.0)
    session.accept(negotiate({"version": 1}, ServerConfig()))
    events = session.receive_data(b"\x7f\x05hello", 1.0)
    failure = next(e for e in events if isinstance(e, ProtocolFailure))
    assert isinstance(failure.error, UnknownFrameTypeError)
    assert failure.error.__traceback__ is None
