"""The object store under the durable broker: S3 conditional PUTs, for real, over HTTP."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.object_store import BUCKET, ObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    with ObjectStore(tmp_path / "objects") as running:
        yield running


def put(store: ObjectStore, key: str, body: bytes, **headers: str) -> tuple[int, str]:
    """PUT ``body``; the HTTP status and the ETag (412 and "" when a precondition failed)."""
    request = urllib.request.Request(f"{store.endpoint}/{BUCKET}/{key}", data=body,
                                     method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.headers["ETag"]
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def get(store: ObjectStore, key: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(f"{store.endpoint}/{BUCKET}/{key}", timeout=10) as reply:
        return reply.read(), reply.headers["ETag"]


def test_puts_honour_if_none_match_and_if_match(store):
    assert put(store, "k", b"1", **{"If-None-Match": "*"})[0] == 200
    assert put(store, "k", b"2", **{"If-None-Match": "*"})[0] == 412
    body, etag = get(store, "k")
    assert body == b"1"
    assert put(store, "k", b"3", **{"If-Match": '"0000"'})[0] == 412
    status, new_etag = put(store, "k", b"4", **{"If-Match": etag})
    assert status == 200 and new_etag != etag
    assert put(store, "k", b"5", **{"If-Match": etag})[0] == 412  # the old version is gone
    assert put(store, "absent", b"6", **{"If-Match": etag})[0] == 412
    assert get(store, "k")[0] == b"4"


def test_concurrent_compare_and_set_increments_lose_no_update(store):
    """The pattern Tansu moves a high watermark with: read, add, PUT If-Match, retry on 412."""
    put(store, "counter", b"0")
    threads, increments = 4, 25

    def worker() -> None:
        done = 0
        while done < increments:
            body, etag = get(store, "counter")
            if put(store, "counter", str(int(body) + 1).encode(), **{"If-Match": etag})[0] == 200:
                done += 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert int(get(store, "counter")[0]) == threads * increments


def test_objects_outlive_a_sigkill_of_the_server(store):
    put(store, "a/b.json", b'{"high": 42}')
    store.kill()
    assert not store.alive()
    store.start()
    assert get(store, "a/b.json")[0] == b'{"high": 42}'
    assert not list(store.directory.rglob("*.tmp"))  # writes leave no temporary files
