"""A plugin that misbehaves on purpose (plugins/hostile), run by the real runtime between a
real broker's topics: every bad record lands in the dead-letter topic with its reason, the good
records around them are produced, and the runtime keeps serving and stops cleanly."""

from __future__ import annotations

import signal
import time

from streamtools import kafka, paths

from flow import OUTPUT_TIMEOUT, STOP_TIMEOUT, embedded, read_while_running

# command -> the dead-letter reason it must produce (None: it must be produced as output)
COMMANDS = {
    "ok": None,
    "loop": "plugin-timeout",
    "memory": "plugin-memory",
    "recurse": "plugin-trap",
    "panic": "plugin-trap",
    "huge-output": "output-refused",
    "open-file": "plugin-error",
    "connect": "plugin-error",
    "env": None,
    "many-outputs": "output-limit",
    "wide-outputs": "output-limit",
    "topic-input": "topic-not-allowed",
    "topic-empty": "topic-not-allowed",
    "topic-invalid": "topic-not-allowed",
    "bad-shape": "invalid-request",
    "negative-dim": "invalid-request",
    "duplicate-input": "invalid-request",
    # (missing-result would even the count out in a batch that also holds extra-result)
    "extra-result": "plugin-contract",
    "log-forge": None,
    "log-flood": None,
    "then-many-outputs": "output-limit",
    "then-topic-input": "topic-not-allowed",
}
# Generous for a shared machine; what matters is that it is bounded at all.
CONTAINED_WITHIN = 60.0


def test_every_hostile_record_is_dead_lettered_with_its_reason(broker, topics, overrides, start_runtime):
    plugin = paths.hostile_plugin()
    assert plugin.is_file(), f"{plugin} is missing: scripts/test.sh builds it"
    commands = [*COMMANDS, "ok"]
    kafka.produce(broker.bootstrap, topics.input, [(f"{i}-{c}".encode(), c.encode()) for i, c in enumerate(commands)])
    # 2.5 MiB lets huge-output (2 MiB) reach the broker, which refuses it; wide-outputs (3 MiB)
    # does not get past the host.
    settings = {**embedded(overrides), "plugin.call-timeout": "200ms", "plugin.memory-limit": "16MiB",
                "plugin.max-output-bytes": '"2560KiB"'}

    started = time.monotonic()
    runtime = start_runtime(settings, plugin=plugin)
    expected_dead = sum(1 for c in commands if COMMANDS[c])
    expected_out = len(commands) - expected_dead
    with kafka.TopicReader(broker.bootstrap, topics.dead_letter) as dead_reader, \
            kafka.TopicReader(broker.bootstrap, topics.output) as out_reader:
        dead = read_while_running(dead_reader, runtime, expected_dead, OUTPUT_TIMEOUT)
        outputs = read_while_running(out_reader, runtime, expected_out, OUTPUT_TIMEOUT)
        contained = time.monotonic() - started
        assert runtime.running(), f"the runtime stopped:\n{runtime.tail()}"
        runtime.signal(signal.SIGTERM)
        assert runtime.wait(STOP_TIMEOUT) == 0, runtime.tail()
        dead += dead_reader.drain(idle=1.0)
        outputs += out_reader.drain(idle=1.0)

    reasons = {letter.value.decode(): letter.header_str("dead-letter-reason") for letter in dead}
    wanted = {c: r for c, r in COMMANDS.items() if r}
    assert reasons == wanted, f"dead-letter reasons {reasons}, expected {wanted}"
    assert len(dead) == expected_dead, f"{len(dead)} dead letters for {expected_dead} bad records"
    assert sorted(o.value for o in outputs if o.value in (b"ok",)) == [b"ok", b"ok"]
    assert len(outputs) == expected_out, [o.value[:40] for o in outputs]
    assert contained < CONTAINED_WITHIN, f"containing the bad records took {contained:.1f}s"

    # The plugin's log: 10,000 lines of 10 kB asked for, a burst of 100 written, the rest
    # dropped and counted; every line cut to 1,000 characters; a message with a newline in it
    # stays on its line, so it cannot pass for a line of the runtime's own.
    log = runtime.log().splitlines()
    flood = [line for line in log if "ffffffffff" in line]
    assert 0 < len(flood) <= 200, f"{len(flood)} flood lines written"
    assert all(len(line) < 1_300 for line in flood), max(map(len, flood))
    assert any("plugin log over its rate limit" in line for line in log), "the drops are said"
    assert not any(line.startswith("2026-12-02T00:00:00.000000Z") for line in log), "a forged line"
    assert any("forged by the plugin" in line and "done\\n" in line for line in log), "the forgery, escaped"
