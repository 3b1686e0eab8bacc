"""Rolling producer sequences back to the stored log, on a real broker's storage."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from infra.broker import EmbeddedBroker
from infra.tansu_recovery import META_KEY, repair_producer_sequences
from streams.consume import read_all
from streams.produce import produce_events
from streams.topics import create_topics

pytestmark = pytest.mark.integration


def test_a_sequence_ahead_of_the_log_is_rolled_back_to_its_end(tmp_path: Path):
    with EmbeddedBroker(data_dir=tmp_path / "broker") as broker:
        create_topics(broker.settings(), {"t": 1})
        report = produce_events([b'{"user_id": "u1"}'] * 500, broker.settings(), topic="t",
                                progress=False)
        assert report.delivered == 500
        os.kill(broker.process.pid, signal.SIGKILL)
        broker.process.wait(5)

        meta = broker.store.get_json(META_KEY)
        (pid, detail), = meta["producers"].items()
        assert detail["sequences"]["0"]["t"]["0"] == 500
        # What a kill between Tansu's sequence write and its batch write leaves behind.
        detail["sequences"]["0"]["t"]["0"] = 700
        broker.store.put_json(META_KEY, meta)

        assert repair_producer_sequences(broker.store) == [
            f"producer {pid} on t[0]: sequence 700 -> 500 (the log ends there)"]
        assert broker.store.get_json(META_KEY)["producers"][pid]["sequences"]["0"]["t"]["0"] \
            == 500
        assert repair_producer_sequences(broker.store) == []  # nothing left to repair

        broker.start()
        assert broker.repairs == []
        assert produce_events([b'{"user_id": "u2"}'] * 10, broker.settings(), topic="t",
                              progress=False).delivered == 10
        assert len(read_all(broker.settings(), "t", expected=510, timeout=20)) == 510
