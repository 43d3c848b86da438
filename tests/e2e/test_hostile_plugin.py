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
}
# Generous for a shared machine; what matters is that it is bounded at all.
CONTAINED_WITHIN = 60.0


def test_every_hostile_record_is_dead_lettered_with_its_reason(broker, topics, overrides, start_runtime):
    plugin = paths.hostile_plugin()
    assert plugin.is_file(), f"{plugin} is missing: scripts/test.sh builds it"
    commands = [*COMMANDS, "ok"]
    kafka.produce(broker.bootstrap, topics.input, [(f"{i}-{c}".encode(), c.encode()) for i, c in enumerate(commands)])
    settings = {**embedded(overrides), "plugin.call-timeout": "200ms", "plugin.memory-limit": "16MiB"}

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
