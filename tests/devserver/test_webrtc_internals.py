"""The aiortc/aioice internals the dev server relies on are checked before use: a
changed shape refuses to serve (it would announce every host address), an untested
version warns once and goes on."""

from __future__ import annotations

import types
from typing import Any

import aioice.ice
import pytest
import structlog.testing

from relay.dev.server import cli
from relay.dev.server import webrtc_internals as internals
from relay.dev.server.webrtc_internals import InternalsChanged


class Connection:
    async def gather_candidates(self) -> list[str]:
        return get_host_addresses(use_ipv4=True, use_ipv6=False)


def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["192.0.2.1"]


def stand_in(**attributes: Any) -> types.SimpleNamespace:
    """An `aioice.ice` look-alike: the right shape unless `attributes` say otherwise."""
    fields: dict[str, Any] = {"get_host_addresses": get_host_addresses, "Connection": Connection}
    return types.SimpleNamespace(**{**fields, **attributes})


TESTED = {"aioice": "0.13.0", "aiortc": "1.16.0"}


def test_the_installed_libraries_pass() -> None:
    assert internals.host_lookup_problem(aioice.ice) is None
    internals.check()  # raises on a changed shape


def test_a_stand_in_of_the_right_shape_passes() -> None:
    internals.check(stand_in(), versions=TESTED)


@pytest.mark.parametrize(
    ("module", "said"),
    [
        (stand_in(get_host_addresses=None), "get_host_addresses is gone"),
        (stand_in(get_host_addresses=lambda ipv4, ipv6: []), "takes ['ipv4', 'ipv6']"),
        (stand_in(get_host_addresses=lambda use_ipv4: []), "takes ['use_ipv4']"),
        (stand_in(Connection=object), "no longer calls get_host_addresses"),
    ],
)
def test_a_changed_host_lookup_refuses_to_serve(module: Any, said: str) -> None:
    with pytest.raises(InternalsChanged, match="cannot run") as raised:
        internals.check(module, versions=TESTED)
    assert said in str(raised.value)
    # And nothing is replaced: the dev server must not start half-pinned.
    before = module.get_host_addresses
    with pytest.raises(InternalsChanged):
        internals.pin_host_addresses(["10.213.0.2"], module)
    assert module.get_host_addresses is before


def test_a_missing_candidate_parser_refuses_to_serve() -> None:
    with pytest.raises(InternalsChanged, match="candidate_from_sdp is gone"):
        internals.check(stand_in(), types.SimpleNamespace(), versions=TESTED)


def test_an_untested_version_warns_once_and_goes_on() -> None:
    assert internals.version_warning("aioice", "0.13.0") is None
    assert internals.version_warning("aioice", "0.13") is None
    warning = internals.version_warning("aioice", "0.130.1")
    assert warning == "aioice 0.130.1 is untested (tested: 0.13.x)"
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            internals.check(stand_in(), versions={"aioice": "0.99.0", "aiortc": "1.16.2"})
    assert logs == [
        {
            "event": "devserver.untested_webrtc_version",
            "detail": "aioice 0.99.0 is untested (tested: 0.13.x)",
            "log_level": "warning",
        }
    ]


def test_pinning_replaces_the_lookup_with_the_same_shape() -> None:
    module = stand_in()
    internals.pin_host_addresses(["10.213.0.2"], module)
    assert module.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["10.213.0.2"]
    internals.check(module, versions=TESTED)  # pinning twice (a restart) still passes


def test_relay_devserver_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def changed() -> None:
        raise InternalsChanged("the dev server cannot run with this aiortc/aioice: test")

    monkeypatch.setattr(cli, "check_internals", changed)
    # main() configures logging for its process; this one is pytest's.
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)
    args = ["--host", "127.0.0.1", "--api-key", "k", "--api-secret", "s"]
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "relay devserver: the dev server cannot run with this aiortc/aioice: test\n"
    )
