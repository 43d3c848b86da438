"""Hot reload of the plugin file under a running runtime: a broken file is refused and the old
plugin keeps serving; a new valid plugin takes over; every output names, in its plugin-digest
header, the plugin that made it."""

from __future__ import annotations

import hashlib
import shutil
import signal
import time

from streamtools import fraud, kafka, paths

from flow import OUTPUT_TIMEOUT, STOP_TIMEOUT, embedded, read_while_running
from test_fraud_pipeline import SEED

RELOAD_WAIT = 30.0


def digest(path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for_log(runtime, text: str, timeout: float = RELOAD_WAIT) -> None:
    deadline = time.monotonic() + timeout
    while text not in runtime.log():
        assert time.monotonic() < deadline, f"no {text!r} in the log within {timeout:.0f}s:\n{runtime.tail()}"
        assert runtime.running(), f"the runtime stopped:\n{runtime.tail()}"
        time.sleep(0.2)


def test_plugin_file_changes_are_reloaded_or_refused(broker, topics, overrides, start_runtime, tmp_path):
    fraud_wasm, hostile_wasm = paths.fraud_plugin(), paths.hostile_plugin()
    plugin = tmp_path / "plugin.wasm"
    shutil.copyfile(fraud_wasm, plugin)
    first = digest(plugin)
    runtime = start_runtime({**embedded(overrides), "plugin.reload-interval": "200ms"}, plugin=plugin)

    with kafka.TopicReader(broker.bootstrap, topics.output) as reader:
        batch = fraud.input_records(SEED + 5, 20)
        kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in batch])
        outputs = read_while_running(reader, runtime, len(batch), OUTPUT_TIMEOUT)
        assert len(outputs) == len(batch)
        assert {o.header_str("plugin-digest") for o in outputs} == {first}

        # A broken file: refused, the old plugin keeps serving.
        plugin.write_bytes(b"this is not a plugin")
        wait_for_log(runtime, "plugin reload refused")
        batch = fraud.input_records(SEED + 6, 10, first_id=100)
        kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in batch])
        outputs = read_while_running(reader, runtime, len(batch), OUTPUT_TIMEOUT)
        assert len(outputs) == len(batch), "the old plugin stopped serving after a refused reload"
        assert {o.header_str("plugin-digest") for o in outputs} == {first}

        # A new, valid plugin: it takes over, and its outputs say so.
        shutil.copyfile(hostile_wasm, plugin)
        second = digest(plugin)
        assert second != first
        wait_for_log(runtime, "plugin reloaded")
        kafka.produce(broker.bootstrap, topics.input, [(b"k1", b"ok"), (b"k2", b"ok")])
        outputs = read_while_running(reader, runtime, 2, OUTPUT_TIMEOUT)
        assert [o.value for o in outputs] == [b"ok", b"ok"], "the new plugin answers"
        assert {o.header_str("plugin-digest") for o in outputs} == {second}

    runtime.signal(signal.SIGTERM)
    assert runtime.wait(STOP_TIMEOUT) == 0, runtime.tail()
