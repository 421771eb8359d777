"""The production stacks in `deploy/`, checked without a cluster or a Docker daemon: the
Kubernetes manifests against the Kubernetes JSON schemas (`kubernetes-validate`), the Compose
file against the Compose spec's schema (vendored by `check-jsonschema`), and the invariants
that keep calls safe: grace periods longer than the drain, probes on /health, and only real
settings in the environment."""

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fastapi.responses import JSONResponse

from app.api.health import Health
from app.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SETTING_NAMES = {
    field.alias or f"SWITCHBOARD_{name.upper()}" for name, field in Settings.model_fields.items()
}
DEFAULT_DRAIN_GRACE = Settings.model_fields["drain_grace_secs"].default


def manifests() -> dict[str, dict]:
    """Every Kubernetes object in deploy/kubernetes, by kind."""
    objects = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for document in yaml.safe_load_all(path.read_text()):
                objects[document["kind"]] = document
    return objects


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def switchboard_services(spec: dict) -> dict[str, dict]:
    return {
        name: service
        for name, service in spec["services"].items()
        if service.get("image") == "switchboard:local"
    }


def seconds(duration: str) -> float:
    """A Compose duration (`45s`, `1m30s`) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert parts and duration, duration
    hours, minutes, secs = (float(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + secs


@pytest.mark.parametrize(
    "path", sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_kubernetes_manifests_match_the_kubernetes_schemas(path):
    version = kubernetes_validate.latest_version()
    for document in yaml.safe_load_all((KUBERNETES / path).read_text()):
        kubernetes_validate.validate(document, version, strict=True)


def test_kustomization_applies_every_manifest():
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_the_deployment_drains_before_it_is_killed_and_is_probed_on_health():
    objects = manifests()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    drain = float(env.get("SWITCHBOARD_DRAIN_GRACE_SECS") or DEFAULT_DRAIN_GRACE)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000}  # the Dockerfile's SWITCHBOARD_PORT
    assert "SWITCHBOARD_PORT=8000" in (DEPLOY.parent / "Dockerfile").read_text()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe

    assert objects["Service"]["spec"]["selector"].items() <= pod_labels(objects).items()
    backend = objects["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": objects["Service"]["metadata"]["name"], "port": {"name": "http"}}
    annotations = objects["Ingress"]["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert (
            int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
        )  # WebSocket calls last
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"] and hpa["minReplicas"] >= 2


def pod_labels(objects: dict) -> dict:
    return objects["Deployment"]["spec"]["template"]["metadata"]["labels"]


def test_kubernetes_sets_only_real_settings_and_keeps_credentials_in_the_secret():
    objects = manifests()
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    secret_names = set(objects["Secret"]["stringData"])
    assert container["envFrom"] == [{"secretRef": {"name": objects["Secret"]["metadata"]["name"]}}]
    env_names = {e["name"] for e in container["env"]}
    assert env_names | secret_names <= SETTING_NAMES, (env_names | secret_names) - SETTING_NAMES
    assert {
        "DATABASE_URL",
        "SWITCHBOARD_REDIS_URL",
        "SWITCHBOARD_SECRET_KEY",
        "SWITCHBOARD_API_KEY",
    } <= secret_names
    assert not env_names & secret_names
    assert not [name for name in env_names if re.search("KEY|SECRET|PASSWORD|DATABASE_URL", name)]


def test_compose_file_matches_the_compose_spec():
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    jsonschema.validators.validator_for(schema)(schema).validate(compose())


def test_compose_stack_drains_nodes_checks_health_and_sets_only_real_settings():
    spec = compose()
    nodes = switchboard_services(spec)
    assert len(nodes) == 2 and {"postgres", "redis", "minio", "proxy"} <= spec["services"].keys()
    for name, service in spec["services"].items():
        one_shot = service.get("restart") == "no"
        assert one_shot or "healthcheck" in service, f"{name} has no healthcheck"
    node_ids = set()
    for name, node in nodes.items():
        env = node["environment"]
        assert set(env) <= SETTING_NAMES, set(env) - SETTING_NAMES
        drain = float(env.get("SWITCHBOARD_DRAIN_GRACE_SECS") or DEFAULT_DRAIN_GRACE)
        assert seconds(node["stop_grace_period"]) > drain, name
        assert "/health" in " ".join(node["healthcheck"]["test"])
        assert node["volumes"][0].endswith(":/data")  # each node its own disk
        node_ids.add(env["SWITCHBOARD_NODE_ID"])
    assert len(node_ids) == len(nodes)
    assert set(spec["services"]["proxy"]["depends_on"]) == set(nodes)


def test_caddy_balances_over_every_node_and_watches_their_health():
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    upstreams = re.search(r"reverse_proxy ([^{]+)\{", caddyfile).group(1).split()
    assert sorted(upstreams) == sorted(f"{name}:8000" for name in switchboard_services(compose()))
    assert re.search(r"health_uri /health\b", caddyfile)
    assert ":8080 {" in caddyfile and any(
        p.endswith(":8080") for p in compose()["services"]["proxy"]["ports"]
    )


def test_caddy_sends_no_new_requests_to_a_draining_node():
    """Caddy's `health_body` matches /health's body as the server sends it when ready, not when draining."""
    expected = (
        re.search(r'health_body "(.+)"', (DEPLOY / "Caddyfile").read_text())
        .group(1)
        .replace('\\"', '"')
    )
    ready, draining = (
        JSONResponse(
            Health(
                status=s, node_id="node-1", live_calls=3, load=0.2, accepting=s == "ok"
            ).model_dump()
        ).body.decode()
        for s in ("ok", "draining")
    )
    assert re.search(expected, ready) and not re.search(expected, draining), (expected, ready)
