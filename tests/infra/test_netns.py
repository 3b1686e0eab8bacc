"""The multi-host test bed: real namespaces, a real bridge, real sockets between hosts."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from infra import netns
from infra.netns import SUBNET, TestBed

UNAVAILABLE = netns.unavailable()
pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(bool(UNAVAILABLE), reason=str(UNAVAILABLE))]

# A TCP echo server on the given address; prints "ready" once it listens.
ECHO = """
import socket, sys
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(c.recv(100))
    c.close()
"""
# Connects to the echo server and prints what came back.
ASK = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as c:
    c.sendall(b"ping")
    print(c.recv(100).decode())
"""


def _echo(bed: TestBed, host: str, port: int = 7000) -> subprocess.Popen:
    server = bed.background(host, [sys.executable, "-c", ECHO, bed.address(host), str(port)],
                            stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    return server


def _ask(bed: TestBed, host: str, to: str, timeout: float = 2) -> subprocess.CompletedProcess:
    return bed.run(host, [sys.executable, "-c", ASK, bed.address(to), "7000", str(timeout)],
                   capture_output=True, text=True, timeout=30)


def _machine_has_no_bed_address_or_route() -> bool:
    addrs = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    found = [w.split("/")[0] for w in (addrs + routes).split() if w[:1].isdigit()]
    ours = []
    for word in found:
        try:
            ours += [word] if ipaddress.ip_network(word, strict=False).overlaps(SUBNET) else []
        except ValueError:
            continue
    return not ours


def test_hosts_reach_each_other_and_nothing_else():
    with TestBed(["a", "b"]) as bed:
        addresses = [ipaddress.ip_address(bed.address(h)) for h in ("a", "b")]
        assert all(a in SUBNET for a in addresses) and len(set(addresses)) == 2
        _echo(bed, "b")
        assert bed.call("a", [sys.executable, "-c", ASK, bed.address("b"), "7000", "5"]) \
            == "ping\n"
        # Each host has loopback and its eth0, one route (the bed's subnet), no default route.
        routes = bed.call("a", ["ip", "-4", "route"]).strip().splitlines()
        assert len(routes) == 1 and routes[0].startswith(f"{SUBNET} dev eth0"), routes
        assert "UP" in bed.call("a", ["ip", "-br", "link", "show", "lo"])
        # The machine's own namespace gets no address or route in the bed's subnet (nothing
        # is sent from it to look: there, such an address leads out of the machine).
        assert _machine_has_no_bed_address_or_route()


def test_a_host_is_unreachable_while_its_cable_is_out_and_reachable_after():
    with TestBed(["a", "b"]) as bed:
        _echo(bed, "b")
        bed.link_down("b")
        cut = _ask(bed, "a", "b", timeout=1)
        assert cut.returncode != 0 and "ping" not in cut.stdout
        bed.link_up("b")
        deadline = time.monotonic() + 10
        while (back := _ask(bed, "a", "b")).stdout != "ping\n":
            assert time.monotonic() < deadline, back.stderr
            time.sleep(0.1)


def test_inside_runs_a_block_and_the_processes_it_starts_on_a_host():
    with TestBed(["a", "b"]) as bed:
        _echo(bed, "b")
        home = os.readlink("/proc/thread-self/ns/net")
        with bed.inside("a"):
            child = subprocess.run(["ip", "-4", "-br", "addr", "show", "eth0"],
                                   capture_output=True, text=True, check=True)
            with socket.create_connection((bed.address("b"), 7000), timeout=5) as sock:
                sock.sendall(b"hi")
                assert sock.recv(10) == b"hi"
        assert bed.address("a") in child.stdout
        assert _machine_has_no_bed_address_or_route()
        assert os.readlink("/proc/thread-self/ns/net") == home  # back where it was
        assert os.readlink(f"/proc/{os.getpid()}/ns/net") == home


def test_kill_ends_every_process_on_a_host_and_only_there():
    with TestBed(["a", "b"]) as bed:
        on_a = [bed.background("a", ["sleep", "300"]) for _ in range(2)]
        on_b = bed.background("b", ["sleep", "300"])
        assert sorted(bed.pids("a")) == sorted(p.pid for p in on_a)
        killed = bed.kill("a")
        assert sorted(killed) == sorted(p.pid for p in on_a)
        assert [p.wait(5) for p in on_a] == [-signal.SIGKILL] * 2
        assert on_b.poll() is None and bed.pids("a") == []
    assert on_b.wait(5) == -signal.SIGKILL  # closing the bed ends what still runs


def test_close_removes_every_namespace_even_after_a_failure():
    with pytest.raises(RuntimeError, match="boom"), TestBed(["a", "b"]) as bed:
        names = [bed.switch, *(h.namespace for h in bed.hosts.values())]
        assert set(names) <= set(netns.namespaces())
        raise RuntimeError("boom")
    assert not set(names) & set(netns.namespaces())


def test_a_killed_runs_namespaces_are_removed_at_the_next_start(tmp_path):
    # A child process makes a bed and is SIGKILLed before it can clean up.
    script = ("import sys, time; from infra.netns import TestBed; b = TestBed(['x']).start(); "
              "print(b.switch, b.namespace('x'), flush=True); time.sleep(300)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert child.stdout is not None
    left = child.stdout.readline().split()
    child.kill()
    child.wait(5)
    assert len(left) == 2 and set(left) <= set(netns.namespaces())
    # A process of the dead run still inside its host is killed too.
    orphan = subprocess.Popen(["ip", "netns", "exec", left[1], "sleep", "300"])
    time.sleep(0.2)
    with TestBed(["y"]) as bed:
        assert not set(left) & set(netns.namespaces())
        assert bed.namespace("y") in netns.namespaces()
    assert orphan.wait(5) == -signal.SIGKILL


def test_names_and_addresses_are_checked():
    bed = TestBed(["broker", "flow-a"])
    assert bed.namespace("flow-a").startswith(f"mq{os.getpid()}x")
    assert bed.namespace("flow-a").endswith("-flow-a")
    assert [bed.address(h) for h in ("broker", "flow-a")] == ["10.213.0.10", "10.213.0.11"]
    for bad in (["a", "a"], [], ["Bad_Name"], ["switch"]):
        with pytest.raises(ValueError):
            TestBed(bad)
    with pytest.raises(ValueError, match="do not fit"):
        TestBed([f"h{i}" for i in range(250)])
    with pytest.raises(KeyError, match="no host 'c'"):
        bed.address("c")
