"""Resource policy files: one TOML file per resource in ``policies/``, plus ``org.toml``.

A resource file names its connector (an entry point in ``gateway.connectors``), which accounts
it covers, how accounts are linked, the action for each trigger and the connection settings,
which the connector's own ``Config`` model validates when the file loads, never at first use.
Errors name the file, the line and the field (``PolicyFileError``). A bad file keeps the last
good set active (see ``reload_hook``).
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import GatewayError, PolicyFileError
from gateway.orgpolicy import OrgPolicy, _line_of, load_org

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.policies")

ORG_FILE = "org.toml"
EXAMPLE_SUFFIX = ".example.toml"
TRIGGERS = ("password_change", "expired", "locked", "unlocked")
DISABLING = frozenset({"disable", "suspend", "disconnect"})
GENERIC_ACTIONS: Mapping[str, tuple[str, ...]] = {
    "password_change": ("set", "maintain"),
    "unlocked": ("restore", "maintain"),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Covers(_Model):
    """Which accounts a resource covers: kinds, any of the groups, all of the attributes."""

    kinds: tuple[Literal["user", "admin"], ...] = ("user",)
    groups: tuple[str, ...] = ()
    attributes: dict[str, str] = Field(default_factory=dict)

    def matches(self, kind: str, groups: tuple[str, ...], attributes: Mapping[str, Any]) -> bool:
        """True when an account with these properties is covered."""
        if kind not in self.kinds:
            return False
        if self.groups and not set(self.groups) & set(groups):
            return False
        return all(str(attributes.get(k, "")) == v for k, v in self.attributes.items())


class Actions(_Model):
    """The action for each trigger; the connector declares which values it accepts."""

    password_change: str = "set"
    expired: str = "maintain"
    locked: str = "maintain"
    unlocked: str = "restore"


class ResourceFile(_Model):
    """The shape of a resource file before the connector checks ``connection``."""

    connector: str = Field(min_length=1)
    enabled: bool = True
    concurrency: int = Field(default=4, ge=1, le=64)
    covers: Covers = Covers()
    link: dict[str, str] = Field(default_factory=dict)
    actions: Actions = Actions()
    connection: dict[str, Any] = Field(default_factory=dict)


class ResourcePolicy(_Model):
    """One validated resource: ``connection`` is an instance of the connector's ``Config``."""

    name: str
    connector: str
    enabled: bool
    concurrency: int
    covers: Covers
    link: dict[str, str]
    actions: Actions
    connection: BaseModel
    path: str = ""

    def covers_account(
        self, kind: str, groups: tuple[str, ...], attributes: Mapping[str, Any]
    ) -> bool:
        """True when this resource is enabled and covers such an account."""
        return self.enabled and self.covers.matches(kind, groups, attributes)


class PolicySet(_Model):
    """The organisation rules and every resource, as loaded together."""

    org: OrgPolicy = OrgPolicy()
    resources: Mapping[str, ResourcePolicy] = Field(default_factory=dict)

    def enabled(self) -> list[ResourcePolicy]:
        """The enabled resources, by name."""
        return [r for _, r in sorted(self.resources.items()) if r.enabled]


def _error(path: Path, text: str, loc: tuple[str | int, ...], message: str) -> PolicyFileError:
    field = ".".join(str(p) for p in loc) or "(file)"
    return PolicyFileError(str(path), f"line {_line_of(text, loc)}, field {field}", message)


