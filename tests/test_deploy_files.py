"""Structural checks of the deployment files: Dockerfile, compose.yaml, deploy/.

There is no Docker engine (nor `docker compose`) or cluster in CI, so these
tests read the files and check them against the code they run: every command
is parsed by the real `switchyard` CLI (worker commands run through api/cli.py
up to the point where it would exec dramatiq, whose own parser then checks
the arguments), every probe is a real CLI command, every environment variable
is one that jobs/settings.py reads, and every KEDA list is a real Dramatiq
queue key. Every core Kubernetes object is validated against the API's
published schemas (kubernetes-validate, strict: an unknown field fails), and
KEDA's objects, whose CRDs that bundle lacks, against a schema written here
from KEDA's CRDs. No servers are started.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
from dramatiq.cli import make_argument_parser as dramatiq_parser

from api import cli
from jobs.kinds import LANES
from jobs.settings import ENV, Settings, settings_from
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
#: What `switchyard worker --pool NAME` exports to the worker processes (workers/middleware/heartbeat.py).
POOL_ENV = "SWITCHYARD_POOL"

#: The worker pools, by compose service (= Kubernetes Deployment) name: `worker-<pool>` runs `--pool <pool>`.
WORKER_POOLS = {"worker-chat": "chat", "worker-bulk": "bulk", "worker-background": "background"}

#: compose service -> the `switchyard` subcommand it runs.
APP_SERVICES = {
    "migrate": "migrate",
    "api": "api",
    **dict.fromkeys(WORKER_POOLS, "worker"),
    "maintenance": "maintenance",
    "simulator": "simulator",
}
PROFILES = {"simulator": ["dev"], "ollama": ["local"], "prometheus": ["observability"], "grafana": ["observability"]}
#: Every profile compose.yaml may use (the header documents each).
KNOWN_PROFILES = {"dev", "local", "observability"}
CORE_SERVICES = {"postgres", "redis", *APP_SERVICES} - set(PROFILES)

#: Variables that deployment files may set besides the app's own settings (jobs.settings.ENV).
EXTRA_ENV = {
    "REDIS_ADDRESS",  # KEDA's redis scaler (host:port of REDIS_URL)
    "REDIS_PASSWORD",  # KEDA's TriggerAuthentication
}

#: A pool's drain deadline (--worker-shutdown-timeout) must end this long before the SIGKILL.
DRAIN_MARGIN_S = 5

#: The probe of a worker container: is a worker process of this host beating?
WORKER_READY = ["switchyard", "worker-ready"]

#: The functions api/cli.py dispatches the process subcommands to; the tests swap them out.
HANDLERS = {"_dev": "dev", "_migrate": "migrate", "_api": "api", "_worker": "worker",
            "_maintenance": "maintenance", "_simulator": "simulator"}


class _Dispatched(Exception):
    def __init__(self, subcommand: str, args: argparse.Namespace) -> None:
        self.subcommand = subcommand
        self.args_ = args


class _Exec(Exception):
    def __init__(self, module: str, args: list[str]) -> None:
        self.module = module
        self.args_ = args


def _never_exec(*args: Any) -> None:  # a missed handler must not replace the pytest process
    raise AssertionError(f"the CLI tried to exec {args}")


def parse_switchyard(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, argparse.Namespace]:
    """Run `switchyard argv` through api/cli.py up to the point where it would start the process.

    Returns the subcommand whose handler was reached and the arguments it got.
    """
    recorders: dict[Any, Any] = {}
    for name, subcommand in HANDLERS.items():

        def record(args: argparse.Namespace, subcommand: str = subcommand) -> None:
            raise _Dispatched(subcommand, args)

        recorders[getattr(cli, name)] = record

    with monkeypatch.context() as m:
        m.setattr("os.execvp", _never_exec)
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


@dataclass(frozen=True)
class WorkerLaunch:
    """What `switchyard worker ...` starts: dramatiq's arguments (after `workers.app`) and the pool name."""

    dramatiq: list[str]
    pool: str | None


