"""Several "hosts" on one machine for multi-host tests: a Linux network namespace each.

``TestBed(hosts=[...])`` makes one namespace per host and one more, ``<run>-switch``, that
holds a Linux bridge; each host's ``eth0`` is one end of a veth pair whose other end is a
port of that bridge. Hosts get addresses from ``SUBNET`` (10.213.0.0/24), which exist only
inside these namespaces: the machine's own namespace gets no interface, route or address, so
nothing a test does can reach (or be reached from) anything but its own hosts. Cutting a
host's cable (``link_down``) is done on the switch side, as unplugging it would be.

Namespaces are named ``mq<pid>x<hex>-<host>`` (the pid of the process that made them), so
two runs never collide and a run killed before its cleanup is recognised: the next TestBed
removes namespaces whose pid no longer runs. Needs root and iproute2's ``ip``
(``unavailable()`` says why a machine cannot host one; tests skip with that reason).
"""

from __future__ import annotations

import atexit
import ctypes
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.contract.atomic import pid_alive

SUBNET = ipaddress.ip_network("10.213.0.0/24")
FIRST_HOST = 10  # hosts get .10, .11, ... in the order given
NETNS_DIR = Path("/run/netns")
_NAME = re.compile(r"^mq(\d+)x[0-9a-f]+-")
_HOST = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_CLONE_NEWNET = 0x40000000
_BRIDGE = "br0"
_LIVE: list[TestBed] = []  # closed at exit if a test left one open


class NetnsUnavailable(RuntimeError):
    """No network namespaces can be made here (not root, or no ``ip``)."""


