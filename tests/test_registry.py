"""Connector plugins: entry-point discovery, validation, broken plugins named; the contract."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from connectors import registry
from connectors.testing import ConnectorContract
from gateway.errors import PolicyFileError
from tests.support.recording import (
    RecordingConfig,
    RecordingConnector,
    Target,
    registered,
    target,
)

PLUGIN_MODULE = """
from typing import ClassVar
from pydantic import BaseModel

class Good:
    name = "goodplug"
    class Config(BaseModel):
        url: str
    allowed_actions: ClassVar[dict[str, tuple[str, ...]]] = {"locked": ("disable", "maintain")}
    password_limits = ()
    def __init__(self, resource, config):
        self.resource, self.config = resource, config
    async def find_account(self, who): return None
    async def apply(self, account, desired, password): return frozenset()
    async def check(self): return None
    async def aclose(self): return None

class NoApply(Good):
    name = "noapply"
    apply = None

class WrongName(Good):
    name = "somethingelse"
"""


@pytest.fixture
def plugins(tmp_path: Path) -> Iterator[None]:
    """A real installed distribution (dist-info on sys.path) declaring four plugins."""
    (tmp_path / "gwplugins_demo.py").write_text(PLUGIN_MODULE, encoding="utf-8")
    dist = tmp_path / "gwplugins_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Name: gwplugins-demo\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(
        "[gateway.connectors]\n"
        "goodplug = gwplugins_demo:Good\n"
        "noapply = gwplugins_demo:NoApply\n"
        "wrongname = gwplugins_demo:WrongName\n"
        "missing = gwplugins_demo_nosuchmodule:Thing\n",
        encoding="utf-8",
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("gwplugins_demo", None)
        for name in ("goodplug", "noapply", "wrongname", "missing"):
            registry.unregister(name)


def test_entry_points_are_discovered(plugins: None) -> None:
    assert {"goodplug", "noapply", "wrongname", "missing"} <= set(registry.names())
    cls = registry.connector_class("goodplug")
    assert cls.name == "goodplug"
    instance: Any = registry.build("r1", "goodplug", cls.Config(url="x"), {})
    assert instance.resource == "r1"
    assert "goodplug" in registry.available()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("noapply", "lacks the async operation apply()"),
        ("wrongname", "declares name 'somethingelse', expected 'wrongname'"),
        ("missing", "failed to load (gwplugins_demo_nosuchmodule:Thing): ModuleNotFoundError"),
    ],
)
def test_broken_plugin_is_named(plugins: None, name: str, why: str) -> None:
    with pytest.raises(PolicyFileError) as err:
        registry.connector_class(name)
    assert f"connector plugin {name!r} {why}" in str(err.value)
    assert name not in registry.available()  # left out, never silently half-loaded


def test_unknown_connector_lists_known() -> None:
    with pytest.raises(PolicyFileError, match="unknown connector 'zzz'"):
        registry.connector_class("zzz")


def test_validation_rules() -> None:
    class NoActions:
        name = "x"
        Config = BaseModel

    with pytest.raises(PolicyFileError, match="allowed_actions"):
        registry.validate("x", NoActions)
    with pytest.raises(PolicyFileError, match="is not a class"):
        registry.validate("x", object())
    assert registry.validate("recording", RecordingConnector) is RecordingConnector


class _RecordingTarget:
    def __init__(self, t: Target) -> None:
        self.t = t

    def create(self, username: str, email: str, password: str) -> None:
        self.t.add(username, password)

    def can_sign_in(self, username: str, password: str) -> bool:
        acc = self.t.accounts[username]
        return bool(acc["password"] == password and not acc["disabled"])

    def is_disabled(self, username: str) -> bool:
        return bool(self.t.accounts[username]["disabled"])

    def disable_by_hand(self, username: str) -> None:
        self.t.accounts[username]["disabled"] = True


class TestRecordingContract(ConnectorContract):
    """The contract class run against the recording connector (as each real connector does)."""

    @pytest.fixture
    def connector(self) -> Iterator[RecordingConnector]:
        with registered():
            yield RecordingConnector("contract", RecordingConfig(target="contract"))

    @pytest.fixture
    def target(self) -> _RecordingTarget:
        return _RecordingTarget(target("contract"))


def test_contract_can_fail() -> None:
    """A connector that ignores disable fails the contract (the contract is not a rubber stamp)."""

    class Lazy(RecordingConnector):
        def _apply(self, t: Target, account: Any, desired: Any, password: Any) -> frozenset[str]:
            return super()._apply(t, account, desired.__class__(version=desired.version), password)

    with registered():
        contract = ConnectorContract()
        with pytest.raises(AssertionError):
            contract.test_disable_then_restore(
                Lazy("contract", RecordingConfig(target="lazy")),  # type: ignore[arg-type]
                _RecordingTarget(target("lazy")),
            )
