"""TLS: library and command line, with certificates made at test time (trustme)."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from trio_heartbeat import (
    ClientConfig,
    ConnectionClosed,
    DisconnectReason,
    HeartbeatConnection,
    ServerConfig,
    open_connection,
    serve_tcp,
)

from .helpers import listening_port, start_cli


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def echo_upper(conn: HeartbeatConnection) -> None:
    async for data in conn:
        await conn.send(data.upper())


async def start_tls_server(
    nursery: trio.Nursery, context: ssl.SSLContext, **kwargs: object
) -> int:
    """serve_tcp over TLS on 127.0.0.1 port 0; returns the port."""
    listeners = await nursery.start(
        partial(
            serve_tcp, echo_upper, 0, host="127.0.0.1", ssl_context=context, **kwargs
        )
    )
    return int(listeners[0].transport_listener.socket.getsockname()[1])


async def test_heartbeats_over_tls(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await start_tls_server(nursery, server_context)
            config = ClientConfig(interval=1, retry_interval=1)
            async with open_connection(
                "127.0.0.1", port, config=config, ssl_context=client_context
            ) as conn:
                assert isinstance(conn.stream, trio.SSLStream)
                await conn.send(b"secret")
                assert await conn.receive() == b"SECRET"
                await trio.sleep(1.5)  # one heartbeat, 1 s after the last send
                assert conn.stats.pings_sent == 1
                assert conn.stats.pongs_received == 1
            nursery.cancel_scope.cancel()


async def test_untrusted_certificate_fails_the_connect(
    server_context: ssl.SSLContext,
) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await start_tls_server(nursery, server_context)
            with pytest.raises(ConnectionClosed) as info:
                async with open_connection(
                    "127.0.0.1", port, ssl_context=ssl.create_default_context()
                ):
                    pass
            assert "SSLCertVerificationError" in info.value.reason
            assert "CERTIFICATE_VERIFY_FAILED" in info.value.reason
            nursery.cancel_scope.cancel()


async def test_stalled_tls_handshake_counts_against_handshake_timeout(
    server_context: ssl.SSLContext,
) -> None:
    reasons: list[DisconnectReason] = []
    config = ServerConfig(handshake_timeout=0.5, close_timeout=0.2)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await start_tls_server(
                nursery,
                server_context,
                config=config,
                on_refuse=lambda c, r: reasons.append(r),
            )
            # Plain TCP that never starts TLS: the server must still give up.
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            started = time.monotonic()
            while await stream.receive_some(65536):
                pass
            elapsed = time.monotonic() - started
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert 0.4 <= elapsed <= 0.5 + 0.2 + 0.5, elapsed
    assert reasons == [DisconnectReason.HANDSHAKE_FAILED]


async def test_command_line_tls(ca: trustme.CA, tmp_path: Path) -> None:
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = (
        tmp_path / "cert.pem",
        tmp_path / "key.pem",
        tmp_path / "ca.pem",
    )
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    async with trio.open_nursery() as nursery:
        server = await start_cli(
            nursery, "serve", "--port", "0", "--certfile", str(certfile),
            "--keyfile", str(keyfile), stderr=subprocess.DEVNULL,
        )  # fmt: skip
        with trio.fail_after(30):
            port = str(await listening_port(server))
            result = await trio.run_process(
                [sys.executable, "-m", "trio_heartbeat", "connect", "--port", port,
                 "--tls", "--cafile", str(cafile)],
                stdin=b"over tls\n", capture_stdout=True, capture_stderr=True,
                check=False,
            )  # fmt: skip
            assert (result.returncode, result.stdout) == (0, b"OVER TLS\n"), (
                result.stderr
            )
            untrusted = await trio.run_process(
                [sys.executable, "-m", "trio_heartbeat", "connect", "--port", port,
                 "--tls"],
                stdin=b"x\n", capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            assert untrusted.returncode == 1
            assert b"CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
            server.terminate()
            await server.wait()
        nursery.cancel_scope.cancel()


def test_tls_flag_errors() -> None:
    from trio_heartbeat._cli import main

    assert main(["serve", "--keyfile", "k.pem"]) == 2
    assert main(["serve", "--certfile", "/nonexistent.pem"]) == 2
    assert main(["connect", "--cafile", "ca.pem"]) == 2
    assert main(["connect", "--tls", "--protocol", "seed"]) == 2
