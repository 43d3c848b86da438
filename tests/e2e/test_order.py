"""`pipeline.order` on the real runtime and broker: one input partition, a record whose plugin
call takes 300 ms (the hostile plugin's `doze`), records of other keys behind it. By partition
nothing passes it; by key and with no order the records of other keys do (the partition's keys
are spread over two plugin instances), while a later record of its own key still comes after
it. In every mode all records are produced once and the group commits past all of them."""

from __future__ import annotations

import signal
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from streamtools import kafka, paths

from flow import OUTPUT_TIMEOUT, STOP_TIMEOUT, embedded, read_while_running

WORKERS = 2
OTHERS = 40


def fnv1a(data: bytes) -> int:
    """The runtime's stable hash (64-bit FNV-1a), which picks a key's plugin instance."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def instance(key: bytes) -> int:
    return fnv1a(key) % WORKERS


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


@pytest.mark.parametrize("order", ["partition", "key", "none"])
def test_what_may_pass_a_slow_record(order, broker, overrides, start_runtime):
    suffix = uuid.uuid4().hex[:10]
    source, out, dead = f"order-in-{suffix}", f"order-out-{suffix}", f"order-dl-{suffix}"
    kafka.create_topics(broker.bootstrap, {source: 1, out: 1, dead: 1})
    slow = b"slow"
    # Keys the other instance handles, so that the slow record holds up none of them there.
    others = [k for k in (f"k{i}".encode() for i in range(1000)) if instance(k) != instance(slow)][:OTHERS]
    records = [(slow, b"doze")]
    records += [(key, b"say-" + key) for key in others]
    records.append((slow, b"say-after"))
    kafka.produce(broker.bootstrap, source, records)

    settings = {
        **embedded(overrides),
        "kafka.input-topic": source,
        "kafka.output-topic": out,
        "kafka.dead-letter-topic": dead,
        "pipeline.order": f'"{order}"',
        "plugin.workers": WORKERS,
        "pipeline.batch-size": 1,
        "pipeline.max-batches-in-flight": 16,
    }
    runtime = start_runtime(settings, plugin=paths.hostile_plugin())
    with kafka.TopicReader(broker.bootstrap, out) as reader:
        outputs = read_while_running(reader, runtime, len(records), OUTPUT_TIMEOUT)
        assert runtime.running(), runtime.tail()
        runtime.signal(signal.SIGTERM)
        assert runtime.wait(STOP_TIMEOUT) == 0, runtime.tail()
        outputs += reader.drain(idle=1.0)

    values = [o.value.decode() for o in outputs]
    wanted = ["dozed", *(k.decode() for k in others), "after"]
    assert sorted(values) == sorted(wanted), f"each record once: {values}"
    assert f"order={order.capitalize() if order != 'none' else 'Unordered'}" in runtime.log(), runtime.tail()
    passed = values.index("dozed")
    if order == "partition":
        assert values == wanted, f"by partition nothing passes: {values}"
    else:
        assert passed > 0, f"with order {order!r} records of other keys pass the slow one: {values}"
        assert values.index("after") > passed, f"its own key's later record stays behind it: {values}"
    assert committed(broker.bootstrap, overrides["kafka.group-id"], source) == len(records)
