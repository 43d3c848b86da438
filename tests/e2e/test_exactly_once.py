"""Exactly-once mode against the real broker: outputs, dead letters and input offsets committed
in one transaction per window; a stop and a restart score every record once; a second instance
with the same transactional id fences the first.

The tansu broker the tests use commits transactions and hides open ones from `read_committed`
readers, but shows the records of aborted transactions to them. So these tests prove the commit
path; the abort paths (a rebalance, a refused record, fencing mid-transaction) are proven against
librdkafka's mock cluster in `runtime/tests/exactly_once.rs`. Each case prints a `FAULT` line.
"""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime, timezone

from streamtools import kafka, second_client, services

from flow import OUTPUT_TIMEOUT, STOP_TIMEOUT, embedded, read_while_running, some, wait_for
from test_faults import fill, ids_of, report, run_to_the_end, tally
from test_fraud_pipeline import SEED
from test_operations import scrape, value

NOT_JSON = [b"not json", b"{\"id\": ", b"\xff\xfe"]


def exactly_once(overrides: dict, **more) -> dict:
    return {
        **embedded(overrides),
        "kafka.delivery": '"exactly-once"',
        "kafka.transaction-interval": '"100ms"',
        **more,
    }


def stopped_line(log: str) -> dict[str, int]:
    """The figures of the runtime's `stopped` line."""
    line = next(line for line in reversed(log.splitlines()) if " stopped " in line)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)\b", line)}


