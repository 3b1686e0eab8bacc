"""How the flow's processes are started (pure: no process is run)."""

from pathlib import Path

import pytest

from streams.launch import Launch


def test_one_process_has_no_cluster_flags_and_no_recovery_snapshots() -> None:
    ((argv, env),) = Launch().commands()
    assert "-i" not in argv and "-a" not in argv and "-r" not in argv
    assert argv[argv.index("-s") + 1] == "3600" and env == {}


def test_each_process_gets_its_id_the_addresses_and_its_own_metrics_port(tmp_path: Path) -> None:
    launch = Launch(processes=3, workers=2, recovery_dir=tmp_path / "r", snapshot_s=4,
                    metrics_port=9100)
    cmds = launch.commands("a:1;b:2;c:3")
    assert [argv[argv.index("-i") + 1] for argv, _ in cmds] == ["0", "1", "2"]
    assert {argv[argv.index("-a") + 1] for argv, _ in cmds} == {"a:1;b:2;c:3"}
    assert [env["MARQUEE_FLOW_METRICS_PORT"] for _, env in cmds] == ["9100", "9101", "9102"]
    argv = cmds[0][0]
    assert argv[argv.index("-w") + 1] == "2" and argv[argv.index("-s") + 1] == "4"
    assert argv[argv.index("-r") + 1] == str(tmp_path / "r")


def test_recovery_gets_one_partition_per_worker(tmp_path: Path) -> None:
    Launch(processes=2, workers=2, recovery_dir=tmp_path / "r").ensure_recovery()
    assert len(list((tmp_path / "r").glob("part-*.sqlite3"))) == 4


def test_a_cluster_without_addresses_or_workers_is_refused() -> None:
    with pytest.raises(ValueError, match="addresses"):
        Launch(processes=2).commands()
    with pytest.raises(ValueError):
        Launch(processes=0)


def test_free_ports_are_below_the_ephemeral_range_and_free() -> None:
    import socket

    from streams.launch import LISTEN_PORTS, free_port

    ports = {free_port() for _ in range(20)}
    assert all(p in LISTEN_PORTS for p in ports) and len(ports) > 1
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing holds it


def test_a_recovery_directory_made_for_other_workers_is_refused_with_the_fix(tmp_path):
    folder = tmp_path / "recovery"
    Launch(processes=2, recovery_dir=folder).ensure_recovery()
    assert len(list(folder.glob("part-*.sqlite3"))) == 2
    Launch(processes=2, recovery_dir=folder).ensure_recovery()  # the same shape: fine
    with pytest.raises(ValueError, match="made for 2 workers; this launch has 1"):
        Launch(processes=1, recovery_dir=folder).ensure_recovery()
