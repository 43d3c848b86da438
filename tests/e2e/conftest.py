"""Fixtures for the end-to-end tests.

Session-wide: one tansu broker (in-memory storage), one model server serving
models/fraud/saved_model and, for the tests that ask for it, one Seldon MLServer serving the same
model and the credit model over KServe v2, each on free ports of 127.0.0.1. Per test: fresh topic and group
names, and a factory that starts the runtime. Everything started here is stopped in fixture
teardown, also when a test fails; on failure the tails of the processes' logs are added to the
test report.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from streamtools import kafka, paths, services

_session_services: list[services.Service] = []
_test_services = pytest.StashKey[list]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        # The shared services' logs matter when a test body failed, not when its set-up did.
        shared = _session_services if report.when == "call" else []
        for service in item.stash.get(_test_services, []) + shared:
            report.sections.append((f"{service.name} log, last lines ({service.log_path})", service.tail(60)))


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def broker(log_dir) -> services.Broker:
    started = services.start_broker(log_dir)
    _session_services.append(started)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def model_server(log_dir) -> services.ModelServer:
    started = services.start_model_server(log_dir, model_name="fraud", model_base_path=paths.FRAUD_MODEL_BASE)
    _session_services.append(started)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def mlserver(log_dir) -> services.MlServer:
    """Seldon MLServer (.venv-mlserver) serving models/fraud/mlserver/fraud and
    models/credit/mlserver/credit over KServe v2: gRPC at ``.endpoint``, REST at ``.http_url``."""
    models = {"fraud": paths.FRAUD_MLSERVER_MODEL, "credit": paths.CREDIT_MLSERVER_MODEL}
    started = services.start_mlserver(log_dir, models=models)
    _session_services.append(started)
    try:
        yield started
    finally:
        started.stop()


@dataclass(frozen=True)
class Topics:
    input: str
    output: str
    dead_letter: str
    group: str


@pytest.fixture
def topics(broker) -> Topics:
    """Fresh topics (input 4 partitions, output 4, dead-letter 1) and a fresh group name."""
    suffix = uuid.uuid4().hex[:10]
    names = Topics(f"transactions-{suffix}", f"scores-{suffix}", f"dead-letters-{suffix}", f"scorer-{suffix}")
    kafka.create_topics(broker.bootstrap, {names.input: 4, names.output: 4, names.dead_letter: 1})
    return names


@dataclass(frozen=True)
class RuntimeArtifacts:
    binary: Path
    plugin: Path


@pytest.fixture(scope="session")
def runtime_artifacts() -> RuntimeArtifacts:
    binary, plugin = paths.runtime_binary(), paths.fraud_plugin()
    missing = [f"  {what}: {path}" for what, path in (("runtime binary", binary), ("fraud plugin", plugin)) if not path.is_file()]
    if missing:
        pytest.fail(
            "build outputs are missing (scripts/test.sh builds them; RUNTIME_BIN and FRAUD_PLUGIN "
            "override the paths):\n" + "\n".join(missing),
            pytrace=False,
        )
    return RuntimeArtifacts(binary, plugin)


@pytest.fixture
def overrides(broker, model_server, topics) -> dict[str, object]:
    """Command-line overrides that point the runtime at this test's broker, topics and model."""
    return {
        "kafka.brokers": broker.bootstrap,
        "kafka.group-id": topics.group,
        "kafka.input-topic": topics.input,
        "kafka.output-topic": topics.output,
        "kafka.dead-letter-topic": topics.dead_letter,
        "model.backend": "tf-serving",
        "model.endpoint": model_server.endpoint,
    }


@pytest.fixture
def start_runtime(runtime_artifacts, tmp_path, request) -> Callable[..., services.Service]:
    """Starts the runtime with `config/fraud.toml` (or ``config``), the fraud plugin (or
    ``plugin``), key=value overrides and extra environment variables (``env``). Stops whatever
    it started at teardown."""
    started: list[services.Service] = []
    request.node.stash[_test_services] = started

    def start(
        overrides: dict[str, object],
        config: Path = paths.FRAUD_CONFIG,
        plugin: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> services.Service:
        runtime = services.start_runtime(
            runtime_artifacts.binary,
            plugin or runtime_artifacts.plugin,
            config,
            overrides,
            log_path=tmp_path / f"runtime-{len(started)}.log",
            env=env,
        )
        started.append(runtime)
        return runtime

    try:
        yield start
    finally:
        for runtime in started:
            runtime.stop(grace=15)
