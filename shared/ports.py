"""Whether a listening port is already taken, checked before a server starts, so that the failure is one
plain sentence instead of a bind error deep inside gRPC or uvicorn."""

from __future__ import annotations

import errno
import socket


def port_in_use(host: str, port: int) -> bool:
    """True if a server could not listen on ``host``:``port`` because another socket holds it.

    Binds a throwaway socket the way gRPC and uvicorn bind theirs (SO_REUSEADDR, so a port left in
    TIME_WAIT by a process that just exited counts as free, as it is for them). ``host`` may be a
    name or an address, IPv6 in brackets as gRPC writes it ("[::]"). Like gRPC, the port counts as
    free when any address ``host`` resolves to can be bound. Port 0 (any free port) is never in use;
    a host that does not resolve is left for the server itself to report.
    """
    if port == 0:
        return False
    try:
        addresses = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        return False
    taken = False
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as e:  # EADDRNOTAVAIL, IPv6 without IPv6, ...: not the question asked here
            taken = taken or e.errno == errno.EADDRINUSE
            continue
        return False
    return taken
