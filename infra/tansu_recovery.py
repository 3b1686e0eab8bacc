"""Before Tansu starts on durable storage: roll producer sequences back to what the log holds.

Tansu 0.6's S3 engine handles an idempotent produce in three writes: the producer's next
sequence number (``meta.json``), the partition's high watermark, then the record batch. A
broker killed between the first and the last leaves a sequence number ahead of the log; the
client then retries the batch it never got an answer for, Tansu calls it a duplicate, and the
client counts as acknowledged a batch that was never stored. Setting each producer's sequence
back to the end of its last stored batch makes that retry an ordinary, stored write, and a
retry of a batch that was stored is still answered as a duplicate (so not stored twice).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.object_store import OBJECT_SUFFIX, ObjectStore

CLUSTER = "tansu_cluster"  # Tansu's default --cluster-id
META_KEY = f"clusters/{CLUSTER}/meta.json"
# Kafka record batch v2 header: lastOffsetDelta at byte 23, producerId/Epoch/baseSequence at 43.
_HEADER = struct.Struct(">23xi16xqhi")


@dataclass(frozen=True)
class BatchHeader:
    """Who wrote a stored batch, and which sequence numbers it covered."""

    producer_id: int
    epoch: int
    base_sequence: int
    last_offset_delta: int

    @property
    def next_sequence(self) -> int:
        """The sequence number the producer's following batch carries."""
        return self.base_sequence + self.last_offset_delta + 1


def read_header(path: Path) -> BatchHeader:
    """The producer fields of the record batch stored in ``path``."""
    with path.open("rb") as f:
        delta, producer_id, epoch, base_sequence = _HEADER.unpack(f.read(_HEADER.size))
    return BatchHeader(producer_id, epoch, base_sequence, delta)


def stored_next_sequences(records: Path, wanted: dict[int, int]) -> dict[int, int]:
    """For each producer id in ``wanted`` (id -> its current epoch), the sequence after its
    last batch of that epoch stored in the ``records`` folder of one partition (0 if none).

    Reads batches newest first and stops once every producer is placed.
    """
    pending = dict(wanted)
    found = dict.fromkeys(wanted, 0)
    batches = sorted(records.glob(f"*.batch{OBJECT_SUFFIX}"), reverse=True)
    for path in batches:
        if not pending:
            break
        header = read_header(path)
        epoch = pending.get(header.producer_id)
        if epoch is None or header.epoch > epoch:
            continue
        if header.epoch == epoch:
            found[header.producer_id] = header.next_sequence
        del pending[header.producer_id]  # an older epoch: nothing of this one is stored
    return found


def repair_producer_sequences(store: ObjectStore) -> list[str]:
    """Roll back every producer sequence in ``meta.json`` that is ahead of the stored batches.

    Run while Tansu is down and the object store is up. Returns one line per change.
    """
    meta: dict[str, Any] | None = store.get_json(META_KEY)
    if not meta or not meta.get("producers"):
        return []
    # (topic, partition) -> {producer id: epoch}, for each producer's current epoch.
    by_partition: dict[tuple[str, str], dict[int, int]] = {}
    for pid, detail in meta["producers"].items():
        epochs = detail.get("sequences") or {}
        if epochs:
            epoch = max(epochs, key=int)
            for topic, partitions in epochs[epoch].items():
                for partition in partitions:
                    by_partition.setdefault((topic, partition), {})[int(pid)] = int(epoch)
    changes = []
    for (topic, partition), wanted in sorted(by_partition.items()):
        records = store.folder(
            f"clusters/{CLUSTER}/topics/{topic}/partitions/{int(partition):010d}/records")
        for pid, stored in stored_next_sequences(records, wanted).items():
            sequences = meta["producers"][str(pid)]["sequences"][str(wanted[pid])][topic]
            if sequences[partition] > stored:
                changes.append(f"producer {pid} on {topic}[{partition}]: sequence "
                               f"{sequences[partition]} -> {stored} (the log ends there)")
                sequences[partition] = stored
    if changes:
        store.put_json(META_KEY, meta)
    return changes
