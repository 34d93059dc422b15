"""How-to: the heartbeat client over TLS, on a stream you opened yourself.

Needs client.pem, the CA that signed the server's certificate (``python -m
trustme`` makes one). Start tls_server.py first.
"""

import ssl

import trio

import trio_heartbeat

context = ssl.create_default_context(cafile="client.pem")


async def main() -> None:
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", 5005, ssl_context=context)
    async with trio_heartbeat.connect_stream(stream) as conn:
        await conn.send(b"over tls")
        print("reply:", (await conn.receive()).decode())


if __name__ == "__main__":
    trio.run(main)
