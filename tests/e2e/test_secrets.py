"""librdkafka properties read from the environment or a file instead of the config file
(`{ env = "NAME" }`, `{ file = "path" }`), as secrets such as `sasl.password` are: the value
reaches librdkafka itself, and a variable that is not set stops start-up naming the key.
"""

from __future__ import annotations

from streamtools import fraud, kafka

from flow import OUTPUT_TIMEOUT, START_FAILURE_TIMEOUT, read_while_running

VARIABLE = "STREAMINFER_TEST_FETCH_WAIT"


def test_a_value_from_the_environment_reaches_librdkafka(overrides, start_runtime):
    """librdkafka itself refuses the value the variable holds and says it: the variable's value,
    not its name, is what the consumer was given."""
    runtime = start_runtime(
        {**overrides, 'kafka.consumer."fetch.wait.max.ms"': f'{{ env = "{VARIABLE}" }}'},
        env={VARIABLE: "from-the-environment"},
    )
    assert runtime.wait(START_FAILURE_TIMEOUT) == 1, runtime.tail()
    log = runtime.log()
    assert 'Invalid value for configuration property "fetch.wait.max.ms"' in log, log
    assert "from-the-environment" in log and VARIABLE not in log, log


def test_a_value_from_a_file_is_used(broker, topics, overrides, start_runtime, tmp_path):
    """The session timeout from a file (with its trailing newline) is taken, and records flow."""
    secret = tmp_path / "session-timeout"
    secret.write_text("6000\n")
    runtime = start_runtime({**overrides, 'kafka.consumer."session.timeout.ms"': f'{{ file = "{secret}" }}'})
    inputs = fraud.input_records(5, 100)
    kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in inputs])
    with kafka.TopicReader(broker.bootstrap, topics.output) as out:
        assert len(read_while_running(out, runtime, 100, OUTPUT_TIMEOUT)) == 100, runtime.tail()


def test_a_variable_not_set_stops_start_up_naming_the_key(overrides, start_runtime):
    runtime = start_runtime({**overrides, 'kafka.producer."sasl.password"': '{ env = "STREAMINFER_TEST_NEVER_SET" }'})
    assert runtime.wait(START_FAILURE_TIMEOUT) == 2, runtime.tail()
    log = runtime.log()
    assert 'kafka.producer."sasl.password": names the environment variable STREAMINFER_TEST_NEVER_SET, which is not set' in log, log
