"""Starting the processes under test, following them to the end of the input, stopping them.

The build outputs (runtime, plugins, plugin-bench) are copied into the run's log folder first,
so every variant runs the same bytes even when a build replaces them mid-run; a file that is
missing or being rewritten is waited for. A process counts as finished when its consumer group
has committed the input topic's end offsets: that needs no reading of the output while it works
(which would take CPU from it), and it is what a finished at-least-once pipeline must have done.
Every process is sampled for memory (VmHWM, VmRSS from /proc) and, with the processes around it
(the broker, a load generator), for CPU time (harness.cpu) while it runs, and is stopped with
SIGTERM, which must end it cleanly (exit status 0) within ``STOP_TIMEOUT``. A process can be
pinned to CPUs (``taskset -c``): taskset sets the affinity and execs the command, so the pid the
harness follows is the process's own.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from confluent_kafka import Consumer

from streamtools import kafka, paths, services

from . import cpu
from .result import VariantFailure

STOP_TIMEOUT = 60.0
ARTIFACT_WAIT = 300.0  # seconds to wait for a build output that is missing or being rewritten
COMMIT_POLL = 1.0
RSS_POLL = 0.1


@dataclass(frozen=True)
class Artifact:
    source: Path
    copy: Path
    sha256: str


def snapshot(source: Path, folder: Path, wait: float = ARTIFACT_WAIT) -> Artifact:
    """Copies a build output into ``folder`` once it exists and has stopped changing."""
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            before = source.stat()
            time.sleep(0.5)
            after = source.stat()
            if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns) and after.st_size > 0:
                folder.mkdir(parents=True, exist_ok=True)
                copy = folder / source.name
                shutil.copy2(source, copy)
                digest = hashlib.sha256(copy.read_bytes()).hexdigest()
                return Artifact(source, copy, digest)
        except FileNotFoundError:
            if not told:
                print(f"    waiting up to {wait:.0f}s for {source} (missing: being built?)", flush=True)
                told = True
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"{source} is missing (or kept changing) for {wait:.0f}s")
        time.sleep(2.0)


@dataclass(frozen=True)
class Names:
    output: str
    dead_letter: str
    group: str


def fresh_names(label: str) -> Names:
    suffix = uuid.uuid4().hex[:8]
    slug = label.lower().replace(" ", "-")
    return Names(f"bench-{slug}-out-{suffix}", f"bench-{slug}-dead-{suffix}", f"bench-{slug}-{suffix}")


def create_outputs(brokers: str, names: Names, partitions: int = 4) -> None:
    kafka.create_topics(brokers, {names.output: partitions, names.dead_letter: 1})


def kafka_key(key: str) -> str:
    """``kafka.consumer.fetch.wait.max.ms`` -> ``kafka.consumer."fetch.wait.max.ms"``: librdkafka
    property names hold dots, which the runtime's override syntax would read as nesting."""
    for prefix in ("kafka.consumer.", "kafka.producer."):
        if key.startswith(prefix) and not key[len(prefix):].startswith('"'):
            return f'{prefix}"{key[len(prefix):]}"'
    return key


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        out[kafka_key(key.strip())] = value.strip()
    return out


def start(
    name: str, args: Sequence[object], log_path: Path, env: Mapping[str, str] | None = None, cpus: str | None = None
) -> services.Service:
    """Starts a process (on ``cpus``, e.g. "1", when given), retried while a build rewrites
    its executable."""
    args = ["taskset", "-c", cpus, *args] if cpus else list(args)
    return retrying(name, lambda: services.Service(name, args, log_path, env=env))


def start_runtime(
    binary: Path, plugin: Path, overrides: Mapping[str, object], log_path: Path, config: Path = paths.FRAUD_CONFIG,
    cpus: str | None = None,
) -> services.Service:
    """The runtime as the tests start it (on ``cpus`` when given), retried while a build
    rewrites the binary."""
    overrides = {kafka_key(k): v for k, v in overrides.items()}
    env = {"RUST_LOG": os.environ.get("RUST_LOG", "info")}
    if cpus:
        binary = pinned_command(binary, cpus)
    return retrying("runtime", lambda: services.start_runtime(binary, plugin, config, overrides, log_path, env=env))


def pinned_command(binary: Path, cpus: str) -> Path:
    """A script beside ``binary`` that execs it under ``taskset -c CPUS`` with its arguments:
    for launchers that take an executable rather than a command line."""
    script = binary.with_name(f"{binary.name}-on-cpus-{cpus.replace(',', '_')}")
    script.write_text(f'#!/bin/sh\nexec taskset -c {shlex.quote(cpus)} {shlex.quote(str(binary))} "$@"\n')
    script.chmod(0o755)
    return script


