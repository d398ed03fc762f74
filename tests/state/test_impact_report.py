"""`depmon impact`: the dependency -> feature map in text, mermaid and dot, down and degraded features."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.commands.impact_report import OutageImpact, impact_map, render_impact
from monitor.config import Config
from tests.helpers import bundled_config, config_from

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def bundled() -> Config:
    return bundled_config()


EVERY_FEATURE = (
    "Authentication and Token Access, Authentication - individual credentials, Claims, Letters, "
    "Direct Deposit Benefits, Disability Rating, Appeals, Profile, Secure Messaging, Appointments, "
    "Immunizations, Push Notifications"
)
SIGN_IN = "Authentication - individual credentials"

# dependency id -> its line of `depmon impact` on the bundled config
TEXT_LINES = {
    "ssoe-oauth": f"SSOe OAuth [ssoe-oauth] -> down: {EVERY_FEATURE}",
    "idme": f"ID.me [idme] -> degrades: {SIGN_IN} (alternatives: MHV, DSLogon)",
    "mhv": f"MHV [mhv] -> down: Secure Messaging; degrades: {SIGN_IN} (alternatives: ID.me, DSLogon)",
    "dslogon": f"DSLogon [dslogon] -> degrades: {SIGN_IN} (alternatives: ID.me, MHV)",
    "va-profile": "VA Profile [va-profile] (needs ssoe-oauth) -> down: Profile",
    "evss": "EVSS [evss] (needs ssoe-oauth) -> down: Claims, Letters, Direct Deposit Benefits, Disability Rating",
    "caseflow": "Caseflow [caseflow] -> down: Appeals",
    "vaos": "VAOS [vaos] (needs ssoe-oauth) -> down: Appointments",
    "lighthouse": "Lighthouse [lighthouse] -> down: Immunizations",
    "vetext": "VEText [vetext] -> down: Push Notifications",
    "vanotify": "VANotify [vanotify] -> down: Push Notifications",
}

# (edge kind, mermaid line, dot line) for a sample of every kind of edge in the bundled graph
EDGES = [
    ("token", "  ssoe_oauth -->|token| evss", '  "ssoe-oauth" -> "evss" [label="token"];'),
    ("requires", "  evss --> claims", '  "evss" -> "claims";'),
    ("requires", "  authentication --> claims", '  "authentication" -> "claims";'),
    ("requires", "  mhv --> secure_messaging", '  "mhv" -> "secure_messaging";'),
    (
        "any_of",
        "  idme -. degrades .-> authentication_credentials",
        '  "idme" -> "authentication-credentials" [label="degrades", style=dashed];',
    ),
    (
        "any_of",
        "  mhv -. degrades .-> authentication_credentials",
        '  "mhv" -> "authentication-credentials" [label="degrades", style=dashed];',
    ),
    (
        "any_of",
        "  dslogon -. degrades .-> authentication_credentials",
        '  "dslogon" -> "authentication-credentials" [label="degrades", style=dashed];',
    ),
]


class TestTextImpact:
    @pytest.mark.parametrize(("dependency", "line"), TEXT_LINES.items(), ids=list(TEXT_LINES))
    def test_line_of_each_bundled_dependency(self, bundled: Config, dependency: str, line: str) -> None:
        """Each dependency's line names the features its outage takes down and those it degrades."""
        lines = render_impact(bundled, "text").splitlines()
        assert lines[list(bundled.dependencies).index(dependency)] == line

    def test_one_line_per_dependency_and_none_says_no_feature(self, bundled: Config) -> None:
        """Every bundled dependency impacts some feature, so no line says `no feature`."""
        lines = render_impact(bundled, "text").splitlines()
        assert len(lines) == len(bundled.dependencies)
        assert not [line for line in lines if line.endswith("no feature")]

    def test_a_dependency_without_features_says_so(self, tmp_path: Path) -> None:
        """A dependency that no feature needs is printed with `no feature`."""
        config = _small_config(tmp_path, features="")
        assert render_impact(config, "text").splitlines()[-1] == "Spare [spare] -> no feature"

    def test_degraded_through_a_degraded_feature_has_no_alternatives(self, tmp_path: Path) -> None:
        """A feature degraded because a feature it requires is degraded is named without alternatives."""
        features = """
  claims: {name: Claims, requires: [sign-in, evss]}
"""
        config = _small_config(tmp_path, features)
        assert impact_map(config)["idme"] == OutageImpact(down=(), degraded={"sign-in": ("mhv",), "claims": ()})
        assert render_impact(config, "text").splitlines()[0] == (
            "ID.me [idme] -> degrades: Sign in (alternatives: MHV), Claims"
        )

    def test_every_alternative_down_is_down(self, tmp_path: Path) -> None:
        """A dependency that the other alternative needs takes the any_of feature down, not degraded."""
        config = _small_config(tmp_path, "", mhv_needs_idme=True)
        assert impact_map(config)["idme"] == OutageImpact(down=("sign-in",), degraded={})


class TestDiagrams:
    @pytest.mark.parametrize(("kind", "mermaid", "dot"), EDGES, ids=[f"{e[0]}:{e[1].strip()}" for e in EDGES])
    def test_edge_in_both_formats(self, bundled: Config, kind: str, mermaid: str, dot: str) -> None:
        """Solid edges take a feature down, dashed `degrades` edges are any_of alternatives, `token` is depends_on."""
        assert mermaid in render_impact(bundled, "mermaid").splitlines()
        assert dot in render_impact(bundled, "dot").splitlines()

    @pytest.mark.parametrize("fmt", ["mermaid", "dot"])
    def test_every_any_of_edge_is_a_degrades_edge(self, bundled: Config, fmt: str) -> None:
        """The diagrams draw one `degrades` edge per any_of alternative and none for a required node."""
        text = render_impact(bundled, fmt)
        any_of = sum(len(feature.any_of) for feature in bundled.features.values())
        assert any_of == 3
        assert text.count("degrades") - text.count("%% ") == any_of

    def test_mermaid_nodes(self, bundled: Config) -> None:
        """Mermaid draws dependencies as boxes and features as stadiums, with their names."""
        lines = render_impact(bundled, "mermaid").splitlines()
        assert lines[0] == "flowchart LR"
        assert '  idme["ID.me"]' in lines
        assert '  authentication_credentials(["Authentication - individual credentials"])' in lines

    def test_dot_nodes(self, bundled: Config) -> None:
        """Dot draws dependencies as boxes and features as ellipses, with their names."""
        lines = render_impact(bundled, "dot").splitlines()
        assert (lines[0], lines[-1]) == ("digraph depmon {", "}")
        assert '  "idme" [label="ID.me", shape=box];' in lines
        assert '  "claims" [label="Claims", shape=ellipse];' in lines


def _small_config(tmp_path: Path, features: str, mhv_needs_idme: bool = False) -> Config:
    """Two credential providers as alternatives for sign-in, EVSS and a spare dependency."""
    probe = "probes: [{name: base, kind: http, url: 'https://example.invalid/'}]"
    mhv_parents = "[idme]" if mhv_needs_idme else "[]"
    return config_from(
        tmp_path,
        f"""
monitor: {{environment: test}}
dependencies:
  idme: {{name: ID.me, {probe}}}
  mhv: {{name: MHV, depends_on: {mhv_parents}, {probe}}}
  evss: {{name: EVSS, {probe}}}
  spare: {{name: Spare, {probe}}}
features:
  sign-in: {{name: Sign in, any_of: [idme, mhv]}}
{features}
""",
    )
