"""Network namespaces made (and removed) by a test: hosts joined by veth links.

Everything here talks only to namespaces the test itself created. A namespace is
named after the test process's PID so that parallel runs do not collide, and
`Namespaces.close` deletes what was made even when the test failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def nft(namespace: str, ruleset: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-f", "-"],
        input=ruleset.encode(), check=True, capture_output=True, timeout=10,
    )  # fmt: skip


def require(*commands: str) -> None:
    """Skip (saying why) where namespaces or a command are not available."""
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are Linux only")
    for command in commands:
        if shutil.which(command) is None:
            pytest.skip(f"needs the {command} command (.ci/run installs it)")


class Namespaces:
    """Namespaces and veth links of one test; `close()` removes them all."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.made: list[str] = []

    def add(self, role: str) -> str:
        name = f"thb-{role}{self.tag}"
        try:
            ip("netns", "add", name)
        except (subprocess.CalledProcessError, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or str(exc)
            pytest.skip(f"creating a network namespace is not permitted: {detail!r}")
        self.made.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def link(
        self, a: str, a_addr: str, b: str, b_addr: str, prefix: int = 30
    ) -> tuple[str, str]:
        """A veth pair between namespaces `a` and `b`; the device names."""
        dev_a = f"v{len(self.made)}{a[4]}{self.tag}"[:15]
        dev_b = f"v{len(self.made)}{b[4]}{self.tag}x"[:15]
        ip("link", "add", dev_a, "netns", a, "type", "veth", "peer", "name", dev_b,
           "netns", b)  # fmt: skip
        for ns, dev, addr in ((a, dev_a, a_addr), (b, dev_b, b_addr)):
            ip("-n", ns, "addr", "add", f"{addr}/{prefix}", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        return dev_a, dev_b

    def close(self) -> None:
        for name in self.made:
            subprocess.run(
                ["ip", "netns", "del", name], capture_output=True, timeout=10
            )
        self.made.clear()


@contextmanager
def namespaces() -> Iterator[Namespaces]:
    require("ip")
    made = Namespaces(str(os.getpid() % 100000))
    try:
        yield made
    finally:
        made.close()


def blackhole(*namespaces: str) -> None:
    """Drop every IP packet arriving in these namespaces, silently.

    This is a link cut as a peer sees it when the path fails somewhere in the
    network: its own interface stays up, its packets leave, and nothing comes back.
    (Bringing a veth down instead makes the other end's transmissions fail
    locally, which the kernel handles with different timers.)
    """
    for namespace in namespaces:
        nft(
            namespace,
            "table inet blackhole {\n"
            "  chain in { type filter hook prerouting priority -400; policy drop; }\n"
            "}\n",
        )


# The NAT topology: client --- router --- server, all made by the caller.
NAT_CLIENT, NAT_ROUTER_IN = "10.77.1.2", "10.77.1.1"
NAT_ROUTER_OUT, NAT_SERVER = "10.77.2.1", "10.77.2.2"


def nat(made: Namespaces, limit: int) -> tuple[str, str]:
    """Three namespaces, ``client (NAT_CLIENT) --- router --- server
    (NAT_SERVER)``, where the router is a NAT that forgets idle flows.

    The router masquerades the client's flows (nftables), forgets an
    established TCP flow after ``limit`` seconds without a packet
    (``nf_conntrack_tcp_timeout_established``), does not pick up flows in the
    middle (``nf_conntrack_tcp_loose`` 0) and drops invalid packets: once a
    mapping is forgotten, every later packet of that flow vanishes either way,
    as on a carrier's NAT. The server has no route to the client's network:
    only NATed traffic reaches it. Returns (client, server) namespaces.
    """
    cli, router, srv = made.add("nc"), made.add("nr"), made.add("ns")
    _, inside = made.link(cli, NAT_CLIENT, router, NAT_ROUTER_IN)
    outside, _ = made.link(router, NAT_ROUTER_OUT, srv, NAT_SERVER)
    ip("-n", cli, "route", "add", "default", "via", NAT_ROUTER_IN)
    nft(
        router,
        f"""
        table ip nat {{
          chain postrouting {{
            type nat hook postrouting priority srcnat; policy accept;
            oifname "{outside}" masquerade
          }}
        }}
        table ip filter {{
          chain forward {{
            type filter hook forward priority filter; policy drop;
            ct state invalid drop
            ct state established,related accept
            iifname "{inside}" ct state new accept
          }}
        }}
        """,
    )
    # These settings exist once the rules above loaded conntrack; they are
    # the router namespace's own.
    subprocess.run(
        ["ip", "netns", "exec", router, "sh", "-ec",
         "echo 1 > /proc/sys/net/ipv4/ip_forward; cd /proc/sys/net/netfilter; "
         f"echo {limit} > nf_conntrack_tcp_timeout_established; "
         "echo 0 > nf_conntrack_tcp_loose"],
        check=True, capture_output=True, timeout=10,
    )  # fmt: skip
    return cli, srv
