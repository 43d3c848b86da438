"""The fleet recipe: the Dockerfile linted with hadolint, the Kubernetes manifests validated
offline against the Kubernetes schemas (kubernetes-validate), the settings that must agree
across them checked, the Deployment's own configuration run against a broker until the
readiness probe passes, and the Grafana dashboard checked to query only metrics the runtime
exports.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from streamtools import fraud, kafka, paths, services

from flow import OUTPUT_TIMEOUT, get, read_while_running, wait_for

DEPLOY = paths.REPO / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
DASHBOARD = DEPLOY / "grafana" / "streaminfer.json"
TOOLS = paths.PYTHON.parent  # hadolint and kubernetes-validate live beside the venv's python
BUILT_IN = ["configmap.yaml", "deployment.yaml", "poddisruptionbudget.yaml"]


def manifest(name: str) -> dict:
    return yaml.safe_load((MANIFESTS / name).read_text())


def deployment_config() -> tuple[str, dict]:
    text = manifest("configmap.yaml")["data"]["fraud.toml"]
    return text, tomllib.loads(text)


def seconds(duration: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)", duration).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60}[unit]


def test_dockerfile_lints_clean_and_copies_what_the_build_makes():
    lint = subprocess.run([TOOLS / "hadolint", "Dockerfile"], cwd=paths.REPO, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    dockerfile = (paths.REPO / "Dockerfile").read_text()
    # What the final stage copies from the build stage is what cargo names its outputs.
    for built in re.findall(r"COPY --from=build /src/(\S+)", dockerfile):
        name = Path(built).name
        assert name in ("runtime", paths.fraud_plugin().name, paths.credit_plugin().name), built
    # What it copies from the context exists, and the configs' model paths hold in its layout.
    for source in re.findall(r"^COPY (?!--from)(.+) /opt/\S+$", dockerfile, re.MULTILINE):
        for path in source.split():
            assert (paths.REPO / path).is_file(), path
    for config in ("fraud.toml", "credit.toml"):
        model = tomllib.loads((paths.REPO / "config" / config).read_text())["model"]["path"]
        in_image = (Path("/opt/streaminfer/config") / model).resolve()
        assert f"{in_image}" in dockerfile, f"{config}'s model {model} is not at {in_image} in the image"
    assert re.search(r"^USER 10001$", dockerfile, re.MULTILINE), "the image runs as a non-root user"


def test_manifests_validate_against_the_kubernetes_schemas(tmp_path):
    validate = [TOOLS / "kubernetes-validate", "--strict", "--quiet"]
    checked = subprocess.run([*validate, *(MANIFESTS / m for m in BUILT_IN)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The validator bites: a Deployment with a mistyped field fails it.
    broken = manifest("deployment.yaml")
    broken["spec"]["replicas"] = "four"
    bad = tmp_path / "broken.yaml"
    bad.write_text(yaml.safe_dump(broken))
    refused = subprocess.run([*validate, bad], capture_output=True, text=True)
    assert refused.returncode != 0, "kubernetes-validate accepted replicas: four"


def test_fleet_settings_agree():
    """The ScaledObject (a KEDA resource, outside the Kubernetes schemas) scales the Deployment,
    on this group and topic, never past the partition count the Deployment assumes; probes,
    scrape annotations and the config name the same port; the grace period covers the drain."""
    deployment, scaled = manifest("deployment.yaml"), manifest("keda-scaledobject.yaml")
    _, config = deployment_config()
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]

    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == config["kafka"]["group-id"]
    assert meta["topic"] == config["kafka"]["input-topic"]
    assert meta["bootstrapServers"] == config["kafka"]["brokers"]
    assert meta["allowIdleConsumers"] == "false"
    assert int(meta["lagThreshold"]) > 0
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert spec["replicas"] <= scaled["spec"]["maxReplicaCount"], "replicas past the partition count"
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] == 0

    host, port = config["metrics"]["listen"].rsplit(":", 1)
    assert host == "0.0.0.0", "probes and Prometheus reach the pod from outside it"
    (ports,) = container["ports"]
    assert ports["containerPort"] == int(port)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in (ports["name"], ports["containerPort"])
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == port
    assert annotations["prometheus.io/path"] == "/metrics"
    drain = seconds(config["pipeline"]["shutdown-timeout"])
    assert pod["terminationGracePeriodSeconds"] >= drain + 5, "SIGKILL would cut the drain short"
    assert config["log"]["format"] == "json"
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/streaminfer" in mounted and container["args"][2].startswith("/etc/streaminfer/")
    assert "/var/cache/streaminfer" in mounted, "the compiled-plugin cache needs a writable volume"


def test_the_deployment_config_runs_and_turns_ready(broker, topics, start_runtime, tmp_path):
    """The ConfigMap's own file, with only the broker, topics and paths of this machine put in,
    starts the runtime, passes /readyz and scores records."""
    text, config = deployment_config()
    image_model = config["model"]["path"]
    local_model = paths.REPO / Path(image_model).relative_to("/opt/streaminfer")
    text = text.replace(image_model, str(local_model))
    path = tmp_path / "fraud.toml"
    path.write_text(text)
    runtime = start_runtime(
        {
            "kafka.brokers": broker.bootstrap,
            "kafka.group-id": topics.group,
            "kafka.input-topic": topics.input,
            "kafka.output-topic": topics.output,
            "kafka.dead-letter-topic": topics.dead_letter,
            "metrics.listen": "127.0.0.1:0",  # the file's 0.0.0.0:9898 may be taken here
        },
        config=path,
    )
    base = services.metrics_url(runtime)
    wait_for("the readiness probe passes", lambda: get(f"{base}/readyz")[0] == 200, timeout=60)
    inputs = fraud.input_records(11, 100)
    kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in inputs])
    with kafka.TopicReader(broker.bootstrap, topics.output) as out:
        assert len(read_while_running(out, runtime, 100, OUTPUT_TIMEOUT)) == 100
    # The dashboard, against the metrics this run exports.
    check_dashboard(scrape_families(base))


def scrape_families(base: str) -> set[str]:
    """Every sample name /metrics may carry, from its families (a family with no sample yet
    still declares its type)."""
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "info": ["_info"],
        "gauge": [""],
    }
    names = set()
    for family in text_string_to_metric_families(get(f"{base}/metrics")[2]):
        names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def check_dashboard(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    queried = {m for e in exprs for m in re.findall(r"\bstreaminfer_[a-z_]+", e)}
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "lag", "dead letters", "model latency", "breaker"):
        assert topic in titles, f"the dashboard has no {topic} panel"
    assert queried, "the dashboard queries nothing"
    unknown = sorted(queried - exported)
    assert not unknown, f"the dashboard queries metrics the runtime does not export: {unknown}"