@dataclass(frozen=True)
class Host:
    """One host of a bed: its namespace, address and the bridge port its cable plugs into."""

    name: str
    namespace: str
    address: str
    port: str  # the veth end in the switch namespace


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def unavailable() -> str | None:
    """Why no TestBed can be made here (None when one can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run the cluster tests as root"
    if shutil.which("ip") is None:
        return "no `ip` binary: install iproute2 (make system-deps)"
    probe = f"mq{os.getpid()}x0-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed (no CAP_SYS_ADMIN in this container?): {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def namespaces() -> list[str]:
    """Every named network namespace on the machine."""
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_all(namespace: str, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process in ``namespace`` until none is left (one may fork meanwhile)."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        out = _ip("netns", "pids", namespace, check=False).stdout
        pids = [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} in {namespace} survive SIGKILL")
        time.sleep(0.02)


def _delete(namespace: str) -> None:
    _kill_all(namespace)
    _ip("netns", "del", namespace, check=False)


def remove_stale() -> list[str]:
    """Delete the namespaces (and kill their processes) of TestBeds whose process is gone."""
    stale = [ns for ns in namespaces()
             if (m := _NAME.match(ns)) and not pid_alive(int(m.group(1)))]
    for ns in stale:
        _delete(ns)
    return stale


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def enter(namespace: str) -> None:
    """Move the calling thread, for good, into the named network namespace (a process that
    is to live on a host: threads it starts afterwards are there too).
    """
    fd = os.open(NETNS_DIR / namespace, os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


class TestBed:
    """Hosts on one switch; a context manager (``close()`` also runs at exit)."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, hosts: Sequence[str]) -> None:
        if len(set(hosts)) != len(hosts) or not hosts:
            raise ValueError(f"hosts {list(hosts)}: give distinct names")
        bad = [h for h in hosts if not _HOST.match(h) or h == "switch"]
        if bad:
            raise ValueError(f"host names {bad}: lowercase letters, digits and '-', "
                             "up to 32 characters, not 'switch'")
        if FIRST_HOST + len(hosts) > SUBNET.num_addresses - 1:
            raise ValueError(f"{len(hosts)} hosts do not fit in {SUBNET}")
        self.run_id = f"mq{os.getpid()}x{secrets.token_hex(3)}"
        self.switch = f"{self.run_id}-switch"
        self.hosts = {
            name: Host(name, f"{self.run_id}-{name}", str(SUBNET[FIRST_HOST + i]), f"p{i}")
            for i, name in enumerate(hosts)}
        self._made: list[str] = []
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> TestBed:
        """Remove stale beds, then make the switch and the hosts; a failure undoes it all."""
        reason = unavailable()
        if reason:
            raise NetnsUnavailable(reason)
        remove_stale()
        _LIVE.append(self)
        try:
            self._add_namespace(self.switch)
            _ip("-n", self.switch, "link", "add", _BRIDGE, "type", "bridge")
            _ip("-n", self.switch, "link", "set", _BRIDGE, "up")
            for host in self.hosts.values():
                self._add_namespace(host.namespace)
                _ip("link", "add", "eth0", "netns", host.namespace, "type", "veth",
                    "peer", "name", host.port, "netns", self.switch)
                _ip("-n", self.switch, "link", "set", host.port, "master", _BRIDGE)
                _ip("-n", self.switch, "link", "set", host.port, "up")
                _ip("-n", host.namespace, "addr", "add", f"{host.address}/{SUBNET.prefixlen}",
                    "dev", "eth0")
                _ip("-n", host.namespace, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def close(self) -> None:
        """Kill every process in the bed's namespaces and delete them (idempotent)."""
        with self._lock:
            while self._made:
                _delete(self._made.pop())
        if self in _LIVE:
            _LIVE.remove(self)

    def __enter__(self) -> TestBed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addressing ------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        """The host called ``name``."""
        try:
            return self.hosts[name]
        except KeyError:
            raise KeyError(f"no host {name!r} in this bed: {sorted(self.hosts)}") from None

    def address(self, host: str) -> str:
        """The host's IPv4 address (in ``SUBNET``)."""
        return self.host(host).address

    def namespace(self, host: str) -> str:
        """The host's namespace name, for ``ip netns exec``."""
        return self.host(host).namespace

    # -- processes -------------------------------------------------------------------------

    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the host (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    def run(self, host: str, argv: Sequence[str], **popen: Any) -> subprocess.CompletedProcess:
        """``subprocess.run`` of ``argv`` on the host."""
        return subprocess.run(self.argv(host, argv), **popen)

    def call(self, host: str, argv: Sequence[str], timeout: float = 60) -> str:
        """Run ``argv`` on the host and return its stdout; a non-zero exit raises, with
        stderr in the message.
        """
        proc = self.run(host, argv, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} on {host} exited {proc.returncode}: "
                               f"{proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def background(self, host: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen:
        """Start ``argv`` on the host in a session of its own (``os.killpg`` reaches it all).

        Returns once the process is in the host's namespace (``ip netns exec`` forks in the
        machine's and moves over), so ``pids`` and ``kill`` see it from then on.
        """
        popen.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.argv(host, argv), **popen)
        inode = os.stat(NETNS_DIR / self.namespace(host)).st_ino
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if os.stat(f"/proc/{proc.pid}/ns/net").st_ino == inode:
                    break
            except FileNotFoundError:
                break
            time.sleep(0.002)
        return proc

    @contextmanager
    def inside(self, host: str) -> Iterator[None]:
        """Run the block with the calling thread in the host's namespace.

        What the block creates stays there after it: sockets and clients (a Kafka producer,
        a Redis connection), and processes it starts (``subprocess.Popen`` forks from this
        thread), so code that starts servers (``EmbeddedBroker``, ``start_member``) runs on a
        host unchanged. Other threads stay where they are.
        """
        target = os.open(NETNS_DIR / self.namespace(host), os.O_RDONLY)
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(target)
            os.close(home)

    def pids(self, host: str) -> list[int]:
        """Processes running in the host's namespace."""
        out = _ip("netns", "pids", self.namespace(host), check=False).stdout
        return [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]

    def kill(self, host: str) -> list[int]:
        """SIGKILL every process on the host, as a power cut would; the pids killed."""
        return _kill_all(self.namespace(host))

    # -- the network -----------------------------------------------------------------------

    def link_down(self, host: str) -> None:
        """Unplug the host's cable at the switch: nothing gets in or out until ``link_up``."""
        _ip("-n", self.switch, "link", "set", self.host(host).port, "down")

    def link_up(self, host: str) -> None:
        """Plug the host's cable back in."""
        _ip("-n", self.switch, "link", "set", self.host(host).port, "up")


@atexit.register
def _close_live() -> None:
    for bed in list(_LIVE):
        bed.close()
