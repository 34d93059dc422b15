"""``python -m trio_heartbeat presence``: who is online in a fleet's Redis."""

from __future__ import annotations

import argparse
import json
import sys
import time

import trio

from trio_heartbeat import PresenceSession, PresenceUnavailable, RedisPresence

from ._options import EXIT_CONNECTION, EXIT_OK

__all__ = ["run_presence"]


def _line(session: PresenceSession) -> str:
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(session.since))
    return f"{session.client_id:<16} {session.node:<16} {session.peer:<21} {since}"


async def _listed(store: RedisPresence, client_ids: list[str]) -> list[PresenceSession]:
    if not client_ids:
        return await store.online()
    found: list[PresenceSession] = []
    for client_id in client_ids:
        found += await store.sessions_of(client_id)
    return found


def run_presence(args: argparse.Namespace) -> int:
    """Print the sessions online; with ids, exit 0 only if all are online."""
    store = RedisPresence(args.redis)
    try:
        sessions = trio.run(_listed, store, list(args.client_ids))
    except PresenceUnavailable as exc:
        print(f"cannot read presence: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    if args.json:
        print(
            json.dumps(
                [
                    {"client_id": s.client_id, "node": s.node, "peer": s.peer,
                     "since": s.since}
                    for s in sessions
                ]
            )
        )  # fmt: skip
    else:
        for session in sessions:
            print(_line(session))
    online = {session.client_id for session in sessions}
    return EXIT_OK if all(cid in online for cid in args.client_ids) else 1
