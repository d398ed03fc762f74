"""The replicated Kubernetes variant (deploy/k8s-replicated/, SPEC 10.6, issue 14).

The variant is a kustomize overlay of deploy/k8s, so its objects exist only once rendered: the
tests render it with `kubectl kustomize` (skipped, or failed under DEPMON_REQUIRE_TOOLS=1, without
kubectl) and validate what comes out the same way as the single-replica kit: built-in kinds
strictly against the Kubernetes schemas, the operator kinds structurally.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy.config_variables import container_variables
from tests.deploy.test_k8s_manifests import KUBERNETES_VERSIONS, OBJECTS, SECRET_EXAMPLE, validate, validate_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "deploy" / "k8s-replicated"
RULES_FILE = ROOT / "deploy" / "prometheus" / "rules" / "depmon.rules.yml"
REPLICATION_CONFIGMAP = "depmon-replication"
POSTGRES_PORT = 5432

# Every test here renders the overlay with kubectl. Its one Secret is the base's depmon-secrets
# (../k8s/secret.example.yaml), which holds DEPMON_STATE_URL too.


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((OVERLAY / "kustomization.yaml").read_text(encoding="utf-8"))


@functools.cache
def render(kubectl: str) -> tuple[dict[str, Any], ...]:
    """The overlay's objects as `kubectl kustomize` renders them (once per session: do not alter them)."""
    result = subprocess.run(
        [kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.fixture
def rendered(kubectl: str) -> list[dict[str, Any]]:
    """The overlay as `kubectl kustomize deploy/k8s-replicated` renders it (rendered once per session)."""
    return yaml.safe_load(yaml.safe_dump(list(render(kubectl))))  # a copy: a test may not alter the next one's


def _one(objects: list[dict[str, Any]], kind: str, name: str = "depmon") -> dict[str, Any]:
    (found,) = [doc for doc in objects if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def _pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = _one(objects, "Deployment")["spec"]["template"]
    return pod


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _pod(objects)["spec"]["containers"]
    return container


def _env(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in _container(objects)["env"]}


def _replication_config(objects: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The replicas.yaml text of depmon-replication, and its `monitor:` section."""
    text = _one(objects, "ConfigMap", REPLICATION_CONFIGMAP)["data"]["replicas.yaml"]
    return text, yaml.safe_load(text)["monitor"]


def _quorum(objects: list[dict[str, Any]]) -> int:
    quorum = _replication_config(objects)[1]["quorum"]
    assert isinstance(quorum, int)
    return quorum


@pytest.mark.needs_tool
class TestRendering:
    """What `kubectl kustomize deploy/k8s-replicated` gives."""

    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_every_object_is_valid(
        self, rendered: list[dict[str, Any]], kubernetes_validate: ModuleType, version: str
    ) -> None:
        """Every rendered object validates: built-in kinds strictly (Kubernetes 1.30 and 1.37), CRDs structurally."""
        for doc in rendered:
            validate(kubernetes_validate, doc, version)

    def test_the_base_minus_the_volume_claim_plus_the_replication_config(self, rendered: list[dict[str, Any]]) -> None:
        """The single-replica kit's objects without its PersistentVolumeClaim, plus the depmon-replication ConfigMap."""
        base = sorted(
            (doc["kind"], doc["metadata"]["name"]) for doc in OBJECTS if doc["kind"] != "PersistentVolumeClaim"
        )
        got = sorted((doc["kind"], doc["metadata"]["name"]) for doc in rendered)
        assert got == sorted([*base, ("ConfigMap", REPLICATION_CONFIGMAP)])

    def test_labels_every_object_part_of_the_app(self, rendered: list[dict[str, Any]]) -> None:
        """Every object, the overlay's own included, carries app.kubernetes.io/part-of."""
        for doc in rendered:
            assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "va-mobile-app", doc["metadata"]["name"]

    def test_every_file_of_the_overlay_is_used(self) -> None:
        """Each YAML file in deploy/k8s-replicated is a resource or a patch of the overlay (no Secret of its own)."""
        kustomization = _kustomization()
        used = {*kustomization["resources"], *(p["path"] for p in kustomization["patches"] if "path" in p)}
        on_disk = {p.name for p in OVERLAY.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert on_disk - used == set()
        assert "../k8s" in kustomization["resources"]

    def test_alert_rules_are_the_base_ones(self, rendered: list[dict[str, Any]]) -> None:
        """The PrometheusRule is the rules file's, unchanged: the replica alerts are in it for both variants."""
        rules = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
        assert _one(rendered, "PrometheusRule")["spec"]["groups"] == rules["groups"]


@pytest.mark.needs_tool
class TestReplicas:
    """Three replicas, spread across zones, never drained below the quorum."""

    def test_three_replicas_rolled_without_losing_one(self, rendered: list[dict[str, Any]]) -> None:
        """3 replicas, RollingUpdate with maxUnavailable 0: a rollout never runs fewer than three."""
        spec = _one(rendered, "Deployment")["spec"]
        assert spec["replicas"] == 3
        assert spec["strategy"]["type"] == "RollingUpdate"
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    def test_spread_across_zones(self, rendered: list[dict[str, Any]]) -> None:
        """A hard topology spread over topology.kubernetes.io/zone, maxSkew 1, that selects depmon's own pods."""
        pod = _pod(rendered)
        (zone,) = [
            c for c in pod["spec"]["topologySpreadConstraints"] if c["topologyKey"] == "topology.kubernetes.io/zone"
        ]
        assert zone["maxSkew"] == 1
        assert zone["whenUnsatisfiable"] == "DoNotSchedule"
        assert zone["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    def test_disruption_budget_keeps_the_quorum(self, rendered: list[dict[str, Any]]) -> None:
        """The PDB selects the pods and keeps minAvailable = quorum, which still lets a drain take one replica."""
        pdb = _one(rendered, "PodDisruptionBudget")["spec"]
        assert pdb["selector"]["matchLabels"].items() <= _pod(rendered)["metadata"]["labels"].items()
        assert "maxUnavailable" not in pdb
        assert pdb["minAvailable"] == _quorum(rendered)
        assert pdb["minAvailable"] < _one(rendered, "Deployment")["spec"]["replicas"]

    def test_quorum_tolerates_one_vantage_point_each_way(self, rendered: list[dict[str, Any]]) -> None:
        """Quorum 2 of 3: one replica alone cannot page, and one replica down cannot prevent a page."""
        replicas = _one(rendered, "Deployment")["spec"]["replicas"]
        assert 2 <= _quorum(rendered) <= replicas - 1

    @pytest.mark.parametrize("alert", ["DependencySeenDownBelowQuorum", "DependencyDown"])
    def test_quorum_is_the_one_the_alerts_assume(self, rendered: list[dict[str, Any]], alert: str) -> None:
        """The `down_replicas ... < N` of the alerts is the replicated config's quorum (Prometheus cannot read it)."""
        groups = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]
        (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == alert]
        (threshold,) = re.findall(r"\(depmon_dependency_down_replicas\)(?:\s*>\s*0)?\s*<\s*(\d+)", rule["expr"])
        assert int(threshold) == _quorum(rendered)


@pytest.mark.needs_tool
class TestState:
    """The state is PostgreSQL, reached with a URL from a Secret; no SQLite file, no volume claim."""

    def test_state_url_comes_from_a_secret(self, rendered: list[dict[str, Any]]) -> None:
        """monitor.state_url is ${DEPMON_STATE_URL}, which the Deployment takes from depmon-secrets with the rest."""
        assert _replication_config(rendered)[1]["state_url"] == "${DEPMON_STATE_URL}"
        assert "DEPMON_STATE_URL" not in _env(rendered)
        assert _container(rendered)["envFrom"] == [{"secretRef": {"name": SECRET_EXAMPLE["metadata"]["name"]}}]
        assert "DEPMON_STATE_URL" in SECRET_EXAMPLE["stringData"]

    def test_the_secret_is_referenced_not_embedded(self, rendered: list[dict[str, Any]]) -> None:
        """No Secret is rendered, the example is no resource, and no rendered object holds a database URL."""
        assert "Secret" not in {doc["kind"] for doc in rendered}
        assert "postgresql://" not in yaml.safe_dump_all(rendered)

    def test_no_sqlite_state(self, rendered: list[dict[str, Any]]) -> None:
        """No --state argument, no state mount and no volume claim: the replicas share nothing but the database."""
        container, pod = _container(rendered), _pod(rendered)["spec"]
        assert "--state" not in container["args"]
        assert container["args"][container["args"].index("--listen") + 1] == "0.0.0.0:9464"
        assert "/var/lib/depmon" not in {m["mountPath"] for m in container["volumeMounts"]}
        assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]

    def test_replica_is_the_pod_name(self, rendered: list[dict[str, Any]]) -> None:
        """monitor.replica is ${DEPMON_REPLICA}, the pod's name by the downward API."""
        assert _replication_config(rendered)[1]["replica"] == "${DEPMON_REPLICA}"
        assert _env(rendered)["DEPMON_REPLICA"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}

    def test_config_directory_holds_both_config_maps(self, rendered: list[dict[str, Any]]) -> None:
        """/etc/depmon projects depmon-config and depmon-replication, both rendered, with no file name in common."""
        pod = _pod(rendered)["spec"]
        mounts = {m["mountPath"]: m for m in _container(rendered)["volumeMounts"]}
        volume = {v["name"]: v for v in pod["volumes"]}[mounts["/etc/depmon"]["name"]]
        assert set(volume) == {"name", "projected"}
        names = [source["configMap"]["name"] for source in volume["projected"]["sources"]]
        assert names == ["depmon-config", REPLICATION_CONFIGMAP]
        keys = [set(_one(rendered, "ConfigMap", name)["data"]) for name in names]
        assert not keys[0] & keys[1]

    def test_every_required_variable_is_provided(self, rendered: list[dict[str, Any]]) -> None:
        """Each ${VAR} without a default in either ConfigMap is set by the Deployment's environment."""
        maps = [_one(rendered, "ConfigMap", name) for name in ("depmon-config", REPLICATION_CONFIGMAP)]
        text = "".join(value for configmap in maps for value in configmap["data"].values())
        required = {m.group(1) for m in re.finditer(r"\$\{([A-Za-z_]\w*)\}", text)}
        provided = container_variables(_container(rendered), {SECRET_EXAMPLE["metadata"]["name"]: SECRET_EXAMPLE})
        assert {"DEPMON_STATE_URL", "DEPMON_REPLICA"} <= required <= provided

    def test_config_is_valid_for_depmon(self, rendered: list[dict[str, Any]], tmp_path: Path) -> None:
        """`depmon validate` accepts depmon-config plus replicas.yaml, merged as the pod sees them."""
        files = {
            "depmon.yaml": _one(rendered, "ConfigMap", "depmon-config")["data"]["depmon.yaml"],
            "replicas.yaml": _replication_config(rendered)[0],
        }
        env = {
            "PAGERDUTY_ROUTING_KEY": "0" * 32,
            "PAGERDUTY_API_TOKEN": "token",
            "SSOE_CLIENT_ID": "client",
            "SSOE_CLIENT_SECRET": "secret",
            "DEPMON_STATE_URL": "postgresql://depmon:password@postgres.example:5432/depmon",
            "DEPMON_REPLICA": "depmon-7d9c5b6f4-x2k8q",
        }
        result = validate_config(files, env, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.needs_tool
class TestNetwork:
    """Prometheus scrapes every replica; every replica reaches PostgreSQL."""

    def test_every_replica_is_scraped(self, rendered: list[dict[str, Any]]) -> None:
        """The Service selects all the pods (one endpoint each) and the ServiceMonitor scrapes that Service."""
        service, monitor = _one(rendered, "Service"), _one(rendered, "ServiceMonitor")
        assert service["spec"]["selector"].items() <= _pod(rendered)["metadata"]["labels"].items()
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()

    def test_postgres_egress_to_pods(self, rendered: list[dict[str, Any]]) -> None:
        """An egress rule admits TCP 5432 to pods (an in-cluster database, which ipBlock may not match)."""
        egress = _one(rendered, "NetworkPolicy")["spec"]["egress"]
        postgres = [
            r for r in egress if {(p["protocol"], p["port"]) for p in r.get("ports", [])} == {("TCP", POSTGRES_PORT)}
        ]
        assert len(postgres) == 1
        assert all("podSelector" in peer for peer in postgres[0]["to"])

    def test_keeps_the_base_policy(self, rendered: list[dict[str, Any]]) -> None:
        """The base's ingress (Prometheus only) and egress rules are kept: the database rule is added to them."""
        (base,) = [doc for doc in OBJECTS if doc["kind"] == "NetworkPolicy"]
        policy = _one(rendered, "NetworkPolicy")["spec"]
        assert policy["ingress"] == base["spec"]["ingress"]
        assert policy["egress"][: len(base["spec"]["egress"])] == base["spec"]["egress"]
        assert len(policy["egress"]) == len(base["spec"]["egress"]) + 1
