"""How the API answers a failure: the error body, and the edge's address withheld from every detail.

The edge's address is internal: no error body names it (the log does), whichever of its forms a message
uses, the device's own or gRPC's.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from pydantic import BaseModel

# How gRPC names the peers it tried in its error details (ipv4:10.0.0.5:50051, ipv6:[::1]:50051, unix:/path), and
# bare IPv4 or bracketed IPv6 addresses: withheld from HTTP answers, with every form of the configured target
PEER_ADDRESS = re.compile(
    r"\b(?:ipv4|ipv6|unix|unix-abstract|vsock|dns):\S+?(?=[\s,;]|: |$)"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?|\[[0-9A-Fa-f:.]+\](?::\d+)?"
)
GRPC_SCHEMES = ("dns", "ipv4", "ipv6", "unix", "unix-abstract", "vsock")
WITHHELD = "<edge address>"


class ErrorDetail(BaseModel):
    detail: str


# every error status a classify route may answer, for the OpenAPI
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorDetail} for code in (400, 401, 408, 413, 422, 502, 503, 504)
}


def address_forms(target: str) -> list[str]:
    """Every form in which messages may name the gRPC target ``target``, the longest first: the target, without its
    scheme (and a dns authority), each address of an ipv4:/ipv6: list, and each address's host. gRPC's own messages
    name a target it cannot resolve by host:port (``errors resolving edge:50051``), older resolvers by the bare host
    (``name=edge``)."""
    forms = {target}
    scheme, colon, rest = target.partition(":")
    if not colon or scheme not in GRPC_SCHEMES:  # no scheme gRPC knows: host:port, resolved by DNS
        scheme, rest = "dns", target
    forms.add(rest)
    if rest.startswith("//"):  # dns://[authority]/host:port, unix://absolute-path
        rest = rest[2:]
        if scheme == "dns":
            authority, _, rest = rest.partition("/")
            forms.add(authority)
        forms.add(rest)
    for address in rest.split(",") if scheme in ("ipv4", "ipv6") else [rest]:
        forms.add(address)
        if address.startswith("["):  # [v6]:port
            forms.update((address[: address.find("]") + 1], address[1 : address.find("]")]))
        elif address.count(":") == 1:  # host:port (more colons: a bare IPv6 address)
            forms.add(address.rpartition(":")[0])
    return sorted(filter(None, forms), key=lambda form: (-len(form), form))


@functools.lru_cache(maxsize=8)
def _address_patterns(target: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """How the device's own messages name the edge (``edge at <target>``, ``the edge at <target>``), and what is
    withheld: every form of ``target``, each only as a whole name (``edge`` in ``edge:50051`` or ``(edge)``, not in
    ``edge-2``, ``edges`` or ``edge.internal``; in any case, as host names are), and every PEER_ADDRESS. One pattern,
    so that each address is withheld once, whole: ``ipv4:10.0.0.7:50051`` by PEER_ADDRESS, not its tail by the
    target's host:port."""
    whole = r"(?![\w-]|\.\w)"
    ours = re.compile(rf"(?:the )?edge at {re.escape(target)}{whole}")
    names = "|".join(map(re.escape, address_forms(target)))
    return ours, re.compile(rf"(?<![\w.-])(?:{names}){whole}|{PEER_ADDRESS.pattern}", re.IGNORECASE)


def withhold_address(detail: str, edge_address: str) -> str:
    """``detail`` without the edge's address: every form of the configured target, and every peer address gRPC
    names. The device's own messages that name the edge by its target say "the edge" instead, kept as it is
    whatever the target's host is called (Compose's is ``edge``: elsewhere that word is withheld too)."""
    ours, addresses = _address_patterns(edge_address)
    return "the edge".join(addresses.sub(WITHHELD, part) for part in ours.split(detail))
