"""A free TCP port on loopback for a server a test starts (slapd, an OIDC provider, an SMTP
sink, PostgreSQL, Redis)."""

from __future__ import annotations

import random
import socket

_pick = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to, below the kernel's ephemeral range. A port the kernel
    hands out (bind to 0) can be given to another test's outgoing connection before the
    server binds it (two xdist workers run at once); one below the range is never handed
    out that way."""
    high = _ephemeral_low()
    for _ in range(200):
        port = _pick.randrange(20000, high)
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in 20000-{high - 1}")
