"""``port_in_use``: against real sockets on 127.0.0.1."""

from __future__ import annotations

import socket

from spikebottlenet.shared.ports import port_in_use


def test_a_listening_port_is_in_use_and_free_once_closed() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        assert port_in_use("127.0.0.1", port)
    finally:
        holder.close()
    assert not port_in_use("127.0.0.1", port)


def test_a_wildcard_listener_takes_the_port_on_loopback_too() -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        assert port_in_use("127.0.0.1", holder.getsockname()[1])


def test_port_zero_means_any_free_port_so_it_is_never_in_use() -> None:
    assert not port_in_use("127.0.0.1", 0)
