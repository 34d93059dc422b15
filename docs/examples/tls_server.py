"""How-to: the heartbeat server over TLS, built from Trio's own pieces.

Needs server.pem and server.key (``python -m trustme`` makes a test pair).
Run it with ``python tls_server.py``; stop it with Ctrl-C.
"""

import ssl

import trio

import trio_heartbeat

context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain("server.pem", "server.key")


async def shout(conn: trio_heartbeat.HeartbeatConnection) -> None:
    async for data in conn:
        await conn.send(data.upper())


async def main() -> None:
    tcp = await trio.open_tcp_listeners(5005, host="127.0.0.1")
    tls = [trio.SSLListener(listener, context) for listener in tcp]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio_heartbeat.cancel_on_signals, nursery.cancel_scope)
        await nursery.start(trio_heartbeat.serve_listeners, shout, tls)
        print("listening on 127.0.0.1:5005 (TLS)")


if __name__ == "__main__":
    trio.run(main)
