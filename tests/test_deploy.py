"""deploy/: alert rules (promtool), Kubernetes manifests and the Dockerfile.

The image itself is not built here: this machine has the docker client but no engine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from pydantic import SecretStr

import gateway.observability  # noqa: F401  (registers the gateway's metrics)
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# emitted by `portal-gateway worker` (and the app with the in-process bus)
EVENTS_LAG = "gateway_events_lag_seconds"
# settings whose values are URLs that may carry a password
SECRET_URLS = {"REDIS_URL", "SMTP_URL", "RABBITMQ_URL"}


# -- alert rules -----------------------------------------------------------------------------


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus); CI runs this test")
    return found


def test_promtool_checks_the_alert_rules() -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", "alerts.yml"],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_each_alert_fires_on_its_failure_and_not_on_a_healthy_gateway() -> None:
    done = subprocess.run(
        [_promtool(), "test", "rules", "alerts.test.yml"],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _alerts() -> list[dict[str, Any]]:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def test_the_alerts_cover_the_integration_failures() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in _alerts()}
    assert 'outcome!~"ok|client_error"' in exprs["GatewayProviderErrors"]
    assert "by (source)" in exprs["GatewayProviderErrors"]
    assert "gateway_breaker_state" in exprs["GatewayBreakerOpen"]
    assert exprs["GatewayBreakerOpen"].strip().endswith("== 2")
    assert 'outcome="invalid_signature"' in exprs["GatewayWebhookSignatureFailures"]
    assert "gateway_cache_errors_total" in exprs["GatewayCacheDegraded"]
    assert EVENTS_LAG in exprs["GatewayEventQueueLag"]
    assert "gateway_outbox_dead_letters" in exprs["GatewayOutboxDeadLetters"]


def test_alerts_use_only_metrics_the_gateway_exports() -> None:
    exported = {name for metric in REGISTRY.collect() for name in _sample_names(metric)}
    for rule in _alerts():
        for name in re.findall(r"\bgateway_[a-z_]+\b", rule["expr"]):
            assert name in exported, f"{rule['alert']}: {name}"


def _sample_names(metric: Any) -> set[str]:
    base = metric.name
    return {base, f"{base}_total", f"{base}_count", f"{base}_sum", f"{base}_bucket"}


def test_every_alert_has_a_runbook_section_in_the_operations_guide() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+\s+(.+)$", guide, flags=re.MULTILINE)}
    for rule in _alerts():
        assert rule["labels"]["severity"] in ("warning", "critical")
        runbook = rule["annotations"]["runbook"]
        path, _, anchor = runbook.partition("#")
        assert path == "docs/operations.md"
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"docs/operations.md has no section {rule['alert']}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


# -- Kubernetes manifests --------------------------------------------------------------------


def _objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        objects.extend(d for d in yaml.safe_load_all((K8S / resource).read_text()) if d)
    return objects


def _get(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def _secret_settings() -> set[str]:
    secrets = set(SECRET_URLS)
    for name, field in Settings.model_fields.items():
        if SecretStr in _types(field.annotation):
            secrets.add(name.upper())
    return secrets


def _types(annotation: Any) -> set[Any]:
    found = {annotation}
    for argument in getattr(annotation, "__args__", ()):
        found |= _types(argument)
    return found


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_gateway_probes_resources_and_shutdown() -> None:
    deployment = _get("Deployment", "portal-gateway")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    config = _get("ConfigMap", "portal-gateway-config")["data"]
    assert ports["http"] == int(config["PORT"])
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    # the pod outlives preStop + SHUTDOWN_GRACE, so uvicorn's own grace is what ends requests
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + int(config["SHUTDOWN_GRACE"]) + 5
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def _pods() -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in _objects()
        if o["kind"] == "Deployment"
    ]


def test_pods_run_as_non_root_without_privileges() -> None:
    assert len(_pods()) == 2
    for name, pod in _pods():
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] != 0, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name


def test_secrets_are_referenced_never_inlined() -> None:
    secret_names = _secret_settings()
    assert {"STRIPE_API_KEY", "SERVICE_API_KEYS", "REDIS_URL"} <= secret_names
    assert not [o for o in _objects() if o["kind"] == "Secret"]
    config = _get("ConfigMap", "portal-gateway-config")["data"]
    assert not set(config) & secret_names
    for name, pod in _pods():
        for container in pod["containers"]:
            for env in container.get("env", []):
                assert env["name"] in _setting_names(), f"{name}: unknown setting {env['name']}"
                assert "value" not in env, f"{name}: {env['name']} is inlined"
                reference = env["valueFrom"]["secretKeyRef"]
                assert reference["name"] == "portal-gateway-secrets"
                assert reference["key"] == env["name"]
            sources = [s["configMapRef"]["name"] for s in container["envFrom"]]
            assert sources == ["portal-gateway-config"]


def test_config_map_names_only_real_settings() -> None:
    config = _get("ConfigMap", "portal-gateway-config")["data"]
    assert set(config) <= _setting_names()
    assert config["GATEWAY_ENV"] == "production"
    assert all(isinstance(value, str) for value in config.values())


def test_worker_runs_the_worker_command_from_the_same_image() -> None:
    gateway = _get("Deployment", "portal-gateway")["spec"]["template"]["spec"]["containers"][0]
    worker = _get("Deployment", "portal-gateway-worker")["spec"]["template"]["spec"]
    (container,) = worker["containers"]
    assert container["args"] == ["worker"]
    assert container["image"] == gateway["image"]
    assert worker["terminationGracePeriodSeconds"] >= 30


def test_autoscaler_disruption_budgets_and_service_select_the_right_pods() -> None:
    labels = {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
        for o in _objects()
        if o["kind"] == "Deployment"
    }
    hpa = _get("HorizontalPodAutoscaler", "portal-gateway")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "portal-gateway"
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    for budget, deployment in (
        ("portal-gateway", "portal-gateway"),
        ("portal-gateway-worker", "portal-gateway-worker"),
    ):
        spec = _get("PodDisruptionBudget", budget)["spec"]
        assert spec["selector"]["matchLabels"].items() <= labels[deployment].items()
        assert spec["maxUnavailable"] == 1
    # the two budgets never select each other's pods
    assert labels["portal-gateway"] != labels["portal-gateway-worker"]
    service = _get("Service", "portal-gateway")["spec"]
    assert service["selector"].items() <= labels["portal-gateway"].items()
    assert not service["selector"].items() <= labels["portal-gateway-worker"].items()


# -- Dockerfile ------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        (line.split()[0].upper(), line.partition(" ")[2].strip())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_dockerfile_is_multi_stage_slim_non_root_with_a_healthcheck() -> None:
    instructions = _instructions()
    args = dict(a.split("=", 1) for op, a in instructions if op == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    stages = [a for op, a in instructions if op == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    runtime = instructions[last_from:]
    users = [a for op, a in runtime if op == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any(op == "COPY" and a.startswith("--from=build") for op, a in runtime)
    (healthcheck,) = [a for op, a in runtime if op == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    build = instructions[: len(instructions) - len(runtime)]
    assert any(op == "RUN" and "scripts/fetch_assets.py" in a for op, a in build)
    assert ("ENTRYPOINT", '["portal-gateway"]') in runtime


def test_dockerfile_copies_only_what_exists() -> None:
    for op, argument in _instructions():
        if op == "COPY" and not argument.startswith("--from"):
            source = argument.split()[0]
            assert (ROOT / source).exists(), source
    package_data = (ROOT / "pyproject.toml").read_text()
    assert "static/graphiql/*" in package_data  # in the wheel
    assert "static/swagger-ui/*" in package_data


def test_the_image_installs_only_what_the_lock_pins_build_backend_included() -> None:
    """Nothing resolved at build time: the runtime lock with hashes, then the project built
    by the locked setuptools rather than by a newest one fetched into an isolated env."""
    runs = " ".join(a for op, a in _instructions() if op == "RUN")
    assert "pip install --require-hashes -r requirements.lock" in runs
    assert "pip install --no-deps --no-build-isolation ." in runs
    lock = (ROOT / "requirements.lock").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'requires = ["setuptools' in pyproject
    pinned = [line for line in lock.splitlines() if line.startswith("setuptools==")]
    assert pinned, "requirements.lock must pin the build backend (make relock)"
    assert "--hash=sha256:" in lock.split(pinned[0], 1)[1].split("\n\n", 1)[0]
