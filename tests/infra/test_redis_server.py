"""A real ``redis-server``: started on a free loopback port, usable, stopped for good."""

import shutil
import socket

import pytest
import redis

from infra.redis_server import RedisServer, redis_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (make system-deps)")]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_server_answers_in_its_folder_and_is_gone_after_stop(tmp_path):
    server = RedisServer(tmp_path / "redis")
    with server:
        assert server.alive() and server.pids() == [server.process.pid]
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("dir")["dir"] == str((tmp_path / "redis").resolve())
    assert not server.alive() and server.pids() == []
    assert server.exit_code() is not None
    assert not _listening(server.port)


def test_a_taken_port_fails_the_start_and_names_it(tmp_path):
    with RedisServer(tmp_path / "a") as first:
        second = RedisServer(tmp_path / "b", port=first.port)
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{first.port}"):
            second.start(timeout=5)
        assert not second.alive()


def test_redis_for_starts_one_when_none_is_configured_and_stops_it(monkeypatch):
    monkeypatch.delenv("MARQUEE_REDIS_URL", raising=False)
    with redis_for() as url:
        assert url.startswith("redis://127.0.0.1:")
        assert redis.Redis.from_url(url).ping()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert not _listening(port)


def test_redis_for_uses_the_configured_one(monkeypatch, redis_url):
    monkeypatch.setenv("MARQUEE_REDIS_URL", redis_url)
    with redis_for() as url:
        assert url == redis_url
    assert redis.Redis.from_url(redis_url).ping()  # not stopped: it is not ours


def test_defaults_keep_no_append_only_file_on_loopback(tmp_path):
    with RedisServer(tmp_path / "r") as server:
        assert server.url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(server.url)
        assert client.config_get("appendonly")["appendonly"] == "no"
        assert client.config_get("bind")["bind"] == "127.0.0.1"


def test_a_persistent_server_keeps_every_acknowledged_write_across_sigkill(tmp_path):
    server = RedisServer(tmp_path / "r", persist=True)
    with server:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("appendfsync")["appendfsync"] == "always"
        for i in range(200):
            client.hset(f"row:{i}", mapping={"n": i})
        server.kill()  # no shutdown save: only the fsynced append-only file remains
        assert server.exit_code() is not None
        server.start()
        client = redis.Redis.from_url(server.url)
        assert [int(client.hget(f"row:{i}", "n")) for i in range(200)] == list(range(200))
