"""Connector plugins, found through the entry-point group ``gateway.connectors``.

Each entry point names a connector class. It is validated when it is loaded: it must import,
its ``name`` must equal the entry-point name, it must have a pydantic ``Config`` model, an
``allowed_actions`` mapping and the async operations of ``connectors.base.Connector``. A broken
plugin is reported by name (``PolicyFileError``), never swallowed. Tests may ``register`` a class
directly; it then takes precedence over an entry point of the same name.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, cast

from pydantic import BaseModel

from connectors.base import Connector
from gateway.errors import PolicyFileError

GROUP = "gateway.connectors"
OPERATIONS = ("find_account", "apply", "check", "aclose")

_registered: dict[str, type[Any]] = {}
_cache: dict[str, type[Any]] = {}


def _broken(name: str, why: str) -> PolicyFileError:
    return PolicyFileError(f"plugin {name}", "entry point", f"connector plugin {name!r} {why}")


def validate(name: str, cls: Any) -> type[Connector]:
    """Check that ``cls`` is a usable connector class named ``name``; return it."""
    if not inspect.isclass(cls):
        raise _broken(name, f"is not a class ({type(cls).__name__})")
    if getattr(cls, "name", None) != name:
        raise _broken(name, f"declares name {getattr(cls, 'name', None)!r}, expected {name!r}")
    config = getattr(cls, "Config", None)
    if not (inspect.isclass(config) and issubclass(config, BaseModel)):
        raise _broken(name, "has no pydantic Config model")
    allowed = getattr(cls, "allowed_actions", None)
    if not isinstance(allowed, Mapping) or not all(
        isinstance(v, tuple) and all(isinstance(x, str) for x in v) for v in allowed.values()
    ):
        raise _broken(name, "has no allowed_actions mapping of trigger -> tuple of values")
    for op in OPERATIONS:
        if not inspect.iscoroutinefunction(getattr(cls, op, None)):
            raise _broken(name, f"lacks the async operation {op}()")
    return cast("type[Connector]", cls)


def register(name: str, cls: type[Any]) -> None:
    """Register a connector class by hand (tests, embedding); validated now."""
    _registered[name] = validate(name, cls)


def unregister(name: str) -> None:
    """Forget a class registered by hand."""
    _registered.pop(name, None)
    _cache.pop(name, None)


def names() -> list[str]:
    """Every connector name known (entry points and hand-registered), sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)} | set(_registered))


def connector_class(name: str) -> type[Connector]:
    """The validated connector class for ``name``; a broken or unknown plugin raises."""
    if name in _registered:
        return _registered[name]
    if name in _cache:
        return _cache[name]
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        known = ", ".join(names()) or "none installed"
        raise PolicyFileError(
            f"plugin {name}", "entry point", f"unknown connector {name!r} (known: {known})"
        )
    try:
        loaded = found[0].load()
    except Exception as exc:  # any import failure names the plugin
        raise _broken(name, f"failed to load ({found[0].value}): {type(exc).__name__}") from exc
    cls = validate(name, loaded)
    _cache[name] = cls
    return cls


def available() -> dict[str, type[Connector]]:
    """Every connector class that loads cleanly (broken ones are left out here)."""
    out: dict[str, type[Connector]] = {}
    for name in names():
        try:
            out[name] = connector_class(name)
        except PolicyFileError:
            continue
    return out


def build(resource: str, connector: str, config: BaseModel, link: Mapping[str, str]) -> Connector:
    """Construct a connector instance (no I/O); ``link`` is passed when the class accepts it."""
    cls: Any = connector_class(connector)
    params = inspect.signature(cls).parameters
    if "link" in params:
        instance: Connector = cls(resource, config, link=dict(link))
    else:
        instance = cls(resource, config)
    return instance
