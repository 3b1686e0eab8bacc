"""Which TCP sockets a tree of processes listens on, read from /proc (Linux).

Tests use it to check that what Marquee starts binds loopback only: a socket's inode in
``/proc/net/tcp{,6}`` is matched to the processes whose ``/proc/<pid>/fd`` hold it, so the
answer names the process, like ``ss -ltnp`` does, without needing ``ss`` or root.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket and a process that holds it."""

    address: str
    port: int
    pid: int
    command: str

    @property
    def loopback(self) -> bool:
        """True for 127.0.0.0/8 and ::1 (and ::ffff:127.x); False for 0.0.0.0, :: and the rest."""
        ip = ipaddress.ip_address(self.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port} pid {self.pid} ({self.command})"


def _address(hex_ip: str) -> str:
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:  # one little-endian 32-bit word
        return str(ipaddress.IPv4Address(raw[::-1]))
    # four 32-bit words, each little-endian
    return str(ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))


def listening_inodes(proc: Path = PROC) -> dict[int, tuple[str, int]]:
    """``{inode: (address, port)}`` of every listening TCP socket in this network namespace."""
    found: dict[int, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        path = proc / "net" / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != _LISTEN:
                continue
            hex_ip, hex_port = fields[1].split(":")
            found[int(fields[9])] = (_address(hex_ip), int(hex_port, 16))
    return found


def children(pid: int, proc: Path = PROC) -> list[int]:
    """``pid`` and all its descendants alive now (from each process' ``stat`` parent)."""
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # comm may contain spaces and parentheses: the parent pid follows the last ')'
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        tree += kids
        frontier += kids
    return tree


def _socket_inodes(pid: int, proc: Path) -> set[int]:
    inodes = set()
    try:
        fds = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _command(pid: int, proc: Path) -> str:
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in argv if a)[:120]


def listeners(pids: Iterable[int], proc: Path = PROC) -> list[Listener]:
    """Every listening TCP socket held by one of ``pids`` (pass ``children(root)`` for a tree)."""
    table = listening_inodes(proc)
    found = []
    for pid in pids:
        for inode in _socket_inodes(pid, proc) & table.keys():
            address, port = table[inode]
            found.append(Listener(address, port, pid, _command(pid, proc)))
    return sorted(found, key=lambda s: (s.port, s.pid))


def exposed(pids: Iterable[int], proc: Path = PROC) -> list[Listener]:
    """The listeners of ``pids`` reachable from another host (not on a loopback address)."""
    return [s for s in listeners(pids, proc) if not s.loopback]
