"""The socket lister the exposure tests rely on, against sockets this test opens itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.sockets import Listener, _address, children, exposed, listeners


def _listen(family: socket.AddressFamily, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen()
    return sock


def test_names_each_listener_by_address_and_tells_loopback_from_exposed() -> None:
    local = _listen(socket.AF_INET, "127.0.0.1")
    everywhere = _listen(socket.AF_INET, "0.0.0.0")
    unlistened = socket.socket()
    unlistened.bind(("0.0.0.0", 0))  # bound, not listening: not a listener
    try:
        mine = {s.port: s for s in listeners([os.getpid()])}
        assert mine[local.getsockname()[1]].address == "127.0.0.1"
        assert mine[local.getsockname()[1]].loopback
        assert mine[everywhere.getsockname()[1]].address == "0.0.0.0"
        assert unlistened.getsockname()[1] not in mine
        assert [s.port for s in exposed([os.getpid()])] == [everywhere.getsockname()[1]]
    finally:
        for sock in (local, everywhere, unlistened):
            sock.close()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this kernel")
def test_reads_ipv6_listeners() -> None:
    try:
        local = _listen(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("::1 is not configured here")
    everywhere = _listen(socket.AF_INET6, "::")
    try:
        mine = {s.port: s for s in listeners([os.getpid()])}
        assert (mine[local.getsockname()[1]].address, mine[local.getsockname()[1]].loopback) \
            == ("::1", True)
        assert (mine[everywhere.getsockname()[1]].address,
                mine[everywhere.getsockname()[1]].loopback) == ("::", False)
    finally:
        local.close()
        everywhere.close()


def test_decodes_proc_net_addresses_and_mapped_loopback() -> None:
    assert _address("0100007F") == "127.0.0.1"
    assert _address("00000000000000000000000001000000") == "::1"
    mapped = _address("0000000000000000FFFF00000100007F")
    assert mapped == "::ffff:7f00:1"
    assert Listener(mapped, 1, 1, "x").loopback
    assert not Listener("0.0.0.0", 1, 1, "x").loopback


def test_finds_the_sockets_of_a_child_process() -> None:
    code = ("import socket,sys,time; s=socket.socket(); s.bind(('0.0.0.0',0)); s.listen(); "
            "print(s.getsockname()[1], flush=True); time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        assert child.pid in children(os.getpid())
        (found,) = [s for s in exposed(children(os.getpid())) if s.port == port]
        assert found.pid == child.pid
    finally:
        child.kill()
        child.wait()
