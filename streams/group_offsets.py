"""The flow's progress as a Kafka consumer group's committed offsets, for lag tools.

The flow resumes from its Bytewax snapshots, not from a consumer group, so without this
``kafka-consumer-groups`` or Burrow would see no progress at all. Each snapshot's
offsets (the next offset to read per partition) are committed to the group through an admin
client's AlterConsumerGroupOffsets, which is the same OffsetCommit a simple (assigned)
consumer sends. An admin client rather than the reading consumer because a consumer that has
committed waits for its group coordinator when it closes (43-45 s per partition, measured,
with the broker down), where one that never committed closes at once.

Nothing here waits while the flow runs: a commit is sent and its answer handled on librdkafka's
thread. One request per partition is in flight at a time; a snapshot that finds one pending
skips (the next one sends the newer offset). A partition that closes waits up to 2 s for its
last commit, so a flow that reaches the end of its input leaves the group at that end.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, wait
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streams import metrics

log = logging.getLogger(__name__)


class GroupOffsets:
    """Commits offsets to consumer group ``group``, asynchronously, with an admin client made
    from ``admin_config`` on first use (shared by a process's partitions).
    """

    def __init__(self, admin_config: dict[str, Any], group: str, timeout_s: float = 10.0) -> None:
        self.admin_config = admin_config
        self.group = group
        self.timeout_s = timeout_s
        self._admin: AdminClient | None = None
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], Future] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._failing: set[tuple[str, int]] = set()

    def commit(self, topic: str, partition: int, offset: int) -> None:
        """Send ``offset`` (the next one to read) for ``topic[partition]``, unless it is
        already committed, negative (nothing read yet) or a request for it is in flight.
        """
        key = (topic, partition)
        if offset < 0 or self._committed.get(key) == offset:
            return
        with self._lock:
            pending = self._pending.get(key)
            if pending is not None and not pending.done():
                return
            if self._admin is None:
                self._admin = AdminClient(self.admin_config)
            request = ConsumerGroupTopicPartitions(self.group,
                                                   [TopicPartition(topic, partition, offset)])
            try:
                future = self._admin.alter_consumer_group_offsets(
                    [request], request_timeout=self.timeout_s)[self.group]
            except KafkaException as exc:
                self._answered(key, offset, exc)
                return
            handled: Future = Future()  # done once the answer is accounted for
            self._pending[key] = handled
        future.add_done_callback(
            lambda done: self._answered(key, offset, _error_of(done), handled))

    def flush(self, timeout_s: float = 2.0) -> None:
        """Wait up to ``timeout_s`` for the commits in flight (a flow that ends: its last
        snapshot's offsets reach the group before the process exits).
        """
        with self._lock:
            pending = [f for f in self._pending.values() if not f.done()]
        if pending:
            wait(pending, timeout_s)

    def _answered(self, key: tuple[str, int], offset: int, error: Any,
                  handled: Future | None = None) -> None:
        metrics.OFFSET_COMMITS.labels("failed" if error else "ok").inc()
        if error is None:
            self._committed[key] = offset
            self._failing.discard(key)
        elif key not in self._failing:  # once per failing streak, not every snapshot
            self._failing.add(key)
            log.warning("committing offset %d of %s[%d] to consumer group %r failed (%s); lag "
                        "tools see stale progress, the flow goes on", offset, key[0], key[1],
                        self.group, error)
        if handled is not None:
            handled.set_result(None)


def _error_of(done: Future) -> Any:
    """The request's error, or the partition's, or None."""
    error = done.exception()
    if error is not None:
        return error
    return next((tp.error for tp in done.result().topic_partitions if tp.error), None)
