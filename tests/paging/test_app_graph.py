"""The app's own map (SPEC 11.1): vets-api's ServiceGraph as data, imported from a controller file,
served by `/maintenance_windows` as vets-api serves it, carried on pages, and compared (drift)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.commands.app_graph import read_app_services, read_controller, run_diff, run_import
from monitor.commands.cli import main
from monitor.commands.maintenance import banner_sentence
from monitor.config import Config, ConfigError, bundled_config_path, load_config
from monitor.maintenance.app_graph import (
    APP_DOWNTIME_SERVICES,
    app_banners,
    app_banners_of,
    app_graph_status,
    banner_drift,
    config_drift,
    edge_drift,
    leaf_drift,
    name_drift,
)
from monitor.maintenance.app_view import app_maintenance_windows
from monitor.maintenance.records import MaintenanceWindow
from monitor.metrics import Metrics
from monitor.paging.decisions import Action, Decision
from monitor.paging.event_content import EventContext, build_event
from monitor.state.impact import FeatureHealth, FeatureState

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures" / "vets_api"
ONE_GRAPH = FIXTURES / "one_graph_controller.rb"
VARIANTS = FIXTURES / "variants_controller.rb"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def config_of(edges: list[list[str]], dependencies: dict[str, Any], features: dict[str, Any] | None = None) -> Config:
    """A config of `dependencies` (id -> extra keys), `features` and an app_graph of `edges`."""
    document: dict[str, Any] = {
        "monitor": {"environment": "test"},
        "dependencies": {
            dep: {"name": dep.upper(), "probes": [{"name": "tcp", "kind": "tcp", "host": "h.test", "port": 1}], **extra}
            for dep, extra in dependencies.items()
        },
        "features": features or {},
        "app_graph": {"source": "test", "edges": edges},
    }
    return Config.model_validate(document)


def written(tmp_path: Path, text: str, name: str = "controller.rb") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bundled() -> Config:
    return load_config(bundled_config_path(), environ={})


class TestImport:
    def test_the_one_graph_form_gives_its_edges_and_skips_a_one_symbol_entry(self) -> None:
        """`ServiceGraph.new(%i[a b], ...)` gives its edges in order; `%i[ x]` is skipped with a warning on its line."""
        graphs = read_controller(ONE_GRAPH)
        assert graphs.variants == {
            "SERVICE_GRAPH": [
                ("bgs", "caseflow"),
                ("caseflow", "appeals"),
                ("evss", "claims"),
                ("mhv_platform", "mhv_sm"),
                ("mhv_sm", "secure_messaging"),
            ]
        }
        assert graphs.warnings == [f"{ONE_GRAPH}:12: warning: skipped %i[ immunizations]: one symbol is not an edge"]

    def test_the_base_edges_form_gives_each_variant_the_base_edges_plus_its_own(self) -> None:
        """`BASE_EDGES = [...]` spread into two `ServiceGraph.new(*BASE_EDGES, ...)` gives two variants."""
        graphs = read_controller(VARIANTS)
        base = [
            ("bgs", "caseflow"),
            ("caseflow", "appeals"),
            ("bgs", "lighthouse_benefits_claims"),
            ("lighthouse_benefits_claims", "claims"),
        ]
        assert graphs.variants == {
            "DIRECT_GRAPH": [*base, ("vbms", "efolder")],
            "VIA_LIGHTHOUSE_GRAPH": [
                *base,
                ("vbms", "lighthouse_benefits_documents"),
                ("lighthouse_benefits_documents", "efolder"),
            ],
        }
        assert graphs.warnings == []

    @pytest.mark.parametrize(
        ("variant", "last_edge"),
        [(None, ["vbms", "efolder"]), ("VIA_LIGHTHOUSE_GRAPH", ["lighthouse_benefits_documents", "efolder"])],
    )
    def test_the_printed_block_is_a_valid_app_graph_of_the_variant(
        self, tmp_path: Path, variant: str | None, last_edge: list[str]
    ) -> None:
        """The printed YAML loads as a config's `app_graph` (the first variant by default), every variant named."""
        out, err = io.StringIO(), io.StringIO()
        assert run_import(VARIANTS, variant, out, err) == 0
        assert "# variants: DIRECT_GRAPH" in out.getvalue()
        assert "VIA_LIGHTHOUSE_GRAPH" in out.getvalue()
        block = yaml.safe_load(out.getvalue())
        assert block["app_graph"]["edges"][-1] == last_edge
        config = config_of(block["app_graph"]["edges"], {"caseflow": {"vets_api": ["caseflow"]}})
        assert config.app_graph is not None
        assert [list(e) for e in config.app_graph.edges] == block["app_graph"]["edges"]

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("G = ServiceGraph.new(\n  %i[a b],\n  %i[a b c]\n)\n", "controller.rb:3: cannot read %i[a b c]"),
            ("G = ServiceGraph.new(\n  [:a, :b]\n)\n", "controller.rb:2: cannot read '[:a, :b]'"),
            ("G = ServiceGraph.new(*MISSING)\n", "controller.rb:1: *MISSING is not an edge array defined above"),
            ("G = ServiceGraph.new(\n  %i[a b],\n", "controller.rb:1: G is never closed"),
            ("class Nothing\nend\n", "controller.rb:1: no ServiceGraph edges found"),
            ("G = ServiceGraph.new(\n  %i[ lonely]\n)\n", "controller.rb:1: no ServiceGraph edges found"),
        ],
    )
    def test_bad_input_is_file_line_message_and_exit_2(self, tmp_path: Path, text: str, message: str) -> None:
        """An entry that cannot be read, or no edges at all, is `FILE:LINE: message` and exit 2, nothing printed."""
        out, err = io.StringIO(), io.StringIO()
        assert run_import(written(tmp_path, text), None, out, err) == 2
        assert message in err.getvalue()
        assert out.getvalue() == ""

    def test_an_unknown_variant_is_exit_2_naming_the_known_ones(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`--variant` naming no graph of the file is exit 2, listing the variants it defines."""
        assert main(["app-graph", "import", str(VARIANTS), "--variant", "NOPE"]) == 2
        assert (
            "unknown variant 'NOPE' (this file defines: DIRECT_GRAPH, VIA_LIGHTHOUSE_GRAPH)" in capsys.readouterr().err
        )

    def test_an_array_of_something_else_is_not_read_as_edges(self) -> None:
        """`RETRY_CODES = [502, 503]` in the controller is no edge array and no error."""
        assert "RETRY_CODES" not in read_controller(VARIANTS).variants

    def test_the_app_services_are_read_from_errors_ts(self) -> None:
        """va-mobile-app's `DowntimeFeatureTypeConstants` gives the services the app keeps."""
        assert read_app_services(FIXTURES / "Errors.ts") == ["claims", "appeals", "efolder"]


class TestConfig:
    def test_a_cycle_in_app_graph_is_a_config_error_naming_the_edge(self, tmp_path: Path) -> None:
        """Edges that loop are refused at load with `app_graph.edges.N: cycle: ...` (vets-api's walk would not end)."""
        path = tmp_path / "depmon.yaml"
        config = config_of([["a", "b"], ["b", "c"], ["c", "a"]], {"x": {}})
        document = config.model_dump(mode="json", exclude_unset=True)
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(path, {})
        assert [str(issue) for issue in caught.value.issues] == [f"{path}: app_graph.edges[0]: cycle: a -> b -> c -> a"]

    def test_an_unknown_vets_api_name_is_no_config_error(self) -> None:
        """A `vets_api` name no edge mentions loads: vets-api renames nodes, that is drift."""
        config = config_of([["a", "b"]], {"x": {"vets_api": ["renamed_upstream"]}})
        assert [d.subject for d in name_drift(config, [("a", "b")])] == ["x"]

    def test_the_bundled_config_has_a_vets_api_entry_for_every_dependency(self, bundled: Config) -> None:
        """Every seed dependency has been reviewed against vets-api's graph; the graph names its variant."""
        assert all(dep.vets_api is not None for dep in bundled.dependencies.values())
        assert bundled.app_graph is not None
        assert "VBMS_EFOLDER_GRAPH" in bundled.app_graph.source
        assert name_drift(bundled, bundled.app_graph.edges) == []

    def test_the_bundled_feature_graph_stays_the_seeds(self, bundled: Config) -> None:
        """EVSS still takes out the seed's four features in depmon's graph (the team's map)."""
        for feature in ("claims", "letters_and_documents", "direct_deposit_benefits", "disability_rating"):
            assert "evss" in bundled.features[feature].requires


# -- /maintenance_windows against a reference written from vets-api's rules -----------------------


def reference(
    edges: list[tuple[str, str]], hits: list[tuple[str, MaintenanceWindow]]
) -> dict[str, tuple[datetime, datetime]]:
    """vets-api's rules, written plainly: for each leaf, of the windows whose node reaches it (the node
    itself excluded), the earliest start with its end; on equal starts, the one listed first."""
    children: dict[str, set[str]] = {}
    for upstream, node in edges:
        children.setdefault(upstream, set()).add(node)
        children.setdefault(node, set())

    def reachable(node: str) -> set[str]:
        found: set[str] = set()
        for child in children.get(node, set()):
            found |= {child} | reachable(child)
        return found

    best: dict[str, tuple[datetime, int, MaintenanceWindow]] = {}
    for order, (node, window) in enumerate(hits):
        for leaf in reachable(node):
            if children[leaf]:
                continue
            if leaf not in best or (window.start, order) < best[leaf][:2]:
                best[leaf] = (window.start, order, window)
    return {leaf: (chosen.start, chosen.end) for leaf, (_, _, chosen) in best.items()}


NODES = [f"n{i}" for i in range(7)]
dags = st.lists(
    st.tuples(st.integers(0, 5), st.integers(1, 6)).filter(lambda e: e[0] < e[1]), min_size=1, max_size=14
).map(lambda pairs: [(NODES[a], NODES[b]) for a, b in pairs])
window_specs = st.lists(
    st.tuples(
        st.lists(st.sampled_from([*(f"P{i}" for i in range(7)), "PX", "PNONE"]), min_size=1, max_size=3, unique=True),
        st.integers(-300, 300),  # start, minutes from now
        st.integers(1, 600),  # length, minutes
    ),
    max_size=8,
)


class TestEndpoint:
    @settings(max_examples=300, deadline=None)
    @given(edges=dags, specs=window_specs)
    def test_records_match_vets_apis_rules_for_random_graphs_and_windows(
        self, edges: list[tuple[str, str]], specs: list[tuple[list[str], int, int]]
    ) -> None:
        """Any graph and windows (several services, unknown ids, leaves, ended): the rules' records, one per leaf."""
        # n_i's window service is P_i (a dependency's vets_api); PX carries n0 and n3 (two names).
        dependencies: dict[str, Any] = {
            f"d{i}": {"pagerduty_service": f"P{i}", "vets_api": [f"n{i}"]} for i in range(7)
        }
        dependencies["dx"] = {"pagerduty_service": "PX", "vets_api": ["n0", "n3"]}
        config = config_of([list(edge) for edge in edges], dependencies)
        windows = [
            MaintenanceWindow(
                f"W{i}", NOW + timedelta(minutes=start), NOW + timedelta(minutes=start + length), "", tuple(services)
            )
            for i, (services, start, length) in enumerate(specs)
        ]
        names = {f"P{i}": [f"n{i}"] for i in range(7)} | {"PX": ["n0", "n3"]}
        hits = [
            (name, w) for w in windows if w.end > NOW for service in w.service_ids for name in names.get(service, [])
        ]
        records = app_maintenance_windows(config, windows, NOW.timestamp())
        served = {
            r["attributes"]["service"]: (r["attributes"]["start_time"], r["attributes"]["end_time"]) for r in records
        }
        assert len(served) == len(records)
        expected = {
            leaf: (start.strftime("%Y-%m-%dT%H:%M:%S.000Z"), end.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
            for leaf, (start, end) in reference(edges, hits).items()
        }
        assert served == expected

    def test_ties_go_to_the_window_pagerduty_listed_first(self) -> None:
        """Two windows reaching one leaf with the same start: the first listed gives the end, whatever its length."""
        config = config_of(
            [["a", "s"], ["b", "s"]],
            {"x": {"pagerduty_service": "PA", "vets_api": ["a"]}, "y": {"pagerduty_service": "PB", "vets_api": ["b"]}},
        )
        short = MaintenanceWindow("W1", NOW, NOW + timedelta(hours=1), "", ("PB",))
        long = MaintenanceWindow("W2", NOW, NOW + timedelta(hours=5), "", ("PA",))
        [record] = app_maintenance_windows(config, [short, long], NOW.timestamp())
        assert record["attributes"]["end_time"] == "2026-11-27T13:00:00.000Z"

    def test_a_window_on_a_pagerduty_services_upstream_counts_for_its_name(self) -> None:
        """`app_graph.pagerduty_services` maps an upstream no dependency names: its window reaches its leaves."""
        config = config_of([["bgs", "caseflow"], ["caseflow", "appeals"], ["bgs", "payment_history"]], {"x": {}})
        assert config.app_graph is not None
        config = config.model_copy(
            update={"app_graph": config.app_graph.model_copy(update={"pagerduty_services": {"bgs": "PBGS"}})}
        )
        window = MaintenanceWindow("W", NOW, NOW + timedelta(hours=1), "", ("PBGS",))
        served = [r["attributes"]["service"] for r in app_maintenance_windows(config, [window], NOW.timestamp())]
        assert served == ["payment_history", "appeals"]

    def test_the_bundled_evss_window_gives_the_app_nothing_and_a_feature_service_does_not_count(
        self, bundled: Config
    ) -> None:
        """With the bundled app_graph, an EVSS window serves no record (vets-api has no EVSS node)."""
        evss = bundled.dependencies["evss"].pagerduty_service
        assert evss is not None
        window = MaintenanceWindow("W", NOW, NOW + timedelta(hours=1), "", (evss,))
        assert app_maintenance_windows(bundled, [window], NOW.timestamp()) == []


# -- drift: each kind, each direction ---------------------------------------------------------------

FEATURES = {
    "claims": {"name": "Claims", "requires": ["old"]},
    "appeals": {"name": "Appeals", "requires": ["caseflow"]},
}
EDGES = [["bgs", "caseflow"], ["caseflow", "appeals"], ["lighthouse_benefits_claims", "claims"]]


class TestDrift:
    def test_a_depmon_feature_the_window_shows_no_banner_for_is_banner_drift(self) -> None:
        """(a) depmon's graph impacts claims through `old`, whose vets_api names reach nothing."""
        config = config_of(EDGES, {"old": {"vets_api": []}, "caseflow": {"vets_api": ["caseflow"]}}, FEATURES)
        [difference] = banner_drift(config)
        assert (difference.subject, difference.left, difference.right) == ("old", ("claims",), ())

    def test_a_banner_depmon_does_not_impact_is_banner_drift(self) -> None:
        """(a) a window on caseflow, named bgs in vets-api, puts up appeals; depmon's graph also has appeals."""
        config = config_of(
            EDGES, {"old": {"vets_api": ["lighthouse_benefits_claims"]}, "caseflow": {"vets_api": ["bgs"]}}, FEATURES
        )
        assert banner_drift(config) == []
        config = config_of(
            [*EDGES, ["bgs", "payment_history"]],
            {"old": {"vets_api": ["lighthouse_benefits_claims"]}, "caseflow": {"vets_api": ["bgs"]}},
            FEATURES,
        )
        [difference] = banner_drift(config)
        assert (difference.subject, difference.left, difference.right) == ("caseflow", (), ("payment_history",))

    def test_edges_only_on_one_side_are_edge_drift_both_ways(self) -> None:
        """(b) an edge only in app_graph, and one only in the controller file, each on its own line."""
        found = edge_drift([("a", "b"), ("b", "c")], [("b", "c"), ("b", "d")], "controller.rb")
        assert [(d.subject, d.left, d.right) for d in found] == [
            ("app_graph", ("a -> b",), ()),
            ("controller.rb", (), ("b -> d",)),
        ]

    def test_leaves_and_app_services_differing_are_leaf_drift_both_ways(self) -> None:
        """(c) a leaf the app ignores, and an app service no leaf gives."""
        found = leaf_drift([("a", "claims"), ("a", "allergies")], ["claims", "rx_refill"], "Errors.ts")
        assert [(d.subject, d.left, d.right) for d in found] == [
            ("graph", ("allergies",), ()),
            ("app", (), ("rx_refill",)),
        ]

    def test_unreviewed_dependencies_and_unknown_names_are_name_drift(self) -> None:
        """(d) a dependency without vets_api, and a vets_api name no edge mentions."""
        config = config_of(EDGES, {"new": {}, "renamed": {"vets_api": ["caseflow_v2"]}})
        assert [
            (d.subject, d.left) for d in name_drift(config, config.app_graph.edges if config.app_graph else [])
        ] == [
            ("unreviewed", ("new",)),
            ("renamed", ("caseflow_v2",)),
        ]

    def test_diff_exit_is_0_without_drift_1_with_it_and_2_with_nothing_to_compare(self, tmp_path: Path) -> None:
        """`depmon app-graph diff`: 0 when the maps agree, 1 on drift, 2 without app_graph or --vets-api."""
        edges = [list(e) for e in read_controller(VARIANTS).variants["DIRECT_GRAPH"]]
        agree = config_of(
            edges, {"caseflow": {"vets_api": ["caseflow"]}}, {"appeals": {"name": "Appeals", "requires": ["caseflow"]}}
        )
        app = FIXTURES / "Errors.ts"
        out = io.StringIO()
        assert run_diff(agree, VARIANTS, None, app, False, out, io.StringIO()) == 0, out.getvalue()
        assert "(b) edges: app_graph vs the controller file: no differences" in out.getvalue()
        out = io.StringIO()
        assert run_diff(agree, VARIANTS, "VIA_LIGHTHOUSE_GRAPH", app, True, out, io.StringIO()) == 1
        kinds = {d["kind"] for d in json.loads(out.getvalue())["drift"]}
        assert kinds == {"edges"}
        bare = agree.model_copy(update={"app_graph": None})
        err = io.StringIO()
        assert run_diff(bare, None, None, None, False, io.StringIO(), err) == 2
        assert "nothing to compare" in err.getvalue()
        err = io.StringIO()
        assert run_diff(agree, written(tmp_path, "nothing\n"), None, None, False, io.StringIO(), err) == 2
        assert "controller.rb:1: no ServiceGraph edges found" in err.getvalue()

    def test_the_bundled_config_drifts_where_the_seed_predates_lighthouse(self, bundled: Config) -> None:
        """The bundled maps differ on EVSS (four features, no banner), SSOe, MHV, VA Profile and Lighthouse."""
        drift = {d.subject: (d.left, d.right) for d in banner_drift(bundled)}
        assert drift["evss"] == (
            ("claims", "letters_and_documents", "direct_deposit_benefits", "disability_rating"),
            (),
        )
        assert drift["mhv"] == ((), ("rx_refill",))
        assert set(drift) == {"ssoe-oauth", "mhv", "va-profile", "evss", "lighthouse"}
        assert bundled.app_graph is not None
        [ignored] = leaf_drift(bundled.app_graph.edges, APP_DOWNTIME_SERVICES, "Errors.ts")
        assert "allergies" in ignored.left  # served by vets-api, not kept by the pinned app version


# -- the page field, the maintenance command's sentence, /status and the metric ---------------------


def page(config: Config, dependency: str) -> dict[str, Any]:
    features = {f: FeatureHealth(FeatureState.DOWN, (dependency,)) for f in config.features}
    decision = Decision(Action.TRIGGER, dependency, f"depmon/test/{dependency}", ())
    event = build_event(decision, EventContext(config, features, (), NOW.timestamp()))
    details: dict[str, Any] = event["payload"]["custom_details"]
    return details


class TestPageAndCommand:
    @pytest.mark.parametrize(
        ("dependency", "banners"),
        [
            ("evss", []),
            ("caseflow", ["appeals"]),
            ("mhv", ["secure_messaging", "rx_refill"]),
            ("lighthouse", ["immunizations", "allergies", "labs_and_tests"]),
        ],
    )
    def test_every_page_carries_the_app_banners_of_its_dependency(
        self, bundled: Config, dependency: str, banners: list[str]
    ) -> None:
        """`custom_details.app_banners` lists what a window on the dependency shows Veterans ([] for EVSS)."""
        assert page(bundled, dependency)["app_banners"] == banners

    def test_without_app_graph_the_banners_are_depmons_own_view(self, bundled: Config) -> None:
        """Without app_graph, a page's banners are the app features depmon's graph takes out (SPEC 10.7)."""
        plain = bundled.model_copy(update={"app_graph": None})
        assert page(plain, "evss")["app_banners"] == [
            "claims",
            "letters_and_documents",
            "direct_deposit_benefits",
            "disability_rating",
        ]

    def test_the_maintenance_command_says_plainly_when_the_app_shows_nothing(self, bundled: Config) -> None:
        """`maintenance open` names the banners, or says in capitals that there are none and why."""
        assert banner_sentence(bundled, "caseflow") == "the app shows a downtime banner on: appeals"
        assert banner_sentence(bundled, "evss") == (
            "the app shows Veterans NO downtime banner: vets-api's ServiceGraph has no node for it (vets_api: [])"
        )

    def test_status_and_metric_count_drift_a_and_d(self, bundled: Config) -> None:
        """/status's app_graph gives the source and drift (a) and (d); the gauge counts them, 0 without app_graph."""
        status = app_graph_status(bundled)
        assert status is not None
        assert bundled.app_graph is not None
        assert status["source"] == bundled.app_graph.source
        assert len(status["drift"]) == len(config_drift(bundled)) == 5
        metrics = Metrics()
        metrics.set_app_graph_drift(status)
        assert metrics.registry.get_sample_value("depmon_app_graph_drift") == 5
        metrics.set_app_graph_drift(app_graph_status(bundled.model_copy(update={"app_graph": None})))
        assert metrics.registry.get_sample_value("depmon_app_graph_drift") == 0

    def test_banners_are_the_leaves_below_each_vets_api_name(self) -> None:
        """A dependency named twice in vets-api gets the leaves below both, each once, the names excluded."""
        config = config_of([["a", "m"], ["m", "s1"], ["b", "s1"], ["b", "s2"]], {"x": {"vets_api": ["a", "b", "s2"]}})
        assert app_banners(config, "x") == ["s1", "s2"]


class TestBannersOfAConfig:
    """`app_banners_of`: every dependency's banners, the graphs walked once (what the pager keeps per config)."""

    @pytest.mark.parametrize("with_app_graph", [True, False])
    def test_equals_app_banners_of_each_dependency(self, bundled: Config, with_app_graph: bool) -> None:
        """For the bundled config, with vets-api's graph and with depmon's own, each dependency's entry is its
        `app_banners`."""
        config = bundled
        if not with_app_graph:
            config = config.model_copy(update={"app_graph": None})
        kept = app_banners_of(config)
        assert set(kept) == set(config.dependencies)
        assert kept == {dep: app_banners(config, dep) for dep in config.dependencies}
        assert any(kept.values())
