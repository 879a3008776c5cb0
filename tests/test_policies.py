"""Resource policy files: loading, every error with file/line/field, schema, reload, limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors import registry
from gateway.daemon import reload
from gateway.errors import ConfigError, PolicyFileError
from gateway.policies import (
    Actions,
    check_all,
    json_schema,
    load_policy_set,
    load_resource,
)
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.support.recording import policy_toml, registered
from tests.support.runtime import make_runtime, make_settings

SHIPPED = Path("policies")


@pytest.fixture(autouse=True)
def recording() -> Iterator[None]:
    with registered():
        yield


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_a_resource(tmp_path: Path) -> None:
    write(tmp_path, "dir1", policy_toml(groups=("staff",), locked="maintain"))
    pset = load_policy_set(tmp_path)
    res = pset.resources["dir1"]
    assert res.connector == "recording" and res.enabled and res.concurrency == 4
    assert res.actions == Actions(
        password_change="set", expired="force_change", locked="maintain", unlocked="restore"
    )
    assert type(res.connection).__name__ == "RecordingConfig"
    assert res.covers_account("user", ("staff",), {})
    assert not res.covers_account("user", ("other",), {})
    assert not res.covers_account("admin", ("staff",), {})
    with pytest.raises(ValidationError):  # frozen
        res.enabled = False  # type: ignore[misc]


def test_attribute_cover(tmp_path: Path) -> None:
    text = policy_toml().replace("[covers]\n", '[covers]\nattributes = { dept = "it" }\n')
    res = load_resource(write(tmp_path, "r", text))
    assert res.covers_account("user", (), {"dept": "it"})
    assert not res.covers_account("user", (), {"dept": "hr"})


def test_disabled_resource_covers_nobody(tmp_path: Path) -> None:
    res = load_resource(write(tmp_path, "r", policy_toml(enabled=False)))
    assert not res.covers_account("user", (), {})
    assert load_policy_set(tmp_path).enabled() == []


@pytest.mark.parametrize(
    ("old", "new", "line", "field"),
    [
        ('locked = "disable"', 'locked = "explode"', 12, "actions.locked"),
        ("concurrency = 4", "concurrency = 0", 3, "concurrency"),
        ('target = "default"', 'target = "default"\nbogus = 1', 17, "connection.bogus"),
        ("enabled = true", "enabled = true\nsurprise = 1", 3, "surprise"),
        ('connector = "recording"', 'connector = "nosuch"', 1, "connector"),
    ],
)
def test_errors_name_file_line_field(
    tmp_path: Path, old: str, new: str, line: int, field: str
) -> None:
    path = write(tmp_path, "bad", policy_toml().replace(old, new))
    with pytest.raises(PolicyFileError) as err:
        load_resource(path)
    assert err.value.path == str(path)
    assert err.value.location == f"line {line}, field {field}"


def test_check_reports_every_error(tmp_path: Path) -> None:
    text = policy_toml().replace('locked = "disable"', 'locked = "x"')
    text = text.replace('expired = "force_change"', 'expired = "y"')
    write(tmp_path, "a", text)
    write(tmp_path, "b", "connector = [")
    write(tmp_path, "c", policy_toml())
    (tmp_path / "org.toml").write_text("[lockout]\nthreshold = 0\nnope = 1\n", encoding="utf-8")
    errors = check_all(tmp_path)
    where = sorted((Path(e.path).name, e.location) for e in errors)
    assert ("a.toml", "line 11, field actions.expired") in where
    assert ("a.toml", "line 12, field actions.locked") in where
    assert any(name == "b.toml" and loc.startswith("line 1") for name, loc in where)
    assert ("org.toml", "line 2, field lockout.threshold") in where
    assert ("org.toml", "line 3, field lockout.nope") in where
    assert not any(name == "c.toml" for name, _ in where)


def test_broken_plugin_is_named(tmp_path: Path) -> None:
    class NoConfig:
        name = "broken"

    with pytest.raises(PolicyFileError) as err:
        registry.register("broken", NoConfig)
    assert "'broken'" in str(err.value) and "Config" in str(err.value)


def test_entry_point_plugins_validate() -> None:
    for name in registry.names():
        if name == "recording":
            continue
        try:
            cls = registry.connector_class(name)
        except PolicyFileError as exc:  # a broken plugin is reported by name
            assert name in str(exc)
        else:
            assert cls.name == name


def test_shipped_examples_are_valid() -> None:
    assert list(SHIPPED.glob("*.example.toml")), "no example resource files shipped"
    assert [str(e) for e in check_all(SHIPPED)] == []
    pset = load_policy_set(SHIPPED)  # examples are checked, never loaded
    assert all(not r.enabled for r in pset.resources.values())


def test_json_schema_export() -> None:
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) >= {"connector", "covers", "link", "actions", "connection"}
    branches = {b["if"]["properties"]["connector"]["const"] for b in schema["allOf"]}
    assert "recording" in branches
    json.dumps(schema)


def make(tmp_path: Path, sqlite_url: str, text: str) -> tuple[Settings, Runtime]:
    settings = make_settings(tmp_path, sqlite_url)
    write(Path(settings.policies_dir), "dir1", text)
    return settings, make_runtime(settings)


def test_runtime_loads_and_reload_keeps_last_good(tmp_path: Path, sqlite_url: str) -> None:
    settings, rt = make(tmp_path, sqlite_url, policy_toml())
    try:
        assert list(rt.policies.resources) == ["dir1"]
        good = rt.policies
        write(Path(settings.policies_dir), "dir2", policy_toml().replace("set", "sometimes"))
        reload(rt)  # logs why and keeps the last good set
        assert rt.policies is good
        write(Path(settings.policies_dir), "dir2", policy_toml(locked="maintain"))
        reload(rt)
        assert set(rt.policies.resources) == {"dir1", "dir2"}
        assert rt.policies.resources["dir2"].actions.locked == "maintain"
    finally:
        rt.close()


def test_bad_file_at_startup_is_config_error(tmp_path: Path, sqlite_url: str) -> None:
    with pytest.raises(ConfigError, match=r"dir1\.toml"):
        make(tmp_path, sqlite_url, "connector = 3")


def test_limits_from_covering_resources(tmp_path: Path, sqlite_url: str) -> None:
    import asyncio

    from gateway.audit import Actor
    from gateway.errors import PolicyViolation

    _, rt = make(tmp_path, sqlite_url, policy_toml())
    try:
        actor = Actor("test")
        create = rt.service.create_account(
            kind="user", username="ann", email="ann@example.org", actor=actor
        )
        asyncio.run(create)
        with pytest.raises(PolicyViolation, match="recording accepts at most 40"):
            asyncio.run(rt.service.change_password("ann", "Long-Unusual-Pass-" * 3, actor=actor))
    finally:
        rt.close()
