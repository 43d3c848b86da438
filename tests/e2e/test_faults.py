"""The fault suite: Kafka-side failures against the real broker, each printing records in / out /
dead-lettered / duplicated / lost and the time to recover (run pytest with -s to see the lines;
they are also in the test report on failure).

- records the Kafka protocol allows but a plugin cannot take (header keys that are not UTF-8,
  null values, tombstones, empty values, values at the size limit, binary header values);
- the runtime killed with SIGKILL at random moments and restarted;
- the broker process stopped (SIGSTOP) for 20 s mid-run and resumed;
- SIGTERM while the model server is down and the breaker open.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from streamtools import fraud, kafka, paths, services

from flow import OUTPUT_TIMEOUT, STOP_TIMEOUT, embedded, get, read_while_running, some
from test_fraud_pipeline import SEED


def report(case: str, **figures) -> None:
    """One line of figures per case, greppable in CI's log."""
    print(f"\nFAULT {case}: " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def raw_tool() -> Path:
    """The byte-for-byte Kafka tool (runtime/examples/kafka_raw.rs), beside the runtime binary."""
    tool = paths.runtime_binary().parent / "examples" / "kafka_raw"
    if not tool.is_file():
        pytest.fail(f"{tool} is missing: cargo build --workspace --all-targets builds it", pytrace=False)
    return tool


def raw_produce(brokers: str, topic: str, records: list[dict]) -> list[dict]:
    lines = "".join(json.dumps(r) + "\n" for r in records)
    out = subprocess.run(
        [raw_tool(), "produce", brokers, topic], input=lines, capture_output=True, text=True, timeout=60, check=True
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def raw_read(brokers: str, topic: str, count: int, timeout: float = 30.0) -> list[dict]:
    out = subprocess.run(
        [raw_tool(), "read", brokers, topic, str(count), str(timeout)],
        capture_output=True, text=True, timeout=timeout + 30, check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def h(data: bytes | None) -> str | None:
    return None if data is None else data.hex()


def header(record: dict, name: str) -> str | None:
    values = [bytes.fromhex(v).decode() for k, v in record["headers"] if bytes.fromhex(k) == name.encode() and v]
    return values[-1] if values else None


def fill(brokers: str, topic: str, seed: int, count: int, first_id: int = 1) -> tuple[set, kafka.ProduceReport]:
    """``count`` fraud transactions produced to ``topic``: their ids and the produce report."""
    inputs = fraud.input_records(seed, count, first_id=first_id)
    produced = kafka.produce(brokers, topic, [(r.key, r.value) for r in inputs])
    return {r.transaction["id"] for r in inputs}, produced


def ids_of(outputs) -> Counter:
    return Counter(json.loads(r.value)["id"] for r in outputs)


def run_to_the_end(reader: kafka.TopicReader, runtime: services.Service, ids: set, outputs: list) -> list:
    """Reads until every id is scored (or the wait or the runtime ends), then stops the runtime
    with SIGTERM, which must exit 0, and returns the outputs with what arrived meanwhile."""
    missing = ids - set(ids_of(outputs))
    deadline = time.monotonic() + OUTPUT_TIMEOUT
    while missing and time.monotonic() < deadline and runtime.running():
        outputs = outputs + reader.read(len(missing), timeout=1.0)
        missing = ids - set(ids_of(outputs))
    runtime.signal(signal.SIGTERM)
    assert runtime.wait(STOP_TIMEOUT) == 0, runtime.tail()
    return outputs + reader.drain(idle=1.0)


def tally(outputs, ids: set) -> tuple[list, int]:
    """The ids never scored, and how many scores were repeats."""
    seen = ids_of(outputs)
    return sorted(ids - set(seen)), sum(n - 1 for n in seen.values())


def test_records_the_plugin_cannot_take_are_dead_lettered_byte_for_byte(broker, topics, overrides, start_runtime):
    """Each odd record is handled or dead-lettered with its reason, its dead letter carries its key,
    value and headers byte for byte (or the documented cap), and the runtime keeps running: a
    good record after them is scored."""
    good = fraud.input_records(SEED + 30, 3)
    big = b"x" * 999_000
    odd = {
        "non-utf8-header-key": {"key": h(b"k1"), "value": h(good[0].value), "headers": [["fffe", "01"], [h(b"ok"), None]]},
        "null-value": {"key": None, "value": None, "headers": []},
        "tombstone": {"key": h(b"k3"), "value": None, "headers": [[h(b"h"), h(b"\x00\xff")]]},
        "empty-value": {"key": h(b"k4"), "value": "", "headers": []},
        "value-at-size-limit": {"key": h(b"k5"), "value": h(big), "headers": [[h(b"big"), h(b"1")]]},
    }
    # Binary and null header values on a good record: it is scored as any other.
    binary_headers = {"key": h(good[1].key), "value": h(good[1].value), "headers": [[h(b"bin"), h(bytes(range(256)))], [h(b"nul"), None]]}
    last = {"key": h(good[2].key), "value": h(good[2].value), "headers": []}
    specs = [dict(s, partition=0) for s in [*odd.values(), binary_headers, last]]
    placed = raw_produce(broker.bootstrap, topics.input, specs)
    offsets = {name: placed[i]["offset"] for i, name in enumerate(odd)}

    runtime = start_runtime(embedded(overrides))
    with kafka.TopicReader(broker.bootstrap, topics.output) as reader:
        outputs = read_while_running(reader, runtime, 2, OUTPUT_TIMEOUT)
    assert runtime.running(), f"the runtime stopped on an odd record:\n{runtime.tail()}"
    scored = {json.loads(r.value)["id"] for r in outputs}
    assert scored == {good[1].transaction["id"], good[2].transaction["id"]}, scored

    letters = raw_read(broker.bootstrap, topics.dead_letter, len(odd))
    by_offset = {int(header(d, "source-offset")): d for d in letters}
    assert sorted(by_offset) == sorted(offsets.values()), f"dead letters for offsets {sorted(by_offset)}"
    reasons = {}
    for name, spec in odd.items():
        letter = by_offset[offsets[name]]
        reasons[name] = header(letter, "dead-letter-reason")
        assert letter["key"] == spec["key"], name
        assert letter["headers"][: len(spec["headers"])] == spec["headers"], f"{name}: headers not byte for byte"
        if name == "value-at-size-limit":
            # Over the 1 MB limit with the reason headers: cut to fit, saying so, with a digest.
            truncated = header(letter, "dead-letter-truncated")
            assert truncated and truncated.startswith("value: "), truncated
            assert header(letter, "dead-letter-value-sha256") == hashlib.sha256(big).hexdigest()
            assert len(letter["value"]) > len(spec["value"]) * 0.99 and big.hex().startswith(letter["value"])
        else:
            assert letter["value"] == spec["value"], f"{name}: value not byte for byte"
    assert reasons["non-utf8-header-key"] == "invalid-header"
    assert header(by_offset[offsets["non-utf8-header-key"]], "dead-letter-fault") == "record"
    report("poison", records_in=len(specs), out=len(outputs), dead_lettered=len(letters),
           reasons=",".join(f"{k}:{v}" for k, v in reasons.items()), lost=0)


def acknowledgement_p99(runtime: services.Service) -> float:
    """Seconds from taking a record to the broker's acknowledgement of its outputs, at the
    runtime's own p99 (the upper bound of the bucket of its /metrics histogram); 0 when it has
    acknowledged nothing yet."""
    _, _, body = get(services.metrics_url(runtime, timeout=5.0) + "/metrics")
    buckets = []
    for line in body.splitlines():
        if line.startswith("streaminfer_record_latency_seconds_bucket") and 'stage="acknowledged"' in line:
            bound = re.search(r'le="([^"]+)"', line).group(1)
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return 0.0
    return next(bound for bound, count in buckets if count >= 0.99 * buckets[-1][1])


def test_sigkill_five_times_loses_nothing_and_duplicates_stay_within_the_bound(broker, topics, overrides, start_runtime):
    """SIGKILL at five random moments of a 100k-record run, restarting each time: every record is
    scored; what each crash makes the group read again (outputs seen minus the committed offsets
    right after the kill) stays within max-pending plus what the run finished in the commit
    interval before the kill, counted from the outputs' timestamps: outputs produced up to the
    runtime's own acknowledgement p99 earlier (read from its /metrics just before the kill), and
    a quarter second of scheduling slack, may have been acknowledged inside that interval."""
    count, max_pending, commit_interval = 100_000, 2_000, 0.2
    rng = random.Random(SEED)
    ids, produced = fill(broker.bootstrap, topics.input, SEED + 31, count)
    settings = {
        **embedded(overrides),
        "pipeline.max-pending": max_pending,
        "kafka.commit-interval": f'"{int(commit_interval * 1000)}ms"',
    }
    thresholds = sorted(rng.sample(range(count // 10, count * 8 // 10), 5))
    outputs = []
    windows = []
    bounds = []
    acks = []
    with kafka.TopicReader(broker.bootstrap, topics.output) as reader:
        for threshold in thresholds:
            runtime = start_runtime(settings)
            run = read_while_running(reader, runtime, max(0, threshold - len(outputs)), OUTPUT_TIMEOUT)
            rate_window = len(outputs) + len(run)
            acknowledged_within = acknowledgement_p99(runtime) if runtime.running() else 0.0
            acks.append(acknowledged_within)
            killed_ms = time.time() * 1000
            runtime.signal(signal.SIGKILL)
            assert runtime.wait(10) is not None
            run += reader.drain(idle=1.0)
            outputs += run
            committed = sum(v or 0 for v in kafka.committed_offsets(broker.bootstrap, topics.group, topics.input).values())
            assert rate_window >= threshold - 1, f"only {rate_window} outputs before kill at {threshold}"
            if not run:
                # Killed before it produced anything (earlier duplicates reached the threshold):
                # the next run reads the same window again, counted once.
                continue
            # Records past the committed point that this run finished: what the next reads again.
            windows.append(len(ids_of(outputs)) - committed)
            # Outputs are stamped as produced, and finish when acknowledged: what was produced in the
            # last commit interval, the acknowledgement time and some slack before the kill may be
            # stored and not yet committed.
            since = killed_ms - (commit_interval + min(acknowledged_within, 5.0) + 0.25) * 1000
            bounds.append(max_pending + sum(1 for r in run if r.timestamp is not None and r.timestamp >= since))
        outputs = run_to_the_end(reader, start_runtime(settings), ids, outputs)
    missing, duplicated = tally(outputs, ids)
    report("sigkill", records_in=count, out=len(outputs), dead_lettered=0, duplicated=duplicated,
           lost=len(missing), kills=len(thresholds), reread_per_kill=windows, bound_per_kill=bounds,
           acknowledgement_p99_s=acks)
    assert not missing, f"ids never scored: {some(missing)}"
    assert windows, "no run produced anything before its kill"
    assert all(w <= b for w, b in zip(windows, bounds)), f"re-read windows {windows} exceed {bounds}"
    assert duplicated <= sum(windows), "duplicates beyond what the crashes left uncommitted"
    assert kafka.committed_offsets(broker.bootstrap, topics.group, topics.input) == produced.end_offsets()


@pytest.fixture
def own_broker(tmp_path):
    """A broker for one test, which it may stop and resume without disturbing the others."""
    started = services.start_broker(tmp_path)
    try:
        yield started
    finally:
        started.signal(signal.SIGCONT)
        started.stop()


def own_overrides(overrides: dict, broker: services.Broker, topics) -> dict:
    kafka.create_topics(broker.bootstrap, {topics.input: 4, topics.output: 4, topics.dead_letter: 1})
    return {**embedded(overrides), "kafka.brokers": broker.bootstrap}


OUTAGE = 20.0


def test_broker_stopped_for_20s_mid_run_the_runtime_rides_through(own_broker, topics, overrides, start_runtime):
    """The broker process frozen (SIGSTOP) for 20 s with the pipeline full: sessions time out, the
    partitions are revoked and assigned again, and the same runtime goes on to the end with
    nothing lost (a partition assigned again used to stay paused: consumption stopped for good)."""
    count = 100_000
    settings = {**own_overrides(overrides, own_broker, topics), "pipeline.max-pending": 2_000}
    ids, _ = fill(own_broker.bootstrap, topics.input, SEED + 32, count)
    runtime = start_runtime(settings)
    with kafka.TopicReader(own_broker.bootstrap, topics.output) as reader:
        outputs = read_while_running(reader, runtime, count // 5, OUTPUT_TIMEOUT)
        own_broker.signal(signal.SIGSTOP)
        time.sleep(OUTAGE)
        own_broker.signal(signal.SIGCONT)
        resumed = time.monotonic()
        before = len(outputs)
        recovered = None
        missing = ids - set(ids_of(outputs))
        deadline = resumed + OUTPUT_TIMEOUT
        while missing and time.monotonic() < deadline and runtime.running():
            outputs += reader.read(len(missing), timeout=1.0)
            if recovered is None and len(outputs) > before:
                recovered = time.monotonic() - resumed
            missing = ids - set(ids_of(outputs))
        assert runtime.running(), f"the runtime did not ride through the outage:\n{runtime.tail()}"
        runtime.signal(signal.SIGTERM)
        assert runtime.wait(STOP_TIMEOUT) == 0
        outputs += reader.drain(idle=1.0)
    seen = ids_of(outputs)
    missing = sorted(ids - set(seen))
    report("broker-sigstop", records_in=count, out=len(outputs), dead_lettered=0,
           duplicated=sum(n - 1 for n in seen.values()), lost=len(missing), outage_s=OUTAGE,
           recovered_after_s=None if recovered is None else round(recovered, 1),
           assignments=runtime.log().count("partitions assigned"))
    assert not missing, f"ids never scored after the outage: {some(missing)}"


def test_an_outage_longer_than_message_timeout_stops_the_run_and_a_restart_loses_nothing(
    own_broker, topics, overrides, start_runtime
):
    """With message.timeout.ms below the outage the producer gives up on its records: the
    runtime exits non-zero (never exit 0 with records lost), and a restart finishes the work."""
    count = 60_000
    settings = {
        **own_overrides(overrides, own_broker, topics),
        'kafka.producer."message.timeout.ms"': 5_000,
        "pipeline.shutdown-timeout": "5s",
    }
    ids, _ = fill(own_broker.bootstrap, topics.input, SEED + 33, count)
    first = start_runtime(settings)
    with kafka.TopicReader(own_broker.bootstrap, topics.output) as reader:
        outputs = read_while_running(reader, first, count // 5, OUTPUT_TIMEOUT)
        own_broker.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        status = first.wait(OUTAGE + 20)
        exited_after = time.monotonic() - stopped
        own_broker.signal(signal.SIGCONT)
        assert status not in (None, 0), f"status {status}: the runtime must fail when records time out\n{first.tail()}"
        outputs = run_to_the_end(reader, start_runtime(settings), ids, outputs)
    missing, duplicated = tally(outputs, ids)
    report("broker-outage-past-message-timeout", records_in=count, out=len(outputs), dead_lettered=0,
           duplicated=duplicated, lost=len(missing), exit_status=status,
           exited_after_s=round(exited_after, 1))
    assert not missing, f"ids never scored after the restart: {some(missing)}"


def kill_until_the_breaker_opens(
    server: services.ModelServer, runtime: services.Service, brokers: str, topic: str, seed: int
) -> set:
    """Kills the model server, then feeds ``topic`` more records so that the runtime has calls to
    make whatever it finished before the kill, and waits until it holds them. Returns their ids."""
    server.signal(signal.SIGKILL)
    assert server.wait(10) is not None
    ids, _ = fill(brokers, topic, seed, 500, first_id=1_000_000)
    deadline = time.monotonic() + 30
    while "holding calls" not in runtime.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "holding calls" in runtime.log(), f"the breaker never opened:\n{runtime.tail()}"
    return ids


def test_a_second_signal_exits_at_once_without_waiting_for_the_drain(
    broker, topics, overrides, start_runtime, tmp_path
):
    """Records held by an open breaker keep the drain waiting; a second SIGTERM ends the process at
    once, long before shutdown-timeout, with status 130."""
    server = services.start_model_server(tmp_path / "server", model_name="fraud")
    try:
        fill(broker.bootstrap, topics.input, SEED + 36, 2_000)
        settings = {**overrides, "model.endpoint": server.endpoint, "pipeline.batch-size": 32,
                    "pipeline.shutdown-timeout": "60s"}
        runtime = start_runtime(settings)
        with kafka.TopicReader(broker.bootstrap, topics.output) as reader:
            read_while_running(reader, runtime, 100, OUTPUT_TIMEOUT)
        kill_until_the_breaker_opens(server, runtime, broker.bootstrap, topics.input, SEED + 60)
        runtime.signal(signal.SIGTERM)
        time.sleep(1.0)
        assert runtime.running(), "the first signal should leave the runtime draining"
        runtime.signal(signal.SIGTERM)
        signalled = time.monotonic()
        status = runtime.wait(10)
        took = time.monotonic() - signalled
    finally:
        server.stop()
    report("second-signal", exit_status=status, exit_after_s=round(took, 1), shutdown_timeout_s=60)
    assert status == 130, f"status {status}\n{runtime.tail()}"
    assert took < 5, f"took {took:.1f} s after the second signal"


def test_sigterm_with_the_model_server_down_and_the_breaker_open_exits_in_time(
    broker, topics, overrides, start_runtime, tmp_path
):
    """The model server killed, the breaker open and records held: SIGTERM makes the runtime
    exit within shutdown-timeout and a small margin (committing what is finished); with the
    server back, a restart scores everything."""
    count, shutdown_timeout, margin = 4_000, 5.0, 5.0
    server = services.start_model_server(tmp_path / "first", model_name="fraud")
    second_server = None
    try:
        ids, _ = fill(broker.bootstrap, topics.input, SEED + 34, count)
        settings = {
            **overrides,
            "model.endpoint": server.endpoint,
            "pipeline.batch-size": 32,
            "model.max-in-flight": 4,
            "pipeline.shutdown-timeout": f"{shutdown_timeout:.0f}s",
        }
        first = start_runtime(settings)
        with kafka.TopicReader(broker.bootstrap, topics.output) as reader:
            outputs = read_while_running(reader, first, count // 4, OUTPUT_TIMEOUT)
            ids |= kill_until_the_breaker_opens(server, first, broker.bootstrap, topics.input, SEED + 61)
            first.signal(signal.SIGTERM)
            signalled = time.monotonic()
            status = first.wait(shutdown_timeout + margin + 10)
            took = time.monotonic() - signalled
            assert status is not None, "the runtime did not exit after SIGTERM"
            outputs += reader.drain(idle=1.0)

            second_server = services.start_model_server(tmp_path / "second", model_name="fraud", port=server.port)
            outputs = run_to_the_end(reader, start_runtime(settings), ids, outputs)
    finally:
        for s in (server, second_server):
            if s is not None:
                s.stop()
    missing, duplicated = tally(outputs, ids)
    report("sigterm-breaker-open", records_in=count, out=len(outputs), dead_lettered=0,
           duplicated=duplicated, lost=len(missing), exit_status=status,
           exit_after_s=round(took, 1), shutdown_timeout_s=shutdown_timeout)
    assert took <= shutdown_timeout + margin, f"exit took {took:.1f} s"
    assert not missing, f"ids never scored after the restart: {some(missing)}"


def repeats_by_phase(outputs, phases: list[tuple[str, float]]) -> dict[str, int]:
    """Every repeated score, counted in the phase its repeat was produced in: ``phases`` are
    (name, start in ms since the epoch), in order; a repeat is each copy after an id's first."""
    copies: dict[int, list[int]] = {}
    for r in outputs:
        copies.setdefault(json.loads(r.value)["id"], []).append(r.timestamp or 0)
    counts = {name: 0 for name, _ in phases}
    for stamps in copies.values():
        for stamp in sorted(stamps)[1:]:
            phase = phases[0][0]
            for name, since in phases:
                if stamp >= since:
                    phase = name
            counts[phase] += 1
    return counts


def test_scale_out_three_runtimes_one_killed_one_added_committed_offsets_never_go_back(
    broker, overrides, start_runtime
):
    """Three runtimes in one group over six partitions; one SIGKILLed and one added mid-run. Every
    record is scored, the committed offsets, sampled throughout, never move backwards, and the
    repeats of each phase (by when they were produced) stay within what it could leave
    unfinished: members joining one by one hand over only the records in flight (max-pending
    each; what is finished is committed as partitions are revoked), a crash also the dead
    member's work past its last commit, and leaving with SIGTERM (a drain first) nothing."""
    import threading
    import uuid

    count, partitions, max_pending, commit_interval = 90_000, 6, 1_000, 0.2
    suffix = uuid.uuid4().hex[:10]
    topic_in, topic_out, topic_dl, group = f"scale-in-{suffix}", f"scale-out-{suffix}", f"scale-dl-{suffix}", f"scale-{suffix}"
    kafka.create_topics(broker.bootstrap, {topic_in: partitions, topic_out: partitions, topic_dl: 1})
    ids, produced = fill(broker.bootstrap, topic_in, SEED + 35, count)
    settings = {
        **embedded(overrides),
        "kafka.group-id": group, "kafka.input-topic": topic_in, "kafka.output-topic": topic_out,
        "kafka.dead-letter-topic": topic_dl, "pipeline.max-pending": max_pending,
        "kafka.commit-interval": f'"{int(commit_interval * 1000)}ms"',
    }
    backwards: list[str] = []
    samples = 0
    sampling = threading.Event()

    def sample():
        nonlocal samples
        last: dict[int, int] = {}
        while not sampling.is_set():
            try:
                now = kafka.committed_offsets(broker.bootstrap, group, topic_in, timeout=5.0)
            except Exception:  # a sample lost to a busy broker is not a finding
                continue
            samples += 1
            for p, offset in now.items():
                if offset is not None and offset < last.get(p, -1):
                    backwards.append(f"partition {p}: {last[p]} -> {offset}")
                if offset is not None:
                    last[p] = max(offset, last.get(p, -1))
            time.sleep(0.3)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    runtimes = [start_runtime(settings) for _ in range(3)]
    with kafka.TopicReader(broker.bootstrap, topic_out) as reader:
        outputs = reader.read(count // 4, timeout=OUTPUT_TIMEOUT)
        acknowledged_within = min(acknowledgement_p99(runtimes[0]), 5.0)
        killed_ms = time.time() * 1000
        runtimes[0].signal(signal.SIGKILL)
        assert runtimes[0].wait(10) is not None
        # A replacement joins at once, as an orchestrator starts one: the hand-off then does not
        # depend on the broker expiring the dead member's session.
        runtimes.append(start_runtime(settings))
        missing = ids - set(ids_of(outputs))
        deadline = time.monotonic() + OUTPUT_TIMEOUT
        while missing and time.monotonic() < deadline:
            outputs += reader.read(len(missing), timeout=1.0)
            missing = ids - set(ids_of(outputs))
        took = time.monotonic() - started
        leaving_ms = time.time() * 1000
        for r in runtimes[1:]:
            r.signal(signal.SIGTERM)
        statuses = [r.wait(STOP_TIMEOUT) for r in runtimes[1:]]
        outputs += reader.drain(idle=1.0)
    sampling.set()
    sampler.join(15)
    seen = ids_of(outputs)
    missing = sorted(ids - set(seen))
    repeats = repeats_by_phase(outputs, [("start", 0.0), ("crash", killed_ms), ("leave", leaving_ms)])
    # What the dead member may have finished past its last commit: every output of the group in
    # the commit interval, the acknowledgement time and some slack before the kill.
    since = killed_ms - (commit_interval + acknowledged_within + 0.25) * 1000
    finished_late = sum(1 for r in outputs if r.timestamp is not None and since <= r.timestamp < killed_ms)
    bounds = {
        # Three members joining one by one: the first gives its records in flight up twice, the
        # second once.
        "start": 3 * max_pending,
        # The dead member's in flight and finished late, then the two survivors' records in
        # flight when the replacement joins.
        "crash": max_pending + finished_late + 2 * max_pending,
        # A drain before leaving, and nothing left to hand over.
        "leave": 0,
    }
    report("scale-out", records_in=count, out=len(outputs), dead_lettered=0,
           duplicated=sum(n - 1 for n in seen.values()), lost=len(missing), partitions=partitions,
           runtimes="3-1+1", repeats_by_phase=repeats, bound_by_phase=bounds,
           offset_samples=samples, backwards=len(backwards), seconds=round(took, 1))
    assert not missing, f"ids never scored: {some(missing)}"
    assert statuses == [0, 0, 0], statuses
    assert samples > 3, "too few samples of the committed offsets to say anything"
    assert not backwards, f"committed offsets moved backwards: {backwards[:5]}"
    over = {p: (repeats[p], bounds[p]) for p in bounds if repeats[p] > bounds[p]}
    assert not over, f"repeats beyond what the phase could leave unfinished (repeats, bound): {over}"
    assert kafka.committed_offsets(broker.bootstrap, group, topic_in) == produced.end_offsets()