def test_stopped_and_restarted_every_record_is_scored_or_dead_lettered_once(broker, topics, overrides, start_runtime):
    """A run stopped with SIGTERM part-way and restarted: a `read_committed` reader sees every
    record's output, or its dead letter, exactly once, and the group's committed offsets (written
    by the transactions alone) are the input's end."""
    count = 20_000
    ids, produced = fill(broker.bootstrap, topics.input, SEED + 51, count)
    bad = kafka.produce(broker.bootstrap, topics.input, [(f"bad-{i}".encode(), v) for i, v in enumerate(NOT_JSON)])
    end = {p: max(produced.end_offsets().get(p, 0), bad.end_offsets().get(p, 0)) for p in produced.end_offsets()}
    settings = exactly_once(overrides)
    started = time.monotonic()
    with kafka.TopicReader(broker.bootstrap, topics.output) as reader:
        first = start_runtime(settings)
        outputs = read_while_running(reader, first, count // 3, OUTPUT_TIMEOUT)
        first.signal(signal.SIGTERM)
        assert first.wait(STOP_TIMEOUT) == 0, first.tail()
        outputs += reader.drain(idle=1.0)
        at_stop = len(outputs)
        second = start_runtime(settings)
        outputs = run_to_the_end(reader, second, ids, outputs)
    elapsed = time.monotonic() - started
    with kafka.TopicReader(broker.bootstrap, topics.dead_letter) as letters_reader:
        letters = letters_reader.drain(idle=2.0)
    missing, duplicated = tally(outputs, ids)
    letter_keys = sorted(r.key.decode() for r in letters)
    figures = [stopped_line(r.log()) for r in (first, second)]
    report("exactly-once stop and restart", records_in=count + len(NOT_JSON), out=len(outputs),
           dead_lettered=len(letters), duplicated=duplicated, lost=len(missing), scored_at_stop=at_stop,
           transactions=sum(f["transactions"] for f in figures), aborted=sum(f["aborted"] for f in figures),
           seconds=round(elapsed, 1))
    assert not missing, f"ids never scored: {some(missing)}"
    assert duplicated == 0, f"{duplicated} scores seen twice: {some(k for k, n in ids_of(outputs).items() if n > 1)}"
    assert letter_keys == sorted(f"bad-{i}" for i in range(len(NOT_JSON))), letter_keys
    assert all(f["transactions"] > 0 for f in figures), figures
    assert kafka.committed_offsets(broker.bootstrap, topics.group, topics.input) == end
    # What `read_committed` readers get, read again by a client that shares no code with
    # librdkafka: the same records, byte for byte.
    assert second_client.assert_clients_agree(broker.bootstrap, topics.output, committed_only=True) == len(outputs)
    assert second_client.assert_clients_agree(broker.bootstrap, topics.dead_letter, committed_only=True) == len(letters)


def test_a_zombie_is_fenced_by_its_replacement_with_the_same_transactional_id(broker, topics, overrides, start_runtime):
    """An instance frozen mid-run (SIGSTOP, as in a long pause or a partition) is replaced by one
    with the same transactional id, which fences it and scores every record; woken up, the
    zombie stops with exit 1 and says it was fenced, having committed nothing more."""
    count = 20_000
    ids, _ = fill(broker.bootstrap, topics.input, SEED + 52, count)
    settings = exactly_once(overrides, **{"kafka.transactional-id": f'"{topics.group}-fixed"'})
    with kafka.TopicReader(broker.bootstrap, topics.output) as reader:
        zombie = start_runtime(settings)
        outputs = read_while_running(reader, zombie, count // 4, OUTPUT_TIMEOUT)
        zombie.signal(signal.SIGSTOP)
        try:
            # Its session (6 s in config/fraud.toml) runs out: the group forgets it.
            time.sleep(9)
            replacement = start_runtime(settings)
            outputs += read_while_running(reader, replacement, len(ids - set(ids_of(outputs))), OUTPUT_TIMEOUT)
        finally:
            zombie.signal(signal.SIGCONT)
        woke = time.monotonic()
        code = zombie.wait(60)
        stopped_after = time.monotonic() - woke
        assert code == 1, f"the zombie exited with {code}:\n{zombie.tail()}"
        # A Kafka broker answers the zombie's next transactional request with PRODUCER_FENCED;
        # tansu may close the connection instead, and the runtime says what that can mean.
        last = zombie.log().strip().splitlines()[-1]
        assert "fenced" in last, zombie.tail()
        outputs = run_to_the_end(reader, replacement, ids, outputs)
    missing, duplicated = tally(outputs, ids)
    report("exactly-once zombie fenced", records_in=count, out=len(outputs), duplicated=duplicated,
           lost=len(missing), zombie_stopped_s=round(stopped_after, 1))
    assert not missing, f"ids never scored: {some(missing)}"
    # The zombie's open transaction was aborted by its replacement; tansu still shows aborted
    # records, so duplicates are counted, not asserted to be zero (see the module's note).


def test_outputs_wait_for_the_transaction_to_commit(broker, topics, overrides, start_runtime):
    """With an 8 s transaction interval, a `read_committed` reader sees no output until the first
    transaction commits, about 8 s after the partitions are assigned, then all of it at once."""
    count, interval = 200, 8.0
    ids, _ = fill(broker.bootstrap, topics.input, SEED + 53, count)
    settings = exactly_once(overrides, **{"kafka.transaction-interval": f'"{int(interval)}s"'})
    with kafka.TopicReader(broker.bootstrap, topics.output) as reader:
        runtime = start_runtime(settings)
        first = read_while_running(reader, runtime, 1, OUTPUT_TIMEOUT)
        seen_at = datetime.now(timezone.utc)
        assert first, runtime.tail()
        assigned = next((line for line in runtime.log().splitlines() if "partitions assigned" in line), None)
        assert assigned, runtime.tail()
        assigned_at = datetime.fromisoformat(assigned.split()[0].replace("Z", "+00:00"))
        waited = (seen_at - assigned_at).total_seconds()
        outputs = first + reader.read(count, timeout=3.0)
        report("exactly-once visibility", records_in=count, first_output_after_assignment_s=round(waited, 1),
               out_with_the_first=len(outputs))
        assert waited >= interval - 2.0, f"an output was visible {waited:.1f} s after assignment"
        assert len(set(ids_of(outputs))) == count, "one commit shows the whole window"
        outputs = run_to_the_end(reader, runtime, ids, outputs)
    missing, duplicated = tally(outputs, ids)
    assert not missing and duplicated == 0, (some(missing), duplicated)


def test_metrics_follow_the_transactions(broker, topics, overrides, start_runtime):
    """In exactly-once mode the offsets are committed by the producer's transactions, which the
    consumer's own statistics never see: /metrics still reports each partition's committed offset
    at the input's end, no lag, and the transactions committed."""
    count = 500
    ids, produced = fill(broker.bootstrap, topics.input, SEED + 54, count)
    runtime = start_runtime(exactly_once(overrides))
    base = services.metrics_url(runtime)
    with kafka.TopicReader(broker.bootstrap, topics.output) as reader:
        outputs = read_while_running(reader, runtime, count, OUTPUT_TIMEOUT)
    assert len(set(ids_of(outputs))) == count, runtime.tail()
    end = produced.end_offsets()

    def settled():
        samples = scrape(base)
        committed = {int(s.labels["partition"]): s.value for s in samples.get("streaminfer_kafka_committed_offset", [])}
        lag = [s.value for s in samples.get("streaminfer_kafka_consumer_lag", [])]
        return samples if committed == {p: end.get(p, 0) for p in committed} and len(committed) == 4 and lag == [0] * 4 else None

    samples = wait_for("committed offsets at the input's end", settled, timeout=30)
    assert value(samples, "streaminfer_transactions_committed_total") > 0
    assert value(samples, "streaminfer_transactions_aborted_total") == 0