def _toml_error(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> PolicyFileError:
    found = re.search(r"line (\d+)", str(exc))
    line = found.group(1) if found else str(max(len(text.splitlines()), 1))
    return PolicyFileError(str(path), f"line {line}", f"not valid TOML: {exc}")


def _action_errors(
    path: Path, text: str, actions: Actions, allowed: Mapping[str, tuple[str, ...]]
) -> list[PolicyFileError]:
    errors = []
    for trigger in TRIGGERS:
        value = getattr(actions, trigger)
        choices = allowed.get(trigger) or GENERIC_ACTIONS.get(trigger, ())
        if choices and value not in choices:
            message = f"{value!r} is not allowed here; choose one of: {', '.join(choices)}"
            errors.append(_error(path, text, ("actions", trigger), message))
    return errors


def _validation_errors(
    path: Path, text: str, exc: ValidationError, prefix: tuple[str, ...] = ()
) -> list[PolicyFileError]:
    return [_error(path, text, (*prefix, *e["loc"]), e["msg"]) for e in exc.errors()]


def _load(path: Path) -> tuple[ResourcePolicy | None, list[PolicyFileError]]:
    """Validate one resource file, collecting every error found."""
    from connectors.registry import connector_class

    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [_toml_error(path, text, exc)]
    try:
        shape = ResourceFile.model_validate(data)
    except ValidationError as exc:
        return None, _validation_errors(path, text, exc)
    try:
        cls = connector_class(shape.connector)
    except PolicyFileError as exc:
        return None, [_error(path, text, ("connector",), exc.message)]
    errors = _action_errors(path, text, shape.actions, getattr(cls, "allowed_actions", {}))
    connection: BaseModel | None = None
    try:
        connection = cls.Config.model_validate(
            shape.connection, context={"example": path.name.endswith(EXAMPLE_SUFFIX)}
        )
    except ValidationError as exc:
        errors += _validation_errors(path, text, exc, ("connection",))
    except (ValueError, GatewayError) as exc:  # a secret reference that does not resolve
        errors.append(_error(path, text, ("connection",), str(exc)))
    link_model = getattr(cls, "Link", None)
    if link_model is not None:
        try:
            link_model.model_validate(shape.link)
        except ValidationError as exc:
            errors += _validation_errors(path, text, exc, ("link",))
    if errors or connection is None:
        return None, errors
    policy = ResourcePolicy(
        name=path.stem,
        connector=shape.connector,
        enabled=shape.enabled,
        concurrency=shape.concurrency,
        covers=shape.covers,
        link=shape.link,
        actions=shape.actions,
        connection=connection,
        path=str(path),
    )
    return policy, []


def load_resource(path: Path) -> ResourcePolicy:
    """Load one resource file; the connector must exist and accept the connection settings."""
    policy, errors = _load(path)
    if errors:
        raise errors[0]
    assert policy is not None
    return policy


def resource_files(policies_dir: Path, *, examples: bool = False) -> list[Path]:
    """The resource files in ``policies_dir`` (``*.toml`` but ``org.toml``), sorted.

    ``*.example.toml`` files are documentation: checked, never loaded (unless ``examples``).
    """
    if not policies_dir.is_dir():
        return []
    return sorted(
        p
        for p in policies_dir.glob("*.toml")
        if p.name != ORG_FILE and (examples or not p.name.endswith(EXAMPLE_SUFFIX))
    )


def load_policy_set(policies_dir: Path) -> PolicySet:
    """Load ``org.toml`` and every resource file; the first bad file raises ``PolicyFileError``."""
    org = load_org(policies_dir)
    resources = {p.stem: load_resource(p) for p in resource_files(policies_dir)}
    return PolicySet(org=org, resources=MappingProxyType(resources))


def check_all(policies_dir: Path) -> list[PolicyFileError]:
    """Every error in every file (for ``gateway policy check``); empty when all are valid."""
    errors: list[PolicyFileError] = []
    org_path = policies_dir / ORG_FILE
    if org_path.exists():
        text = org_path.read_text(encoding="utf-8")
        try:
            OrgPolicy.model_validate(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            errors.append(_toml_error(org_path, text, exc))
        except ValidationError as exc:
            errors += _validation_errors(org_path, text, exc)
    for path in resource_files(policies_dir, examples=True):
        errors += _load(path)[1]
    return errors


def json_schema() -> dict[str, Any]:
    """A JSON Schema for resource files (connection settings per connector, where known)."""
    from connectors.registry import available

    schema = ResourceFile.model_json_schema()
    variants = []
    for name, cls in sorted(available().items()):
        conn = cls.Config.model_json_schema()
        variants.append(
            {
                "if": {"properties": {"connector": {"const": name}}},
                "then": {"properties": {"connection": conn}},
            }
        )
    if variants:
        schema["allOf"] = variants
    schema["title"] = "Credential gateway resource policy"
    return schema


def schema_text() -> str:
    """The JSON Schema as text."""
    return json.dumps(json_schema(), indent=2, sort_keys=True)


def reload_hook(rt: Runtime) -> None:
    """SIGHUP: load the set again; a bad file raises and the last good set stays."""
    fresh = load_policy_set(Path(rt.settings.policies_dir))
    rt.policies = fresh  # org.toml and every resource, swapped together
    log.info("reloaded org.toml and %d resource policies", len(fresh.resources))
