"""`monitor.proxies`: which proxy carries a request, from the destination's setting and the variables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.config import ConfigError
from monitor.proxies import ProxyEnvironment

pytestmark = pytest.mark.unit

FWD = "http://fwd.va.gov:3128"
TLS_FWD = "https://tls-fwd.va.gov:3129"


def proxy(url: str, environ: dict[str, str], setting: str | None = None) -> str | None:
    return ProxyEnvironment.from_environ(environ).proxy_for(url, setting)


class TestProxyFor:
    @pytest.mark.parametrize(
        ("url", "environ", "expected"),
        [
            ("https://events.pagerduty.com", {}, None),
            ("https://events.pagerduty.com", {"HTTPS_PROXY": FWD}, FWD),
            ("https://events.pagerduty.com", {"HTTP_PROXY": FWD}, None),  # HTTP_PROXY is for http:// only
            ("http://127.0.0.1:8080", {"HTTP_PROXY": FWD}, FWD),  # loopback is not exempt by itself
            ("http://127.0.0.1:8080", {"HTTPS_PROXY": FWD}, None),
            ("https://hooks.slack.com/x", {"https_proxy": TLS_FWD, "HTTPS_PROXY": FWD}, TLS_FWD),  # lower case first
            ("https://hooks.slack.com/x", {"https_proxy": "", "HTTPS_PROXY": FWD}, FWD),  # empty is unset
            ("https://hooks.slack.com/x", {"HTTPS_PROXY": "fwd.va.gov:3128"}, FWD),  # no scheme: http://
        ],
    )
    def test_the_variables(self, url: str, environ: dict[str, str], expected: str | None) -> None:
        """HTTPS_PROXY carries https:// URLs and HTTP_PROXY http:// ones, as curl and urllib read them."""
        assert proxy(url, environ) == expected

    @pytest.mark.parametrize(
        ("url", "no_proxy", "bypassed"),
        [
            ("https://api.pagerduty.com", "*", True),
            ("https://api.pagerduty.com", "pagerduty.com", True),  # a name covers its subdomains
            ("https://api.pagerduty.com", ".pagerduty.com", True),
            ("https://api.pagerduty.com", "*.pagerduty.com", True),
            ("https://pagerduty.com", ".pagerduty.com", True),
            ("https://notpagerduty.com", "pagerduty.com", False),  # a suffix, not a subdomain
            ("https://api.pagerduty.com", "events.pagerduty.com", False),
            ("https://API.PagerDuty.com", " example.gov , PAGERDUTY.COM ", True),
            ("http://10.1.2.3:8080", "10.0.0.0/8", True),
            ("http://10.1.2.3:8080", "10.1.2.3", True),
            ("http://11.1.2.3:8080", "10.0.0.0/8", False),
            ("http://[::1]:8080", "::1", True),
            ("http://[::1]:8080", "[::1]:8080", True),
            ("http://[::1]:8080", "[::1]:9090", False),
            ("https://api.pagerduty.com", "api.pagerduty.com:443", True),  # the scheme's default port
            ("https://api.pagerduty.com", "api.pagerduty.com:8443", False),
            ("http://127.0.0.1:8080", "localhost", False),  # names are not resolved
        ],
    )
    def test_no_proxy(self, url: str, no_proxy: str, bypassed: bool) -> None:
        """A host NO_PROXY lists (name, subdomain, IP, CIDR, with or without a port) goes direct."""
        environ = {"HTTPS_PROXY": FWD, "HTTP_PROXY": FWD, "NO_PROXY": no_proxy}
        assert proxy(url, environ) == (None if bypassed else FWD)

    def test_lower_case_no_proxy_first(self) -> None:
        """`no_proxy` is read before `NO_PROXY`, like the proxy variables."""
        environ = {"HTTPS_PROXY": FWD, "no_proxy": "example.gov", "NO_PROXY": "pagerduty.com"}
        assert proxy("https://api.pagerduty.com", environ) == FWD

    @pytest.mark.parametrize("environ", [{}, {"HTTPS_PROXY": FWD}, {"HTTPS_PROXY": FWD, "NO_PROXY": "*"}])
    def test_the_destination_setting_carries_everything(self, environ: dict[str, str]) -> None:
        """`pagerduty.proxy` / `slack.proxy` carry the destination's traffic, whatever the variables say."""
        assert proxy("https://api.pagerduty.com", environ, TLS_FWD) == TLS_FWD

    @given(
        labels=st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True), min_size=1, max_size=3),
        domain=st.sampled_from(["pagerduty.com", "slack.com", "va.gov"]),
    )
    def test_every_subdomain_of_a_listed_name_goes_direct(self, labels: list[str], domain: str) -> None:
        """Any host under a NO_PROXY name bypasses the proxy; the same host under another name does not."""
        host = ".".join([*labels, domain])
        environ = {"HTTPS_PROXY": FWD, "NO_PROXY": domain}
        assert proxy(f"https://{host}/", environ) is None
        assert proxy(f"https://{host}.example/", environ) == FWD


class TestFromEnviron:
    @pytest.mark.parametrize(
        ("environ", "lines"),
        [
            ({"HTTPS_PROXY": "socks5://u:s3cret@fwd:1080"}, ["HTTPS_PROXY: must be an http:// or https:// URL"]),
            ({"HTTP_PROXY": "http://fwd:0"}, ["HTTP_PROXY: has an invalid port (1 to 65535)"]),
            ({"https_proxy": "http://"}, ["HTTPS_PROXY: must name a host"]),
            (
                {"HTTPS_PROXY": "http:// fwd", "HTTP_PROXY": "ftp://fwd"},
                [
                    "HTTPS_PROXY: must not contain spaces or control characters",
                    "HTTP_PROXY: must be an http:// or https:// URL",
                ],
            ),
        ],
    )
    def test_an_unusable_proxy_is_refused(self, environ: dict[str, str], lines: list[str]) -> None:
        """Every unusable proxy variable is one issue `environment: NAME: message`, never showing the value."""
        with pytest.raises(ConfigError) as caught:
            ProxyEnvironment.from_environ(environ)
        issues = [str(issue) for issue in caught.value.issues]
        assert [issue.removesuffix(" (a forward proxy)") for issue in issues] == [f"environment: {x}" for x in lines]
        assert "s3cret" not in str(caught.value)

    def test_the_proxies_passwords_are_secrets(self) -> None:
        """A proxy URL's password, as written and decoded, is a secret to redact."""
        environ = {"HTTPS_PROXY": "http://u:pa%2Fss@fwd:3128", "HTTP_PROXY": "http://v:w0rd@fwd:3128"}
        assert ProxyEnvironment.from_environ(environ).secret_values() == ["pa%2Fss", "pa/ss", "w0rd"]