def allowed_cpus(pid: int) -> str:
    """``Cpus_allowed_list`` of a process, e.g. "1" or "0-1"; "?" once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    except (FileNotFoundError, ProcessLookupError):
        pass
    return "?"


def retrying(name: str, make: Callable[[], services.Service]) -> services.Service:
    """``make()``, tried again for a while when the executable is being rewritten."""
    deadline = time.monotonic() + ARTIFACT_WAIT
    while True:
        try:
            return make()
        except OSError as error:  # ETXTBSY, ENOENT, ENOEXEC while a build replaces the file
            if time.monotonic() > deadline:
                raise
            print(f"    {name}: cannot start ({error}); retrying", flush=True)
            time.sleep(2.0)


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in KiB, or None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    values = {}
    for line in text.splitlines():
        if line.startswith(("VmHWM:", "VmRSS:")):
            name, rest = line.split(":", 1)
            values[name] = int(rest.split()[0])
    if "VmHWM" not in values:
        return None
    return values["VmHWM"], values.get("VmRSS", 0)


@contextmanager
def watching(
    launch: Callable[[], services.Service], brokers: str, group: str, topic: str,
    others: Mapping[str, int] | None = None,
) -> Iterator["Watch"]:
    """Starts a process with ``launch`` and yields its :class:`Watch`, which also samples the CPU
    of ``others`` (role -> pid: the broker, a load generator); the process is stopped and the
    watch closed however the block ends."""
    service = launch()
    watch = None
    try:
        watch = Watch(service, brokers, group, topic, others)
        yield watch
    finally:
        service.stop(grace=5.0)
        if watch is not None:
            watch.close()


class Watch:
    """Follows one process: memory and CPU samples (with the CPU of the processes around it, in
    ``tracks``), and its group's committed offsets on one topic."""

    def __init__(
        self, service: services.Service, brokers: str, group: str, topic: str,
        others: Mapping[str, int] | None = None,
    ) -> None:
        self.service = service
        self.topic = topic
        self.peak_kib = 0
        self.started = time.monotonic()
        self.committed: dict[int, int | None] = {}
        self._consumer = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
        self._partitions = kafka.partitions_of(brokers, topic)
        self.tracks = cpu.tracks_for(service.pid, others or {})
        self._sampler = cpu.Sampler(self.tracks, also=self.sample)

    def sample(self) -> None:
        memory = memory_kib(self.service.pid)
        if memory is not None:
            self.peak_kib = max(self.peak_kib, memory[0])

    def read_committed(self) -> dict[int, int | None]:
        self.committed = kafka.read_committed(self._consumer, self.topic, self._partitions)
        return self.committed

    def until_committed(self, ends: Mapping[int, int], timeout: float) -> float:
        """Returns the seconds it took once the group committed ``ends``; raises VariantFailure
        when the process exits first or ``timeout`` passes."""
        want = {p: ends.get(p, 0) for p in self._partitions}
        deadline = self.started + timeout
        next_poll = 0.0
        while True:
            self.sample()
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + COMMIT_POLL
                got = {p: (o or 0) for p, o in self.read_committed().items()}
                if all(got.get(p, 0) >= o for p, o in want.items()):
                    return now - self.started
            if not self.service.running():
                raise VariantFailure(
                    f"{self.service.name} exited with status {self.service.process.returncode} before finishing "
                    f"(committed {self.committed}, end offsets {want}); log {self.service.log_path}:\n"
                    f"{self.service.tail(15)}"
                )
            if now > deadline:
                raise VariantFailure(
                    f"not finished after {timeout:.0f}s: committed {self.committed} of end offsets {want}; "
                    f"log {self.service.log_path}"
                )
            time.sleep(RSS_POLL)

    def stop(self) -> int:
        """SIGTERM, sampling memory until the process exits; its exit status. Raises
        VariantFailure when it does not exit in time (it is then killed)."""
        self.service.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.service.running():
            self.sample()
            if time.monotonic() > deadline:
                self.service.stop(grace=1.0)
                raise VariantFailure(f"{self.service.name} still running {STOP_TIMEOUT:.0f}s after SIGTERM; killed")
            time.sleep(RSS_POLL)
        return self.service.process.returncode

    def close(self) -> None:
        self._sampler.close()
        self._consumer.close()

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024.0
