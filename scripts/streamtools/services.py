"""Start and stop the processes the tests and the demo need, all on 127.0.0.1.

Every process runs in a session (process group) of its own, logs to a file, and is told to stop
with SIGTERM when the Python process that started it dies (Linux parent-death signal), so a
crashed test run does not leave brokers behind. `Service.stop()` ends the whole group: SIGTERM,
then SIGKILL after a grace period.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

from . import paths

_PR_SET_PDEATHSIG = 1
try:  # looked up once here: the child, between fork and exec, should only make the call
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the process that started it dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Service:
    """A started process with its log file."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env=dict(env) if env is not None else None,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Sends a signal to the process (not its group)."""
        if self.running():
            self.process.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        """Exit status, or None when still running after ``timeout`` seconds."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 10.0) -> int:
        """Stops the process group: SIGTERM, then SIGKILL after ``grace`` seconds. Exit status."""
        if self.running():
            self._signal_group(signal.SIGTERM)
            if self.wait(grace) is None:
                self._signal_group(signal.SIGKILL)
                self.process.wait()
        # Children that outlived the leader.
        self._signal_group(signal.SIGKILL)
        return self.process.returncode

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def fail(self, what: str) -> RuntimeError:
        return RuntimeError(f"{self.name}: {what}\n--- {self.log_path} (tail) ---\n{self.tail()}")

    def __repr__(self) -> str:
        return f"Service({self.name!r}, pid={self.pid})"


def wait_for_tcp(service: Service, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.running():
            raise service.fail(f"exited with status {service.process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise service.fail(f"not listening on 127.0.0.1:{port} after {timeout:.0f}s")


class Broker(Service):
    """A tansu broker with in-memory storage."""

    def __init__(self, port: int, log_path: Path) -> None:
        url = f"tcp://127.0.0.1:{port}"
        args = [
            paths.TANSU, "broker",
            "--cluster-id", "streaminfer",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        # tansu reads settings from the environment too: keep only what a process needs.
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ", "RUST_LOG")}
        super().__init__("tansu", args, log_path, env=env)
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"


def start_broker(log_dir: Path, port: int | None = None, timeout: float = 30.0) -> Broker:
    """Starts tansu (on ``port``, or a free one) and waits until it answers metadata requests."""
    if not paths.TANSU.exists():
        raise RuntimeError(f"{paths.TANSU} is missing: run scripts/setup.sh")
    from .kafka import wait_for_broker

    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        broker = Broker(port or free_port(), Path(log_dir) / "tansu.log")
        try:
            wait_for_tcp(broker, broker.port, timeout)
            wait_for_broker(broker.bootstrap, timeout)
            return broker
        except Exception:
            broker.stop()
            if attempt + 1 == attempts:
                raise
    raise AssertionError("unreachable")


class ModelServer(Service):
    """scripts/model_server.py serving one model."""

    READY = re.compile(r"^READY (\d+)\s*$", re.MULTILINE)

    def __init__(self, model_name: str, model_base_path: Path, port: int, log_path: Path, extra: Sequence[str] = ()) -> None:
        args = [
            paths.PYTHON, "-u", paths.MODEL_SERVER,
            "--port", str(port),
            "--model-name", model_name,
            "--model-base-path", model_base_path,
            *extra,
        ]
        super().__init__("model-server", args, log_path)
        self.model_name = model_name
        self.port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}"


def start_model_server(
    log_dir: Path,
    model_name: str = "fraud",
    model_base_path: Path = paths.FRAUD_MODEL_BASE,
    port: int = 0,
    timeout: float = 120.0,
    extra: Sequence[str] = (),
) -> ModelServer:
    """Starts the model server (``port`` 0: a free one) and waits for its READY line."""
    server = ModelServer(model_name, model_base_path, port, Path(log_dir) / "model-server.log", extra)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            match = ModelServer.READY.search(server.log())
            if match:
                server.port = int(match.group(1))
                return server
            if not server.running():
                raise server.fail(f"exited with status {server.process.returncode} before it was ready")
            time.sleep(0.1)
        raise server.fail(f"not ready after {timeout:.0f}s")
    except BaseException:
        server.stop()
        raise


def loopback_opener() -> urllib.request.OpenerDirector:
    """A urllib opener that ignores *_proxy variables: our services are on 127.0.0.1."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MlServer(Service):
    """Seldon MLServer (from .venv-mlserver) serving model folders over KServe v2.

    ``endpoint`` is the gRPC endpoint (``inference.GRPCInferenceService``), ``http_url`` the
    REST one (``/v2/...``). Its working folder holds settings.json, a link to each model folder
    (MLServer serves every model-settings.json under the folder it is started with) and the log.
    """

    def __init__(self, workdir: Path, models: Mapping[str, Path], http_port: int, grpc_port: int) -> None:
        settings = {
            "debug": False,  # True logs every request
            "host": "127.0.0.1",
            "http_port": http_port,
            "grpc_port": grpc_port,
            "metrics_endpoint": None,  # no metrics server, no third port
            "parallel_workers": 0,  # inference in the server process, no worker pool
            "environments_dir": str(workdir / "envs"),
            "metrics_dir": str(workdir / "metrics"),
            "load_models_at_startup": True,
        }
        (workdir / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        for name, model_dir in models.items():
            link = workdir / "models" / name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(Path(model_dir).resolve(), target_is_directory=True)
        # `mlserver start DIR` reads DIR/settings.json and serves the models found under DIR.
        args = [paths.MLSERVER, "start", workdir]
        # MLSERVER_* variables override settings.json: only ours may count.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ next to the model's module
        super().__init__("mlserver", args, workdir / "mlserver.log", env=env)
        self.workdir = workdir
        self.model_names = list(models)
        self.model_name = self.model_names[0]
        self.http_port = http_port
        self.port = grpc_port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        """The gRPC endpoint."""
        return f"http://{self.address}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def model_ready(self, timeout: float = 2.0) -> bool:
        """GET /v2/models/NAME/ready answers 200 for every model once they are loaded."""
        for name in self.model_names:
            url = f"{self.http_url}/v2/models/{name}/ready"
            try:
                with loopback_opener().open(url, timeout=timeout) as response:
                    if response.status != 200:
                        return False
            except (urllib.error.URLError, OSError):
                return False
        return True


def start_mlserver(
    log_dir: Path,
    port: int = 0,
    timeout: float = 120.0,
    model_dir: Path = paths.FRAUD_MLSERVER_MODEL,
    model_name: str = "fraud",
    models: Mapping[str, Path] | None = None,
) -> MlServer:
    """Starts MLServer (gRPC on ``port``, 0: a free one; REST on a free port) and waits until
    every model is ready and gRPC listens. ``models`` maps model names (as their
    model-settings.json says) to model folders; without it, ``model_name`` from ``model_dir``."""
    if not paths.MLSERVER.exists():
        raise RuntimeError(f"{paths.MLSERVER} is missing: run scripts/setup.sh")
    models = dict(models) if models else {model_name: model_dir}
    attempts = 1 if port else 3  # a free port can be taken before the server binds it
    for attempt in range(attempts):
        workdir = Path(tempfile.mkdtemp(prefix="mlserver-", dir=log_dir))
        server = MlServer(workdir, models, free_port(), port or free_port())
        try:
            deadline = time.monotonic() + timeout
            while not server.model_ready():
                if not server.running():
                    raise server.fail(f"exited with status {server.process.returncode} before the models were ready")
                if time.monotonic() > deadline:
                    raise server.fail(f"models {sorted(models)} not ready after {timeout:.0f}s")
                time.sleep(0.1)
            wait_for_tcp(server, server.port, max(1.0, deadline - time.monotonic()))
            return server
        except Exception:
            server.stop()
            if attempt + 1 == attempts:
                raise
        except BaseException:
            server.stop()
            raise
    raise AssertionError("unreachable")


def metrics_url(runtime: Service, timeout: float = 30.0) -> str:
    """``http://ADDRESS`` where ``runtime`` serves /metrics, /healthz and /readyz, as its log
    says once it listens (text or JSON log)."""
    pattern = re.compile(r'serving /metrics, /healthz and /readyz.*?address"?[=:]"?([0-9.]+:[0-9]+)')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(runtime.log())
        if found:
            return f"http://{found.group(1)}"
        if not runtime.running():
            raise runtime.fail("exited before serving its metrics")
        time.sleep(0.1)
    raise runtime.fail(f"did not serve its metrics within {timeout:.0f}s")


def start_runtime(
    binary: Path,
    plugin: Path,
    config: Path,
    overrides: Mapping[str, object],
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> Service:
    """Starts the streaming runtime: ``runtime --plugin PLUGIN CONFIG key=value ...``.

    Unless ``overrides`` say otherwise, /metrics, /healthz and /readyz are served on a free port
    of 127.0.0.1 (several runtimes may run at once); ``metrics_url`` finds it. An override whose
    value is None is not passed: ``{"metrics.listen": None}`` leaves the runtime's default."""
    overrides = {"metrics.listen": "127.0.0.1:0", **overrides}
    given = {key: value for key, value in overrides.items() if value is not None}
    args = [binary, "--plugin", plugin, config, *(f"{key}={value}" for key, value in given.items())]
    # The runtime also reads STREAMINFER__* variables as overrides: only ``env`` may set them.
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMINFER__")}
    full_env.update(env or {})
    return Service("runtime", args, log_path, env=full_env)
