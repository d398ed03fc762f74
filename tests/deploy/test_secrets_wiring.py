"""Every secret of the config reaches depmon in every deploy form (issue 26, SPEC 11.5).

A variable is a secret when the config field it fills is a `SecretStr` (see config_variables.py):
the list is derived from the models and the YAML, so a `${NEW_SECRET}` added to config/ fails
here until the Kubernetes Secret example (which the Deployment takes whole with `envFrom`, in the
base and the replicated overlay alike) and the systemd EnvironmentFile example hold it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.config_variables import (
    config_dir_documents,
    configmap_documents,
    container_variables,
    env_file,
    variables,
)
from tests.deploy.test_k8s_manifests import OBJECTS, SECRET_EXAMPLE
from tests.deploy.test_k8s_replicated import render
from tests.deploy.test_systemd_unit import DIRECTIVES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
ENV_EXAMPLE = ROOT / "deploy" / "systemd" / "depmon.env.example"
ENV_FILE = "/etc/default/depmon"  # the unit's EnvironmentFile, which ENV_EXAMPLE stands for
SECRETS = {SECRET_EXAMPLE["metadata"]["name"]: SECRET_EXAMPLE}
# Not secrets, but values each site must supply, with no default that serves: the PagerDuty user
# `depmon maintenance open/close` write as. Wired with the secrets wherever the config reads them.
SITE_VALUES = frozenset({"PAGERDUTY_FROM_EMAIL"})


def to_wire(documents: Iterable[Mapping[str, Any]]) -> set[str]:
    """The variables a deploy form must provide for these config files: the secrets and the site values."""
    found = variables(documents)
    return found.secret | (found.other & SITE_VALUES)


def _one(objects: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in objects if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def _container(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _one(objects, "Deployment", "depmon")["spec"]["template"]["spec"]["containers"]
    return container


def k8s_provided(objects: Iterable[dict[str, Any]]) -> set[str]:
    """What the depmon container's environment holds, the Secret being the example's keys."""
    return container_variables(_container(objects), SECRETS)


def systemd_provided() -> set[str]:
    """What the unit's environment holds: its Environment= lines and, when it reads it, the env file's."""
    names = {value.partition("=")[0] for value in DIRECTIVES.get(("Service", "Environment"), [])}
    if ENV_FILE in [f.removeprefix("-") for f in DIRECTIVES.get(("Service", "EnvironmentFile"), [])]:
        names |= set(env_file(ENV_EXAMPLE.read_text(encoding="utf-8")))
    return names


def _config_documents(objects: Iterable[dict[str, Any]], *configmaps: str) -> list[Mapping[str, Any]]:
    """config/ (the ConfigMap may be built from it) and the kit's own ConfigMaps' files."""
    documents = config_dir_documents(CONFIG)
    for name in configmaps:
        documents += configmap_documents(_one(objects, "ConfigMap", name))
    return documents


class TestSecretVariables:
    """The derivation: which variables of a config hold secrets."""

    def test_finds_every_secret_of_the_bundled_config(self) -> None:
        """PagerDuty's key and token, SSOe's client, Datadog's keys, and one webhook per Slack channel; no URL,
        host or service id."""
        slack = yaml.safe_load((CONFIG / "slack.yaml").read_text(encoding="utf-8"))["slack"]["webhooks"]
        found = variables(config_dir_documents(CONFIG))
        webhooks = {name for name in found.secret if name.startswith("SLACK_WEBHOOK_")}
        assert len(webhooks) == len(slack) == 10
        assert found.secret - webhooks == {
            "PAGERDUTY_ROUTING_KEY",
            "PAGERDUTY_API_TOKEN",
            "SSOE_CLIENT_ID",
            "SSOE_CLIENT_SECRET",
            "DD_API_KEY",
            "DD_APP_KEY",
        }
        assert {"PAGERDUTY_EVENTS_URL", "SSOE_TOKEN_URL", "SSOE_TLS_HOST", "PD_SERVICE_MHV"} <= found.other
        assert found.other >= SITE_VALUES

    @pytest.mark.needs_tool
    def test_finds_the_state_url_of_the_replicated_overlay(self, kubectl: str) -> None:
        """monitor.state_url is a secret (it may carry a password); monitor.replica is not."""
        found = variables(configmap_documents(_one(render(kubectl), "ConfigMap", "depmon-replication")))
        assert found.secret == {"DEPMON_STATE_URL"}
        assert found.other == {"DEPMON_REPLICA"}

    def test_a_new_secret_in_config_is_not_wired(self, tmp_path: Path) -> None:
        """A new `${VAR}` in a secret field of config/ (a webhook, an oauth2 probe's secret) is missing everywhere."""
        config = tmp_path / "config"
        shutil.copytree(CONFIG, config)
        with (config / "slack.yaml").open("a", encoding="utf-8") as slack:
            slack.write('    "#new-channel": ${SLACK_WEBHOOK_NEW_CHANNEL:-}\n')
        (config / "extra.yaml").write_text(
            "dependencies:\n"
            "  new-idp:\n"
            "    name: A new identity provider\n"
            "    probes:\n"
            "      - name: token\n"
            "        kind: oauth2\n"
            "        token_url: ${NEW_IDP_TOKEN_URL:-https://idp.example/token}\n"
            "        client_id: new-idp-client\n"
            "        client_secret: ${NEW_IDP_CLIENT_SECRET}\n",
            encoding="utf-8",
        )
        wanted = to_wire(config_dir_documents(config))
        new = {"SLACK_WEBHOOK_NEW_CHANNEL", "NEW_IDP_CLIENT_SECRET"}
        assert wanted - k8s_provided(OBJECTS) == new
        assert wanted - systemd_provided() == new


class TestEveryFormWiresEverySecret:
    """Each deploy form gives depmon every secret variable its config reads."""

    def test_kubernetes(self) -> None:
        """deploy/k8s: config/ or the example ConfigMap, from the depmon-secrets Secret."""
        wanted = to_wire(_config_documents(OBJECTS, "depmon-config"))
        assert wanted - k8s_provided(OBJECTS) == set()

    @pytest.mark.needs_tool
    def test_kubernetes_replicated(self, kubectl: str) -> None:
        """deploy/k8s-replicated as rendered: config/, both ConfigMaps (DEPMON_STATE_URL), from the same Secret."""
        objects = render(kubectl)
        wanted = to_wire(_config_documents(objects, "depmon-config", "depmon-replication"))
        assert "DEPMON_STATE_URL" in wanted
        assert wanted - k8s_provided(objects) == set()

    def test_systemd(self) -> None:
        """deploy/systemd: config/ in /etc/depmon, from the EnvironmentFile depmon.env.example stands for."""
        assert to_wire(config_dir_documents(CONFIG)) - systemd_provided() == set()

    def test_systemd_needs_its_environment_file(self) -> None:
        """The unit reads /etc/default/depmon and fails to start without it (no "-": no paging without keys)."""
        assert DIRECTIVES[("Service", "EnvironmentFile")] == [ENV_FILE]

    def test_env_file_example_holds_only_placeholders(self) -> None:
        """Every value of depmon.env.example is an obvious placeholder, which depmon refuses until replaced."""
        values = env_file(ENV_EXAMPLE.read_text(encoding="utf-8"))
        assert values
        assert all(value.startswith("REPLACE-ME") for value in values.values())
