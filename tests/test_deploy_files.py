"""Structural checks of the deployment files: Dockerfile, compose.yaml, deploy/.

There is no Docker engine or cluster in CI, so these tests read the files and
check them against the code they run: every command is parsed by the real
`switchyard` CLI parser (and worker arguments by dramatiq's own parser), every
environment variable is one that jobs/settings.py reads, and every KEDA list
is a real Dramatiq queue key. No servers are started.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dramatiq.cli import make_argument_parser as dramatiq_parser

from api import cli
from jobs.settings import ENV
from jobs.states import Queue
from scripts.dev import parser as dev_parser
from scripts.simulator.__main__ import parse_args as simulator_parse_args

# PyYAML comes with uvicorn[standard]; it is not a direct dependency.
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

#: Dramatiq's Redis broker namespace (jobs/broker.py): queue `q` waits in the list `switchyard:q`.
NAMESPACE = "switchyard"

#: compose service -> the `switchyard` subcommand it runs.
APP_SERVICES = {
    "migrate": "migrate",
    "api": "api",
    "worker": "worker",
    "maintenance": "maintenance",
    "simulator": "simulator",
}
PROFILES = {"simulator": ["dev"], "ollama": ["local"], "prometheus": ["observability"], "grafana": ["observability"]}
CORE_SERVICES = {"postgres", "redis", *APP_SERVICES} - set(PROFILES)

#: Variables that deployment files may set besides the app's own settings (jobs.settings.ENV).
EXTRA_ENV = {
    "REDIS_ADDRESS",  # KEDA's redis scaler (host:port of REDIS_URL)
    "REDIS_PASSWORD",  # KEDA's TriggerAuthentication
}


#: The functions api/cli.py dispatches the process subcommands to; the tests swap them out.
HANDLERS = {"_dev": "dev", "_migrate": "migrate", "_api": "api", "_worker": "worker",
            "_maintenance": "maintenance", "_simulator": "simulator"}


class _Dispatched(Exception):
    def __init__(self, subcommand: str, args: argparse.Namespace) -> None:
        self.subcommand = subcommand
        self.args_ = args


def parse_switchyard(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, argparse.Namespace]:
    """Run `switchyard argv` through api/cli.py up to the point where it would start the process.

    Returns the subcommand whose handler was reached and the arguments it got.
    """
    recorders: dict[Any, Any] = {}
    for name, subcommand in HANDLERS.items():

        def record(args: argparse.Namespace, subcommand: str = subcommand) -> None:
            raise _Dispatched(subcommand, args)

        recorders[getattr(cli, name)] = record

    def never_exec(*args: Any) -> None:  # a missed handler must not replace the pytest process
        raise AssertionError(f"the CLI tried to exec {args}")

    with monkeypatch.context() as m:
        m.setattr("os.execvp", never_exec)
        for name in HANDLERS:
            m.setattr(cli, name, recorders[getattr(cli, name)])
        # Handlers may also be held in a module-level table (e.g. for pass-through subcommands).
        for name, value in list(vars(cli).items()):
            if isinstance(value, dict) and any(callable(v) and v in recorders for v in value.values()):
                m.setattr(cli, name, {k: recorders.get(v, v) if callable(v) else v for k, v in value.items()})
        try:
            cli.main(list(argv))
        except _Dispatched as dispatched:
            return dispatched.subcommand, dispatched.args_
        except SystemExit as exc:
            pytest.fail(f"`switchyard {' '.join(argv)}` is rejected by the CLI (exit {exc.code})")
    pytest.fail(f"`switchyard {' '.join(argv)}` started nothing")


def dramatiq_args(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The arguments `switchyard worker ...` hands to dramatiq."""
    subcommand, args = parse_switchyard(argv, monkeypatch)
    assert subcommand == "worker", argv
    rest: list[str] = args.rest
    return rest


def dramatiq_queues(worker_args: list[str]) -> list[str]:
    """Validate the arguments of `switchyard worker` with dramatiq's parser; return the queues."""
    try:
        ns = dramatiq_parser().parse_args(["workers.app", *worker_args])
    except SystemExit:
        pytest.fail(f"dramatiq rejects the worker arguments {worker_args}")
    assert ns.queues, f"a worker pool must name its queues explicitly: {worker_args}"
    unknown = set(ns.queues) - {q.value for q in Queue}
    assert not unknown, f"unknown queues {unknown} in {worker_args}"
    return list(ns.queues)


def shutdown_timeout_ms(worker_args: list[str]) -> int:
    timeout: int = dramatiq_parser().parse_args(["workers.app", *worker_args]).worker_shutdown_timeout
    return timeout