def launch_worker(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> WorkerLaunch:
    """Run `switchyard worker ...` through the real api/cli.py up to its exec of dramatiq.

    The worker handler itself runs (so `--pool` is taken out the way it is in a
    container), with the exec and the environment it exports captured.
    """
    assert argv and argv[0] == "worker", argv
    environ = {k: v for k, v in os.environ.items() if k != POOL_ENV}

    def exec_module(module: str, *args: str) -> None:
        raise _Exec(module, list(args))

    launched: _Exec | None = None
    with monkeypatch.context() as m:
        m.setattr("os.execvp", _never_exec)
        m.setattr(cli, "_exec_module", exec_module)
        # What the handler exports for the exec'd program lands in a copy, not in this process.
        m.setattr(os, "environ", environ)
        m.setattr(os, "putenv", environ.__setitem__)
        m.setattr(tempfile, "mkdtemp", lambda *args, **kwargs: "/nonexistent/switchyard-prom")
        try:
            cli.main(list(argv))
        except _Exec as exc:
            launched = exc
        except SystemExit as exc:
            pytest.fail(f"`switchyard {' '.join(argv)}` is rejected by the CLI (exit {exc.code})")
    if launched is None:
        pytest.fail(f"`switchyard {' '.join(argv)}` started nothing")
    assert launched.module == "dramatiq" and launched.args_[:1] == ["workers.app"], launched.args_
    assert "--pool" not in launched.args_, "switchyard must take --pool out before dramatiq sees it"
    return WorkerLaunch(dramatiq=launched.args_[1:], pool=environ.get(POOL_ENV))


def dramatiq_args(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The arguments `switchyard worker ...` hands to dramatiq."""
    return launch_worker(argv, monkeypatch).dramatiq


def dramatiq_options(worker_args: list[str]) -> argparse.Namespace:
    """The arguments of `dramatiq workers.app` as dramatiq's own parser reads them."""
    try:
        return dramatiq_parser().parse_args(["workers.app", *worker_args])
    except SystemExit:
        pytest.fail(f"dramatiq rejects the worker arguments {worker_args}")


def dramatiq_queues(worker_args: list[str]) -> list[str]:
    """Validate the arguments of `switchyard worker` with dramatiq's parser; return the queues."""
    ns = dramatiq_options(worker_args)
    assert ns.queues, f"a worker pool must name its queues explicitly: {worker_args}"
    unknown = set(ns.queues) - {q.value for q in Queue}
    assert not unknown, f"unknown queues {unknown} in {worker_args}"
    return list(ns.queues)


def shutdown_timeout_ms(worker_args: list[str]) -> int:
    timeout: int = dramatiq_options(worker_args).worker_shutdown_timeout
    return timeout


def check_typer_command(argv: list[str]) -> None:
    """`switchyard argv` is a typer command of api/cli.py that accepts `argv` (nothing runs)."""
    group = typer.main.get_command(cli.app)
    command = group.commands.get(argv[0]) if hasattr(group, "commands") else None
    assert command is not None, f"`switchyard {argv[0]}` is not a command of api/cli.py"
    try:
        command.make_context(argv[0], list(argv[1:]))
    except Exception as exc:  # click's usage errors (typer vendors its own click)
        pytest.fail(f"`switchyard {' '.join(argv)}` is rejected by the CLI: {exc}")


def check_probe(command: list[str]) -> None:
    """`command` (a healthcheck or exec probe) runs a real `switchyard` command."""
    assert command[:1] == ["switchyard"], command
    check_typer_command(command[1:])


def check_command(argv: list[str], expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`argv` is a valid `switchyard` command line running the subcommand `expected`."""
    if expected == "worker":
        launch = launch_worker(argv, monkeypatch)
        dramatiq_queues(launch.dramatiq)
        assert launch.pool, f"a worker pool must be named with --pool: {argv}"
        return
    subcommand, args = parse_switchyard(argv, monkeypatch)
    assert subcommand == expected, argv
    if subcommand == "simulator":
        simulator_parse_args(args.rest)  # exits on a bad flag
    elif subcommand == "dev":
        dev_parser().parse_args(args.rest)  # exits on a bad flag
    elif subcommand == "api":
        assert args.host == "0.0.0.0", "the API must listen on all interfaces in a container"
        assert args.port == 8000


def check_threads_fit(worker_args: list[str], env: dict[str, str], where: str) -> None:
    """A worker process's threads fit its database pool, which SWITCHYARD_WORKER_THREADS sizes."""
    threads = dramatiq_options(worker_args).threads
    assert threads <= settings_from(env).worker_threads, (
        f"{where}: --threads {threads} is more than SWITCHYARD_WORKER_THREADS "
        f"({settings_from(env).worker_threads}), which sizes each process's connection pool")


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"write durations in whole seconds: {duration!r}"
    return int(match.group(1))


def test_switchyard_is_the_console_script() -> None:
    """The image's ENTRYPOINT and every probe run `switchyard`: the package's console script."""
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("switchyard") == "api.cli:main"


def test_pool_variable_is_the_pool_setting() -> None:
    from jobs.settings import ENV

    assert ENV["pool"] == POOL_ENV


def test_worker_command_names_its_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    launch = launch_worker(["worker", "--pool", "chat", "--queues", "chat", "--processes", "2"], monkeypatch)
    assert launch.pool == "chat"
    assert launch.dramatiq[:4] == ["--queues", "chat", "--processes", "2"]
    assert "--worker-shutdown-timeout" in launch.dramatiq, "without one, switchyard sets the drain deadline"


def test_dev_hands_its_options_to_the_dev_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    subcommand, args = parse_switchyard(["dev", "--port", "8001", "--threads", "4"], monkeypatch)
    assert subcommand == "dev"
    options = dev_parser().parse_args(args.rest)
    assert (options.port, options.threads, options.processes) == (8001, 4, 1)


# --- compose.yaml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


@pytest.fixture(scope="module")
def app_image(compose: dict[str, Any]) -> str:
    image: str = compose["x-app"]["image"]
    return image


def _compose_workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if svc.get("command", [None])[0] == "worker"}


def _defaults(env: dict[str, str]) -> dict[str, str]:
    """A compose environment with `${VAR:-default}` read as its default."""
    return {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def test_compose_has_the_designed_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {*CORE_SERVICES, *PROFILES}
    assert compose["services"]["postgres"]["image"].startswith("pgvector/pgvector:")
    assert compose["services"]["redis"]["image"].startswith("redis:7")
    redis_command = compose["services"]["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes", "the queues must survive a restart"
    assert redis_command[redis_command.index("--maxmemory-policy") + 1] == "noeviction"


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
    for name in APP_SERVICES:
        unknown = set(compose["services"][name]["environment"]) - set(ENV.values()) - EXTRA_ENV
        assert not unknown, f"{name}: variables no setting reads: {unknown}"


def test_app_commands_are_real_cli_commands(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for service, subcommand in APP_SERVICES.items():
        check_command(compose["services"][service]["command"], subcommand, monkeypatch)


def test_compose_worker_pools_consume_every_queue_once(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    workers = _compose_workers(compose)
    assert set(workers) == set(WORKER_POOLS)
    consumed: list[str] = []
    for name, svc in workers.items():
        launch = launch_worker(svc["command"], monkeypatch)
        assert launch.pool == WORKER_POOLS[name], f"{name} must run `--pool {WORKER_POOLS[name]}`"
        consumed += dramatiq_queues(launch.dramatiq)
    assert sorted(consumed) == sorted(str(q) for q in LANES), "each lane needs exactly one pool"
    chat = dramatiq_args(workers["worker-chat"]["command"], monkeypatch)
    assert dramatiq_queues(chat) == [Queue.CHAT], "interactive chat gets a pool of its own"


def test_compose_runs_the_kubernetes_pools(
    compose: dict[str, Any], k8s_docs: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same pools, same queues, on one Docker host and on Kubernetes."""

    def pools(commands: dict[str, list[str]]) -> dict[str, set[str]]:
        launches = {name: launch_worker(argv, monkeypatch) for name, argv in commands.items()}
        return {f"{name}={launch.pool}": set(dramatiq_queues(launch.dramatiq)) for name, launch in launches.items()}

    in_compose = pools({name: svc["command"] for name, svc in _compose_workers(compose).items()})
    deployments = _all(k8s_docs, "Deployment")
    on_k8s = pools({name: _container(d)["args"] for name, d in deployments.items() if name.startswith("worker-")})
    assert in_compose == on_k8s


def test_depends_on_conditions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "maintenance", *WORKER_POOLS):
        deps = services[name]["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}, name
        assert deps["redis"] == {"condition": "service_healthy"}, name
    # Core services must not wait for a service that only a profile starts.
    for name in CORE_SERVICES:
        assert not set(services[name].get("depends_on", {})) & set(PROFILES), name


def test_worker_pools_replicate_and_drain(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, worker in _compose_workers(compose).items():
        assert "container_name" not in worker, f"{name}: a fixed container name breaks replicas and --scale"
        assert "ports" not in worker, f"{name}: published host ports break replicas and --scale"
        replicas = worker["deploy"]["replicas"]
        assert isinstance(replicas, int) and replicas >= 1, name
        grace = _seconds(worker["stop_grace_period"])
        rest = dramatiq_args(worker["command"], monkeypatch)
        assert shutdown_timeout_ms(rest) <= (grace - DRAIN_MARGIN_S) * 1000, f"{name}: dramatiq must give up first"
        check_threads_fit(rest, _defaults(worker["environment"]), name)
    assert _compose_workers(compose)["worker-chat"]["deploy"]["replicas"] >= 2, "interactive: no single point"


def test_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, profiles in PROFILES.items():
        assert services[name].get("profiles") == profiles, name
    for name, svc in services.items():
        assert set(svc.get("profiles", [])) <= KNOWN_PROFILES, f"{name}: unknown profile"
    for name in CORE_SERVICES:
        assert "profiles" not in services[name], name
    assert services["ollama"]["image"].startswith("ollama/ollama")
    assert services["simulator"]["command"][0] == "simulator"


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's bind mounts of repository paths: container path -> repository path."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = source
    return mounts


def test_observability_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    observability = {name for name, svc in services.items() if "observability" in svc.get("profiles", [])}
    assert observability == {"prometheus", "grafana"}
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert _mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"
    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana")
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    # The provisioned dashboard provider reads the directory the dashboards are mounted at.
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "switchyard.yml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert (ROOT / mounts[dashboards_path]).is_dir()
    assert list((ROOT / mounts[dashboards_path]).glob("*.json"))
    # ...and the provisioned data source is the compose Prometheus.
    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    prometheus_urls = {ds["url"] for ds in datasources["datasources"] if ds["type"] == "prometheus"}
    assert "http://prometheus:9090" in prometheus_urls
    assert grafana["depends_on"] == ["prometheus"]


def test_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "ping" in services["redis"]["healthcheck"]["test"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    for name, worker in _compose_workers(compose).items():
        test = worker["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1:] == WORKER_READY, f"{name}: {test}"
        check_probe(test[1:])
        # The probe runs in the container: its own timeout must fit in the interval.
        assert _seconds(worker["healthcheck"]["timeout"]) <= _seconds(worker["healthcheck"]["interval"]), name


def test_bind_mounts_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for source in _mounts(svc).values():
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# --- Prometheus and Grafana


def test_prometheus_scrapes_api_and_workers(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["switchyard-api"]
    assert api.get("metrics_path", "/metrics") == "/metrics"
    assert api["static_configs"][0]["targets"] == ["api:8000"]
    worker_sd = jobs["switchyard-worker"]["dns_sd_configs"][0]
    # Every replica of every pool: one DNS name per compose worker service.
    assert sorted(worker_sd["names"]) == sorted(_compose_workers(compose))
    assert worker_sd["port"] == Settings().worker_metrics_port
    for name, worker in _compose_workers(compose).items():
        assert str(worker_sd["port"]) in [str(p) for p in worker["expose"]], name
        assert "SWITCHYARD_WORKER_METRICS_PORT" not in worker["environment"], name


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


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _worker_deployments(k8s_docs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {name: d for name, d in _all(k8s_docs, "Deployment").items() if name.startswith("worker-")}


def _pod_env(k8s_docs: dict[str, list[dict[str, Any]]], container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets from its envFrom sources and env (the example Secret's values)."""
    sources = {("configMapRef", n): d.get("data", {}) for n, d in _all(k8s_docs, "ConfigMap").items()}
    sources |= {("secretRef", n): d.get("stringData", {}) for n, d in _all(k8s_docs, "Secret").items()}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        (ref, target), = source.items()
        assert (ref, target["name"]) in sources, f"envFrom names a missing {ref} {target['name']}"
        env |= {k: str(v) for k, v in sources[(ref, target["name"])].items()}
    env |= {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
    return env


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
    assert _all(k8s_docs, "ConfigMap")["switchyard-config"]
    assert _all(k8s_docs, "Secret")["switchyard-secrets"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds() -> None:
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = [d["kind"] for d in built]
    assert kinds.count("ScaledObject") == 3 and "HorizontalPodAutoscaler" in kinds
    # What kustomize adds (namespace, labels, the image) keeps every core object valid.
    import kubernetes_validate

    for doc in built:
        if not doc["apiVersion"].startswith(KEDA_GROUP):
            kubernetes_validate.validate(doc, OLDEST_KUBERNETES, strict=True)


# Schemas. kubernetes-validate bundles the API's OpenAPI schemas of many releases (its
# "-strict" variants forbid unknown fields); the manifests must hold for the oldest
# Kubernetes deploy/README.md supports and for the newest release the package knows.
OLDEST_KUBERNETES = "1.30"
KEDA_GROUP = "keda.sh/"


def _kubernetes_versions() -> list[str]:
    from kubernetes_validate.utils import latest_version, major_minor

    return sorted({OLDEST_KUBERNETES, major_minor(latest_version())})


def test_core_manifests_match_the_kubernetes_schemas(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    import kubernetes_validate

    checked = 0
    for file, docs in k8s_docs.items():
        for doc in docs:
            if doc["apiVersion"].startswith(KEDA_GROUP):
                continue  # a CRD: test_keda_objects_match_keda_crds
            where = f"{file}: {doc['kind']} {doc['metadata']['name']}"
            for version in _kubernetes_versions():
                problem = None
                try:
                    used = kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    path = ".".join(str(p) for p in exc.absolute_path)
                    problem = f"is not a valid Kubernetes {version} object at {path!r}: {exc.message}"
                except kubernetes_validate.SchemaNotFoundError as exc:
                    problem = exc.message
                if problem:
                    pytest.fail(f"{where} {problem}")
                assert used == version, f"{where}: validated against {used}, not {version}"
                checked += 1
    assert checked >= 2 * 11


def test_kubernetes_validation_is_strict(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    """A misspelt field fails, so a probe or limit that Kubernetes would silently drop cannot slip through."""
    import kubernetes_validate

    deployment = copy.deepcopy(_all(k8s_docs, "Deployment")["worker-chat"])
    container = _container(deployment)
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, OLDEST_KUBERNETES, strict=True)


# KEDA's ScaledObject and TriggerAuthentication (keda.sh/v1alpha1), as its CRDs define them
# (config/crd/bases in kedacore/keda, 2.x), with unknown fields forbidden as on the core
# objects. TriggerAuthentication's secret-manager sources are only named, not detailed.
_K8S_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"
_STRING = {"type": "string"}
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}


def _object(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _keda_root(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _object({"apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": kind},
                    "metadata": {"$ref": _K8S_DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
                    "spec": spec}, "apiVersion", "kind", "metadata", "spec")


KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": _keda_root("ScaledObject", _object({
        "scaleTargetRef": _object({"apiVersion": _STRING, "kind": _STRING, "name": _STRING,
                                   "envSourceContainerName": _STRING}, "name"),
        "pollingInterval": _INT32, "cooldownPeriod": _INT32, "initialCooldownPeriod": _INT32,
        "idleReplicaCount": _INT32, "minReplicaCount": _INT32, "maxReplicaCount": _INT32,
        "advanced": _object({
            "restoreToOriginalReplicaCount": {"type": "boolean"},
            "horizontalPodAutoscalerConfig": _object({
                "name": _STRING,
                "behavior": {"$ref": _K8S_DEFS + "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior"},
            }),
            "scalingModifiers": _object({"formula": _STRING, "target": _STRING, "activationTarget": _STRING,
                                         "metricType": _STRING}),
        }),
        "fallback": _object({"failureThreshold": _INT32, "replicas": _INT32, "behavior": _STRING},
                            "failureThreshold", "replicas"),
        "triggers": {"type": "array", "minItems": 1, "items": _object({
            "type": _STRING, "name": _STRING,
            "metadata": {"type": "object", "additionalProperties": _STRING},
            "authenticationRef": _object({"name": _STRING,
                                          "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}},
                                         "name"),
            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
            "useCachedMetrics": {"type": "boolean"},
        }, "type", "metadata")},
    }, "scaleTargetRef", "triggers")),
    "TriggerAuthentication": _keda_root("TriggerAuthentication", _object({
        "secretTargetRef": {"type": "array", "items": _object(
            {"parameter": _STRING, "name": _STRING, "key": _STRING}, "parameter", "name", "key")},
        "configMapTargetRef": {"type": "array", "items": _object(
            {"parameter": _STRING, "name": _STRING, "key": _STRING}, "parameter", "name", "key")},
        "env": {"type": "array", "items": _object(
            {"parameter": _STRING, "name": _STRING, "containerName": _STRING}, "parameter", "name")},
        "boundServiceAccountToken": {"type": "array", "items": _object(
            {"parameter": _STRING, "serviceAccountName": _STRING}, "parameter", "serviceAccountName")},
        "podIdentity": {"type": "object", "required": ["provider"]},
        **{source: {"type": "object"}
           for source in ("hashiCorpVault", "azureKeyVault", "awsSecretManager", "gcpSecretManager")},
    })),
}

#: KEDA's `redis` (lists) scaler: its trigger metadata and the parameters a TriggerAuthentication may set.
REDIS_TRIGGER_METADATA = {
    "address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "username", "usernameFromEnv",
    "passwordFromEnv", "listName", "listLength", "activationListLength", "databaseIndex", "enableTLS", "unsafeSsl",
}
REDIS_AUTH_PARAMETERS = {"address", "host", "port", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}


def test_keda_objects_match_keda_crds(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    from importlib.resources import files

    import jsonschema  # kubernetes-validate's own dependencies
    from kubernetes_validate.utils import latest_version
    from referencing import Registry, Resource

    # The core definitions (ObjectMeta, the HPA's behavior) from the same bundle, under their own $id.
    bundle = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{latest_version()}-local-strict"
    definitions = Resource.from_contents(json.loads((bundle / "_definitions.json").read_text()))
    registry = definitions @ Registry()
    keda = [(file, doc) for file, docs in k8s_docs.items() for doc in docs if doc["apiVersion"].startswith(KEDA_GROUP)]
    assert {doc["kind"] for _, doc in keda} == set(KEDA_SCHEMAS)
    for file, doc in keda:
        validator = jsonschema.Draft202012Validator(KEDA_SCHEMAS[doc["kind"]], registry=registry)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, f"{file}: {doc['kind']} {doc['metadata']['name']}: " + "; ".join(
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    # The schema itself is strict: a misspelt field fails.
    scaled = copy.deepcopy(_all(k8s_docs, "ScaledObject")["worker-chat"])
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")
    validator = jsonschema.Draft202012Validator(KEDA_SCHEMAS["ScaledObject"], registry=registry)
    assert any("maxReplicas" in e.message for e in validator.iter_errors(scaled))


def test_keda_references_resolve(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    """Scale targets, authentication, env variables and secret keys that KEDA looks up all exist."""
    deployments = _all(k8s_docs, "Deployment")
    auths = _all(k8s_docs, "TriggerAuthentication")
    secrets = _all(k8s_docs, "Secret")
    for name, scaled in _all(k8s_docs, "ScaledObject").items():
        target = scaled["spec"]["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment" and target.get("apiVersion", "apps/v1") == "apps/v1"
        assert target["name"] in deployments, f"{name} scales a missing Deployment {target['name']}"
        container = _container(deployments[target["name"]])
        env = _pod_env(k8s_docs, container)
        redis_db = urlsplit(env["REDIS_URL"]).path.lstrip("/") or "0"
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["type"] == "redis", name
            meta = trigger["metadata"]
            assert set(meta) <= REDIS_TRIGGER_METADATA, f"{name}: unknown redis trigger metadata"
            assert {"listName", "listLength"} <= set(meta), name
            # KEDA reads *FromEnv variables from the scale target's container (envFrom included).
            for key, var in meta.items():
                if key.endswith("FromEnv"):
                    assert var in env, f"{name}: {key} {var} is not in {target['name']}'s environment"
            assert meta.get("databaseIndex", "0") == redis_db, f"{name}: KEDA must read REDIS_URL's database"
            ref = trigger["authenticationRef"]
            assert ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
            assert ref["name"] in auths, f"{name} authenticates with a missing {ref['name']}"
    for name, auth in auths.items():
        for ref in auth["spec"].get("secretTargetRef", []):
            assert ref["parameter"] in REDIS_AUTH_PARAMETERS, name
            # The real Secret is made out of band; secret.example.yaml lists its keys.
            assert ref["key"] in secrets[ref["name"]]["stringData"], f"{name}: no key {ref['key']} in {ref['name']}"


def test_selectors_match_their_pods(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    workloads = _all(k8s_docs, "Deployment")
    for name, deployment in workloads.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    api_pods = workloads["api"]["spec"]["template"]["metadata"]["labels"]
    assert _all(k8s_docs, "Service")["api"]["spec"]["selector"].items() <= api_pods.items()
    assert _all(k8s_docs, "PodDisruptionBudget")["api"]["spec"]["selector"]["matchLabels"].items() <= api_pods.items()
    # A selector that also matched another Deployment's pods would mix the pools.
    for name, deployment in workloads.items():
        selector = deployment["spec"]["selector"]["matchLabels"].items()
        for other, other_deployment in workloads.items():
            if other != name:
                assert not selector <= other_deployment["spec"]["template"]["metadata"]["labels"].items(), (name, other)


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
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if "exec" in container.get(probe, {}):
                check_probe(container[probe]["exec"]["command"])


def test_api_has_probes_service_and_cpu_autoscaler(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    api = _container(_all(k8s_docs, "Deployment")["api"])
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports["http"] == 8000
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert api[probe]["httpGet"]["port"] in ports, probe
    assert _all(k8s_docs, "Service")["api"]["spec"]["ports"][0]["targetPort"] == "http"
    hpa = _all(k8s_docs, "HorizontalPodAutoscaler")["api"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in _all(k8s_docs, "Deployment")["api"]["spec"], "the HPA owns replicas"
    assert "cpu" in api["resources"]["requests"], "a CPU utilization target needs a CPU request"


def test_worker_pools_cover_every_queue_once(
    k8s_docs: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pools = _worker_deployments(k8s_docs)
    assert set(pools) == set(WORKER_POOLS)
    consumed: list[str] = []
    for name, deployment in pools.items():
        launch = launch_worker(_container(deployment)["args"], monkeypatch)
        assert launch.pool == WORKER_POOLS[name], f"{name} must run `--pool {WORKER_POOLS[name]}`"
        assert deployment["spec"]["template"]["metadata"]["labels"]["switchyard/pool"] == launch.pool, name
        consumed += dramatiq_queues(launch.dramatiq)
        check_threads_fit(launch.dramatiq, _pod_env(k8s_docs, _container(deployment)), name)
    assert sorted(consumed) == sorted(str(q) for q in LANES), "each lane needs exactly one pool"
    chat = dramatiq_args(_container(pools["worker-chat"])["args"], monkeypatch)
    assert dramatiq_queues(chat) == [Queue.CHAT], "interactive chat gets a pool of its own"


def test_worker_pools_probe_their_heartbeats(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    heartbeat_timeout_s = Settings().heartbeat_timeout_ms / 1000
    for name, deployment in _worker_deployments(k8s_docs).items():
        container = _container(deployment)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]
            # Liveness adds --live: an unreachable Redis is no reason to restart a pool.
            expected = [*WORKER_READY, "--live"] if kind == "livenessProbe" else WORKER_READY
            assert probe["exec"]["command"] == expected, f"{name}: {kind}"
            assert probe["periodSeconds"] >= 5 and probe["timeoutSeconds"] >= 5, f"{name}: {kind}"
        # Liveness restarts the pod: only after several heartbeat timeouts without a beat, so a
        # Redis blip or a slow beat never restarts a pool that is working.
        liveness = container["livenessProbe"]
        assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 6 * heartbeat_timeout_s, name
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, f"{name}: boot needs time"


def test_keda_scales_each_pool_on_its_queue_lists(
    k8s_docs: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployments = _all(k8s_docs, "Deployment")
    scaled = _all(k8s_docs, "ScaledObject")
    pools = set(_worker_deployments(k8s_docs))
    assert {so["spec"]["scaleTargetRef"]["name"] for so in scaled.values()} == pools
    assert len(scaled) == len(pools), "one ScaledObject per pool"
    for so in scaled.values():
        spec = so["spec"]
        deployment = deployments[spec["scaleTargetRef"]["name"]]
        args = dramatiq_args(_container(deployment)["args"], monkeypatch)
        queues = dramatiq_queues(args)
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert "replicas" not in deployment["spec"], "KEDA owns replicas"
        lists = []
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis"
            meta = trigger["metadata"]
            assert int(meta["listLength"]) > 0
            assert meta["addressFromEnv"] == "REDIS_ADDRESS"
            lists.append(meta["listName"])
        assert sorted(lists) == sorted(f"{NAMESPACE}:{q}" for q in queues)
        # Kubernetes must wait longer than dramatiq's own drain deadline.
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert shutdown_timeout_ms(args) <= (grace - DRAIN_MARGIN_S) * 1000


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
    # The probes exec `switchyard` directly (not through the entrypoint): it must be on PATH.
    assert re.search(r"^ENV PATH=/opt/venv/bin:", text, re.M)
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", ".env"} <= set(ignore)
    assert not {"README.md", "schema.sql", "routes.toml", "scripts", "jobs"} & set(ignore)
