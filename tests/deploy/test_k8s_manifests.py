"""The Kubernetes manifests (deploy/k8s/).

Built-in kinds are validated against the Kubernetes OpenAPI-derived JSON schemas that the
`kubernetes-validate` package ships (strict: unknown fields are errors). The Prometheus Operator
kinds (ServiceMonitor, PrometheusRule) are validated structurally against the small schemas
below, written from the operator's v1 API: required fields, types, durations and no unknown keys
at the levels these manifests use.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.config_variables import container_variables

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
RULES_FILE = ROOT / "deploy" / "prometheus" / "rules" / "depmon.rules.yml"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))


MANIFEST_FILES = [K8S / name for name in _kustomization()["resources"]]
OBJECTS = [doc for path in MANIFEST_FILES for doc in _documents(path)]
# Kept as an example, outside the kustomization: re-applying the kit must not overwrite the real Secret.
SECRET_EXAMPLE_FILE = K8S / "secret.example.yaml"
(SECRET_EXAMPLE,) = _documents(SECRET_EXAMPLE_FILE)
OBJECT_IDS = [f"{doc['kind']}/{doc['metadata']['name']}" for doc in OBJECTS]


def _one(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in OBJECTS if doc["kind"] == kind]
    return found


def _container() -> dict[str, Any]:
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


# ---- structural schemas of the Prometheus Operator kinds (monitoring.coreos.com/v1) ----------

_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
}
_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "jobLabel": {"type": "string"},
                    "targetLabels": {"type": "array", "items": {"type": "string"}},
                    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                    "sampleLimit": {"type": "integer", "minimum": 0},
                    "selector": _LABEL_SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array"}},
                        "additionalProperties": False,
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "properties": {
                                "port": {"type": "string"},
                                "targetPort": {"type": ["string", "integer"]},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "honorLabels": {"type": "boolean"},
                                "relabelings": {"type": "array"},
                                "metricRelabelings": {"type": "array"},
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "limit": {"type": "integer"},
                                "partial_response_strategy": {"type": "string"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"type": ["string", "integer"]},
                                            "for": _DURATION,
                                            "keep_firing_for": _DURATION,
                                            "labels": _STRING_MAP,
                                            "annotations": _STRING_MAP,
                                        },
                                        "additionalProperties": False,
                                    },
                                },
                            },
                            "additionalProperties": False,
                        },
                    }
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
}


def validate(kubernetes_validate: ModuleType, doc: dict[str, Any], version: str) -> None:
    """Validate one object: a built-in kind strictly against Kubernetes `version`, a CRD structurally."""
    if doc["kind"] in CRD_SCHEMAS:
        jsonschema.Draft202012Validator(CRD_SCHEMAS[doc["kind"]]).validate(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


class TestManifestSchemas:
    """Every object of the kustomization against its schema."""

    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    @pytest.mark.parametrize("doc", [*OBJECTS, SECRET_EXAMPLE], ids=[*OBJECT_IDS, "Secret/example"])
    def test_object_is_valid(self, kubernetes_validate: ModuleType, doc: dict[str, Any], version: str) -> None:
        """The object validates (built-in kinds strictly against Kubernetes 1.30 and 1.37, CRDs structurally)."""
        validate(kubernetes_validate, doc, version)

    def test_strict_validation_rejects_an_unknown_field(self, kubernetes_validate: ModuleType) -> None:
        """A misspelt field in the Deployment fails strict validation, so the check can fail."""
        broken = yaml.safe_load(yaml.safe_dump(_one("Deployment")))
        broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)

    @pytest.mark.parametrize("kind", sorted(CRD_KINDS))
    def test_structural_schema_rejects_an_unknown_field(self, kind: str) -> None:
        """A misspelt field in a CRD object fails its structural schema."""
        broken = yaml.safe_load(yaml.safe_dump(_one(kind)))
        broken["spec"]["selectr" if kind == "ServiceMonitor" else "grups"] = {}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(CRD_SCHEMAS[kind]).validate(broken)

    def test_structural_schema_rejects_a_bad_duration(self) -> None:
        """An alert `for` that is not a Prometheus duration fails the PrometheusRule schema."""
        broken = yaml.safe_load(yaml.safe_dump(_one("PrometheusRule")))
        broken["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(CRD_SCHEMAS["PrometheusRule"]).validate(broken)


class TestKustomization:
    """deploy/k8s/kustomization.yaml."""

    def test_lists_every_manifest_but_the_example_secret(self) -> None:
        """Every YAML manifest in deploy/k8s but the example Secret is a resource of the kustomization."""
        on_disk = {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert set(_kustomization()["resources"]) == on_disk - {SECRET_EXAMPLE_FILE.name}

    def test_does_not_apply_the_example_secret(self) -> None:
        """No Secret is applied by the kit: re-applying it cannot overwrite depmon-secrets with placeholders."""
        assert SECRET_EXAMPLE_FILE.name not in _kustomization()["resources"]
        assert "Secret" not in {doc["kind"] for doc in OBJECTS}
        assert SECRET_EXAMPLE["kind"] == "Secret"

    def test_has_one_object_of_each_kind(self) -> None:
        """The kit is one each of ConfigMap, PVC, Deployment, Service, NetworkPolicy, PDB and the two operator kinds."""
        assert sorted(doc["kind"] for doc in OBJECTS) == sorted(
            [
                "ConfigMap",
                "PersistentVolumeClaim",
                "Deployment",
                "Service",
                "NetworkPolicy",
                "PodDisruptionBudget",
                "ServiceMonitor",
                "PrometheusRule",
            ]
        )

    @pytest.mark.needs_tool
    def test_kubectl_kustomize_renders_valid_objects(self, kubectl: str, kubernetes_validate: ModuleType) -> None:
        """`kubectl kustomize` renders the kit, and every rendered object validates."""
        result = subprocess.run(
            [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr
        rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        assert len(rendered) == len(OBJECTS)
        assert "Secret" not in {doc["kind"] for doc in rendered}
        for doc in rendered:
            assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "va-mobile-app"
            validate(kubernetes_validate, doc, KUBERNETES_VERSIONS[-1])


class TestDeployment:
    """deploy/k8s/deployment.yaml."""

    def test_runs_one_replica_replaced_not_rolled(self) -> None:
        """One replica, and Recreate: two pods never write the same state or page twice."""
        spec = _one("Deployment")["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"]["type"] == "Recreate"

    def test_runs_depmon_with_listen_and_state(self) -> None:
        """The container's arguments listen on 0.0.0.0:9464 and keep state on the state volume."""
        args = _container()["args"]
        assert args[args.index("--listen") + 1] == "0.0.0.0:9464"
        assert args[args.index("--state") + 1] == "/var/lib/depmon/depmon.sqlite3"
        assert {"name": "http", "containerPort": 9464, "protocol": "TCP"} in _container()["ports"]

    def test_probes_use_healthz_and_readyz(self) -> None:
        """Liveness asks /healthz and readiness /readyz, on the 9464 port."""
        container = _container()
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            http_get = container[probe]["httpGet"]
            assert http_get["path"] == path
            assert ports.get(http_get["port"], http_get["port"]) == 9464

    def test_is_locked_down(self) -> None:
        """Non-root, read-only root filesystem, no privilege escalation, every capability dropped."""
        pod = _one("Deployment")["spec"]["template"]["spec"]
        context = _container()["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert pod["automountServiceAccountToken"] is False

    def test_has_requests_and_limits(self) -> None:
        """CPU and memory are both requested and limited."""
        resources = _container()["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"])
        assert {"cpu", "memory"} <= set(resources["limits"])

    def test_secrets_come_from_depmon_secrets(self) -> None:
        """The container takes the depmon-secrets Secret whole (`envFrom`), and no secret one key at a time."""
        container = _container()
        assert container["envFrom"] == [{"secretRef": {"name": SECRET_EXAMPLE["metadata"]["name"]}}]
        assert SECRET_EXAMPLE["metadata"]["name"] == "depmon-secrets"
        assert not [item for item in container["env"] if "secretKeyRef" in item.get("valueFrom", {})]

    def test_config_and_state_volumes(self) -> None:
        """depmon-config is mounted read-only at DEPMON_CONFIG=/etc/depmon and the state claim at /var/lib/depmon."""
        pod = _one("Deployment")["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in _container()["volumeMounts"]}
        assert _env(_container())["DEPMON_CONFIG"]["value"] == "/etc/depmon"
        config = volumes[mounts["/etc/depmon"]["name"]]
        assert config["configMap"]["name"] == _one("ConfigMap")["metadata"]["name"] == "depmon-config"
        assert mounts["/etc/depmon"]["readOnly"] is True
        state = volumes[mounts["/var/lib/depmon"]["name"]]
        assert state["persistentVolumeClaim"]["claimName"] == _one("PersistentVolumeClaim")["metadata"]["name"]
        assert "/tmp" in mounts, "a writable /tmp under a read-only root filesystem"


class TestWiring:
    """The objects refer to each other correctly."""

    def test_service_selects_the_pods_on_the_http_port(self) -> None:
        """The Service selects the Deployment's pods and targets the container's http port."""
        service = _one("Service")
        pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        (port,) = service["spec"]["ports"]
        assert port["targetPort"] in {p["name"] for p in _container()["ports"]}
        assert port["port"] == 9464

    def test_service_monitor_scrapes_the_service_as_job_depmon(self) -> None:
        """The ServiceMonitor selects the Service and its port; the Service name `depmon` is the rules' job."""
        service, monitor = _one("Service"), _one("ServiceMonitor")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
        assert "jobLabel" not in monitor["spec"]  # job = the Service's name
        assert f'job="{service["metadata"]["name"]}"' in RULES_FILE.read_text(encoding="utf-8")

    def test_disruption_budget_covers_the_pods(self) -> None:
        """The PodDisruptionBudget selects the Deployment's pods."""
        selector = _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
        pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()


class TestNetworkPolicy:
    """deploy/k8s/networkpolicy.yaml: only Prometheus reaches depmon's port; depmon reaches out."""

    def test_selects_the_pods_for_both_directions(self) -> None:
        """The policy selects the Deployment's pods and governs their ingress and egress."""
        spec = _one("NetworkPolicy")["spec"]
        pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]

    def test_only_prometheus_pods_in_the_monitoring_namespace_on_the_http_port(self) -> None:
        """One ingress rule, one peer with both selectors (AND, not OR), on the container's http port only."""
        (rule,) = _one("NetworkPolicy")["spec"]["ingress"]
        (peer,) = rule["from"]
        assert peer == {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
        (port,) = rule["ports"]
        assert port["protocol"] == "TCP"
        assert port["port"] in {p["name"] for p in _container()["ports"]}

    def test_egress_reaches_dns_and_anywhere_but_instance_metadata(self) -> None:
        """DNS is open, any other address (upstreams, PagerDuty) on any port, except the metadata endpoints."""
        egress = _one("NetworkPolicy")["spec"]["egress"]
        dns = [rule for rule in egress if {p["port"] for p in rule.get("ports", [])} == {53}]
        assert dns
        assert {p["protocol"] for p in dns[0]["ports"]} == {"UDP", "TCP"}
        anywhere = [rule for rule in egress if "ports" not in rule]
        assert len(anywhere) == 1
        blocks = {peer["ipBlock"]["cidr"]: peer["ipBlock"].get("except", []) for peer in anywhere[0]["to"]}
        assert blocks == {"0.0.0.0/0": ["169.254.169.254/32"], "::/0": ["fd00:ec2::254/128"]}


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_prometheusrule", K8S / "gen_prometheusrule.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestPrometheusRuleSync:
    """deploy/k8s/prometheusrule.yaml against deploy/prometheus/rules/depmon.rules.yml."""

    def test_generator_check_passes(self) -> None:
        """`gen_prometheusrule.py --check` finds the committed PrometheusRule up to date."""
        result = subprocess.run(
            [sys.executable, str(K8S / "gen_prometheusrule.py"), "--check"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_carries_the_same_rule_groups(self) -> None:
        """The PrometheusRule's spec.groups equal the rules file's groups."""
        rules = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
        assert _one("PrometheusRule")["spec"]["groups"] == rules["groups"]

    def test_render_follows_a_changed_rules_file(self) -> None:
        """Rendering an edited rules file gives a different PrometheusRule, so --check would catch drift."""
        generator = _generator()
        text = RULES_FILE.read_text(encoding="utf-8")
        assert generator.render(text) == (K8S / "prometheusrule.yaml").read_text(encoding="utf-8")
        assert generator.render(text.replace("for: 5m", "for: 6m")) != generator.render(text)


def validate_config(files: dict[str, str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`depmon validate` on a config directory of `files` (name -> text), under `env` alone."""
    pytest.importorskip("monitor.commands.cli")
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PAGERDUTY_", "SSOE_", "PD_SERVICE_", "DEPMON_"))}
    return subprocess.run(
        # The CLI the console script runs (pyproject: depmon = monitor.entry:main, which calls
        # monitor.commands.cli.main).
        [
            sys.executable,
            "-c",
            "import sys; from monitor.commands.cli import main; sys.exit(main())",
            "validate",
            "--config",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, **env},
        cwd=tmp_path,
    )


class TestConfigMapExample:
    """deploy/k8s/configmap.example.yaml and the Secret example it draws on."""

    def test_config_is_valid_for_depmon(self, tmp_path: Path) -> None:
        """`depmon validate` accepts the example config once the Secret's variables hold well-formed values."""
        env = {
            "PAGERDUTY_ROUTING_KEY": "0" * 32,
            "PAGERDUTY_API_TOKEN": "token",
            "SSOE_CLIENT_ID": "client",
            "SSOE_CLIENT_SECRET": "secret",
        }
        result = validate_config(_one("ConfigMap")["data"], env, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_placeholder_routing_key_is_refused(self, tmp_path: Path) -> None:
        """With the Secret example's placeholders depmon refuses the config, so an unfilled Secret fails loudly."""
        env = dict(SECRET_EXAMPLE["stringData"])
        result = validate_config(_one("ConfigMap")["data"], env, tmp_path)
        assert result.returncode == 2
        assert "routing_key" in result.stdout + result.stderr

    def test_every_required_variable_is_provided(self) -> None:
        """Each ${VAR} without a default in the config is set by the Deployment's environment."""
        config = _one("ConfigMap")["data"]["depmon.yaml"]
        required = {m.group(1) for m in re.finditer(r"\$\{([A-Za-z_]\w*)\}", config)}
        assert required, "expected the SSOe credentials to be required"
        assert required <= container_variables(_container(), {SECRET_EXAMPLE["metadata"]["name"]: SECRET_EXAMPLE})

    def test_secret_example_holds_only_placeholders(self) -> None:
        """Every value of the Secret example is an obvious placeholder."""
        assert all(value.startswith("REPLACE-ME") for value in SECRET_EXAMPLE["stringData"].values())