def check_command(argv: list[str], expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`argv` is a valid `switchyard` command line running the subcommand `expected`."""
    subcommand, args = parse_switchyard(argv, monkeypatch)
    assert subcommand == expected, argv
    if subcommand == "worker":
        dramatiq_queues(args.rest)
    elif subcommand == "simulator":
        simulator_parse_args(args.rest)  # exits on a bad flag
    elif subcommand == "dev":
        dev_parser().parse_args(args.rest)  # exits on a bad flag
    elif subcommand == "api":
        assert args.host == "0.0.0.0", "the API must listen on all interfaces in a container"
        assert args.port == 8000


# --- compose.yaml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


@pytest.fixture(scope="module")
def app_image(compose: dict[str, Any]) -> str:
    image: str = compose["x-app"]["image"]
    return image


def test_dev_hands_its_options_to_the_dev_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    subcommand, args = parse_switchyard(["dev", "--port", "8001", "--threads", "4"], monkeypatch)
    assert subcommand == "dev"
    options = dev_parser().parse_args(args.rest)
    assert (options.port, options.threads, options.processes) == (8001, 4, 1)


def test_compose_has_the_designed_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {*CORE_SERVICES, *PROFILES}
    assert compose["services"]["postgres"]["image"].startswith("pgvector/pgvector:")
    assert compose["services"]["redis"]["image"].startswith("redis:7")
    assert "--appendonly" in compose["services"]["redis"]["command"]


def test_app_services_use_the_image_and_its_environment(compose: dict[str, Any], app_image: str) -> None:
    services = compose["services"]
    using_image = {name for name, svc in services.items() if svc.get("image") == app_image}
    assert using_image == set(APP_SERVICES)
    for name in using_image:
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://"), name
        assert env["REDIS_URL"].startswith("redis://"), name
        assert env["LOG_FORMAT"] == "json", name
        assert "/app/routes.toml" in env["SWITCHYARD_ROUTES"], name


def test_compose_sets_only_real_settings(compose: dict[str, Any]) -> None:
    unknown = set(compose["x-app"]["environment"]) - set(ENV.values()) - EXTRA_ENV
    assert not unknown, f"variables no setting reads: {unknown}"


def test_app_commands_are_real_cli_commands(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for service, subcommand in APP_SERVICES.items():
        check_command(compose["services"][service]["command"], subcommand, monkeypatch)


def test_compose_worker_consumes_every_queue(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    rest = dramatiq_args(compose["services"]["worker"]["command"], monkeypatch)
    assert set(dramatiq_queues(rest)) == {q.value for q in Queue}


def test_depends_on_conditions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker", "maintenance"):
        deps = services[name]["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}, name
        assert deps["redis"] == {"condition": "service_healthy"}, name
    # Core services must not wait for a service that only a profile starts.
    for name in CORE_SERVICES:
        assert not set(services[name].get("depends_on", {})) & set(PROFILES), name


def test_worker_is_scalable_and_drains(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker, "a fixed container name breaks `--scale worker=N`"
    assert "ports" not in worker, "published host ports break `--scale worker=N`"
    grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert grace, worker["stop_grace_period"]
    assert int(grace.group(1)) >= 30
    rest = dramatiq_args(worker["command"], monkeypatch)
    assert shutdown_timeout_ms(rest) < int(grace.group(1)) * 1000, "dramatiq must give up before SIGKILL"


def test_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, profiles in PROFILES.items():
        assert services[name].get("profiles") == profiles, name
    for name in CORE_SERVICES:
        assert "profiles" not in services[name], name
    assert services["ollama"]["image"].startswith("ollama/ollama")


def test_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "ping" in services["redis"]["healthcheck"]["test"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])


def test_bind_mounts_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# --- Prometheus and Grafana


def test_prometheus_scrapes_api_and_workers() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["switchyard-api"]
    assert api.get("metrics_path", "/metrics") == "/metrics"
    assert api["static_configs"][0]["targets"] == ["api:8000"]
    worker_sd = jobs["switchyard-worker"]["dns_sd_configs"][0]
    assert worker_sd["names"] == ["worker"] and worker_sd["port"] == 9191


def test_grafana_dashboard_covers_the_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "switchyard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in (
        "switchyard_http_requests_total",
        "switchyard_http_request_duration_seconds",
        "switchyard_jobs_total",
        "switchyard_queue_depth",
        "switchyard_provider_latency_seconds",
        "switchyard_fallbacks_total",
        "switchyard_tokens_total",
        "switchyard_websocket_connections",
    ):
        assert metric in exprs, metric
    assert len({p["id"] for p in panels}) == len(panels)
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {ds["uid"] for ds in datasource["datasources"]}
    assert {p["datasource"]["uid"] for p in panels} <= uids
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "switchyard.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


# --- Kubernetes


@pytest.fixture(scope="module")
def k8s_docs() -> dict[str, list[dict[str, Any]]]:
    """Every YAML document under deploy/k8s, by file name (kustomization.yaml excluded)."""
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def _all(k8s_docs: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for docs in k8s_docs.values() for d in docs if d["kind"] == kind}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def test_every_k8s_document_is_a_named_object(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    assert k8s_docs
    for name, docs in k8s_docs.items():
        assert docs, name
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), name
            assert doc.get("metadata", {}).get("name"), f"{name}: {doc['kind']} without metadata.name"


def test_kustomization_lists_every_manifest_but_the_example_secret(k8s_docs: dict[str, Any]) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization["resources"]) == set(k8s_docs) - {"secret.example.yaml"}
    assert kustomization["namespace"] == "switchyard"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds() -> None:
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout) if d]
    assert kinds.count("ScaledObject") == 3 and "HorizontalPodAutoscaler" in kinds


def test_k8s_config_sets_only_real_settings(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    config = _all(k8s_docs, "ConfigMap")["switchyard-config"]["data"]
    secret = _all(k8s_docs, "Secret")["switchyard-secrets"]["stringData"]
    unknown = (set(config) | set(secret)) - set(ENV.values()) - EXTRA_ENV
    assert not unknown, f"variables no setting reads: {unknown}"
    assert {"DATABASE_URL", "REDIS_URL"} <= set(secret)


def test_k8s_commands_are_real_cli_commands(
    k8s_docs: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    workloads = {**_all(k8s_docs, "Deployment"), **_all(k8s_docs, "Job")}
    assert {"api", "maintenance", "switchyard-migrate"} <= set(workloads)
    for name, workload in workloads.items():
        container = _container(workload)
        assert container["image"] == "switchyard", name  # kustomization.yaml sets registry and tag
        subcommand = "worker" if name.startswith("worker-") else name.removeprefix("switchyard-")
        check_command(container["args"], subcommand, monkeypatch)
        refs = {next(iter(src.values()))["name"] for src in container["envFrom"]}
        assert refs == {"switchyard-config", "switchyard-secrets"}, name
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True, name


def test_api_has_probes_service_and_cpu_autoscaler(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    api = _container(_all(k8s_docs, "Deployment")["api"])
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert _all(k8s_docs, "Service")["api"]["spec"]["ports"][0]["targetPort"] == "http"
    hpa = _all(k8s_docs, "HorizontalPodAutoscaler")["api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "api"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in _all(k8s_docs, "Deployment")["api"]["spec"], "the HPA owns replicas"


def test_worker_pools_cover_every_queue_once(
    k8s_docs: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pools = {name: d for name, d in _all(k8s_docs, "Deployment").items() if name.startswith("worker-")}
    assert {"worker-chat", "worker-bulk"} <= set(pools)
    consumed: list[str] = []
    for deployment in pools.values():
        consumed += dramatiq_queues(dramatiq_args(_container(deployment)["args"], monkeypatch))
    assert sorted(consumed) == sorted(q.value for q in Queue), "each queue needs exactly one pool"
    chat = dramatiq_args(_container(pools["worker-chat"])["args"], monkeypatch)
    assert dramatiq_queues(chat) == ["chat"], "interactive chat gets a pool of its own"


def test_keda_scales_each_pool_on_its_queue_lists(
    k8s_docs: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployments = _all(k8s_docs, "Deployment")
    scaled = _all(k8s_docs, "ScaledObject")
    auth = _all(k8s_docs, "TriggerAuthentication")
    pools = {name for name in deployments if name.startswith("worker-")}
    assert {so["spec"]["scaleTargetRef"]["name"] for so in scaled.values()} == pools
    for so in scaled.values():
        spec = so["spec"]
        deployment = deployments[spec["scaleTargetRef"]["name"]]
        args = _container(deployment)["args"]
        queues = dramatiq_queues(dramatiq_args(args, monkeypatch))
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert "replicas" not in deployment["spec"], "KEDA owns replicas"
        lists = []
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis"
            meta = trigger["metadata"]
            assert int(meta["listLength"]) > 0
            assert meta["addressFromEnv"] == "REDIS_ADDRESS"
            assert trigger["authenticationRef"]["name"] in auth
            lists.append(meta["listName"])
        assert sorted(lists) == sorted(f"{NAMESPACE}:{q}" for q in queues)
        # Kubernetes must wait longer than dramatiq's own drain deadline.
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert shutdown_timeout_ms(dramatiq_args(args, monkeypatch)) < grace * 1000


def test_broker_namespace_matches() -> None:
    """The KEDA list names assume jobs/broker.py's namespace; fail here if it changes."""
    from jobs.broker import NAMESPACE as BROKER_NAMESPACE

    assert BROKER_NAMESPACE == NAMESPACE


# --- Dockerfile


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", text, re.M)
    assert re.search(r"^ARG PYTHON_VERSION=3\.1[12]$", text, re.M)
    assert "pip install --no-deps -e ." in text, "editable install: jobs/settings.py ROOT must be /app"
    assert "[dev]" not in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root")), "the runtime stage must not run as root"
    entrypoint = re.findall(r"^ENTRYPOINT (.+)$", text, re.M)
    assert entrypoint and json.loads(entrypoint[-1])[-1] == "switchyard"
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", ".env"} <= set(ignore)
    assert not {"README.md", "schema.sql", "routes.toml", "scripts", "jobs"} & set(ignore)
