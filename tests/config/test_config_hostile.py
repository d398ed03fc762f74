"""Property: whatever a config file holds, `load_config` answers with a Config or a ConfigError.

Generated files are valid configs, mutated ones (wrong types, unknown keys, huge values), random
YAML trees, alias webs, deep nesting and raw token soup. A few hundred examples run in CI;
`DEPMON_HYPOTHESIS_EXAMPLES=10000` makes it the benchmark-style run of issue 11.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config import Config, ConfigError, load_config

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("DEPMON_HYPOTHESIS_EXAMPLES", "200"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

VALID = {
    "monitor": {"environment": "test", "defaults": {"interval": "30s", "timeout": "5s"}},
    "pagerduty": {"routing_key": "${PD_KEY:-}"},
    "dependencies": {
        "ssoe-oauth": {
            "name": "SSOe",
            "probes": [
                {
                    "name": "token",
                    "kind": "oauth2",
                    "token_url": "https://sso.test/token",
                    "client_id": "${ID}",
                    "client_secret": "${ID}",
                },
            ],
        },
        "evss": {
            "name": "EVSS",
            "depends_on": ["ssoe-oauth"],
            "probes": [
                {"name": "health", "kind": "http", "url": "https://evss.test/h", "bearer_from": "ssoe-oauth/token"},
                {"name": "port", "kind": "tcp", "host": "evss.test", "port": 443},
            ],
        },
    },
    "features": {"claims": {"name": "Claims", "requires": ["evss"], "userbase_share": 0.3}},
}

BIG_NUMBER = "@big-number@"
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.just(BIG_NUMBER),  # becomes an unquoted number of 5,000 digits in the file
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["30s", "0s", "-1m", "1h", "${ID}", "${UNSET}", "${X:-", "https://x.test", "tls", "http"]),
    st.integers(min_value=0, max_value=50_000).map(lambda n: "x" * n),  # huge strings (files over 4 MiB: test_config)
)
keys = st.one_of(
    st.sampled_from(["monitor", "dependencies", "features", "probes", "kind", "name", "url", "requires", "<<"]),
    st.text(max_size=12),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=6), st.dictionaries(keys, children, max_size=6)),
    max_leaves=60,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _big_numbers(text: str) -> str:
    return text.replace(BIG_NUMBER, "9" * 5000)


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    """The valid config with a few values replaced or keys added: wrong types, unknown keys, huge values."""
    document: Any = yaml.safe_load(yaml.safe_dump(VALID))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        paths = list(_paths(document))[1:]
        path = draw(st.sampled_from(paths))
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()) or not isinstance(parent, dict):
            parent[path[-1]] = draw(trees)
        else:
            parent[draw(keys)] = draw(trees)
    return yaml.safe_dump(document, allow_unicode=True)


@st.composite
def alias_webs(draw: st.DrawFn) -> str:
    """Anchors that alias earlier anchors, in lists of random widths and depths (bombs among them)."""
    lines = ["monitor: {environment: test}"]
    for level in range(draw(st.integers(min_value=1, max_value=12))):
        width = draw(st.integers(min_value=1, max_value=12))
        items = ["lol"] * width if level == 0 else [f"*a{draw(st.integers(0, level - 1))}" for _ in range(width)]
        opener, closer = ("[", "]") if draw(st.booleans()) else ("{<<: [", "]}")
        if opener.startswith("{"):
            items = [item if item.startswith("*") else f"{{k{i}: {item}}}" for i, item in enumerate(items)]
        lines.append(f"k{level}: &a{level} {opener}{', '.join(items)}{closer}")
    if draw(st.booleans()):
        lines.append(f"dependencies: {{evss: {{name: E, probes: [*a{draw(st.integers(0, len(lines) - 2))}]}}}}")
    return "\n".join(lines) + "\n"


@st.composite
def deep_nesting(draw: st.DrawFn) -> str:
    """Flow or block nesting from a few levels to far beyond Python's recursion limit."""
    depth = draw(st.integers(min_value=1, max_value=5000))
    if draw(st.booleans()):
        return "monitor: " + "[" * depth + "]" * depth + "\n"
    return "".join(f"{'  ' * i}k{i}:\n" for i in range(min(depth, 400))) + "  " * min(depth, 400) + "x: 1\n"


tokens = st.sampled_from(
    [
        "&a ", "*a", "&b ", "*b", "[", "]", "{", "}", ": ", ",", "- ", "\n", "  ", "<<: ", "? ", "|", ">",
        "!!python/object:os.system ", "!!binary ", "!!set ", "!!omap ", "!!timestamp ", "%YAML 1.1\n", "---\n",
        "...\n", "'", '"', "#", "${ID}", "monitor", "environment", "dependencies", "probes", "kind: http",
        "\t", "\x00", "\ufeff", "9" * 5000, "1e999", ".nan", "~", "null", "true", "0o17", "0x1F",
    ]
)  # fmt: skip
token_soup = st.lists(tokens, max_size=60).map("".join)

hostile_files = st.one_of(
    st.builds(lambda tree: yaml.safe_dump(tree, allow_unicode=True), trees).map(_big_numbers),
    mutated_configs().map(_big_numbers),
    alias_webs(),
    deep_nesting(),
    token_soup,
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)
environs = st.dictionaries(st.sampled_from(["ID", "PD_KEY", "UNSET"]), st.text(max_size=40), max_size=3)


class TestLoadConfigProperty:
    """`load_config` on generated files."""

    @pytest.mark.timeout(0 if EXAMPLES > 200 else 120)  # the benchmark-style run takes minutes
    @SETTINGS
    @given(text=hostile_files, environ=environs, raw=st.booleans())
    def test_answers_a_config_or_a_config_error(self, text: str, environ: dict[str, str], raw: bool) -> None:
        """Any generated file gives a Config or a ConfigError whose every line names the file, nothing else."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "depmon.yaml"
            if raw:
                path.write_bytes(text.encode("utf-8", "surrogatepass"))
            else:
                path.write_text(text, encoding="utf-8", errors="replace")
            answer: Config | ConfigError
            try:
                answer = load_config(path, environ)
            except ConfigError as exc:
                answer = exc
        if isinstance(answer, ConfigError):
            assert answer.issues
            assert all(str(issue).startswith(f"{path}: ") for issue in answer.issues)
        else:
            assert isinstance(answer, Config)

    def test_the_valid_seed_loads(self, tmp_path: Path) -> None:
        """The config that the mutations start from is valid, so mutations explore near a valid config."""
        path = tmp_path / "depmon.yaml"
        path.write_text(yaml.safe_dump(VALID), encoding="utf-8")
        assert isinstance(load_config(path, {"ID": "client"}), Config)


@pytest.mark.parametrize("depth", [63, 64, 65])
def test_nesting_limit_boundary(tmp_path: Path, depth: int) -> None:
    """Nesting up to the limit loads as far as YAML goes; one level more is refused."""
    path = tmp_path / "depmon.yaml"
    path.write_text("monitor: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    refused = "nested deeper than 64 levels" in str(caught.value)
    assert refused == (depth > 64)
