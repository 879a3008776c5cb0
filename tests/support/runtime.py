"""Build a gateway runtime for a test: fresh database, key file, policies, frozen clock."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.clock import FrozenClock
from gateway.runtime import Runtime, build
from gateway.sealing import create_key_file
from gateway.settings import Settings
from gateway.store.engine import make_engine
from gateway.store.migrate import upgrade

DEFAULT_ORG = """
[lockout]
threshold = 5
window_minutes = 15
duration_minutes = 30
"""


def make_settings(tmp: Path, db_url: str, org_toml: str = DEFAULT_ORG, **extra: object) -> Settings:
    """Settings rooted in ``tmp`` with an ``org.toml`` and a migrated database."""
    policies = tmp / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "org.toml").write_text(org_toml, encoding="utf-8")
    key = tmp / "secret.key"
    create_key_file(key)
    os.environ.pop("GATEWAY_CONFIG", None)
    settings = Settings(
        database={"url": db_url},  # type: ignore[arg-type]
        secrets={"key_file": key},  # type: ignore[arg-type]
        mail={"maildir": tmp / "mail"},  # type: ignore[arg-type]
        policies_dir=policies,
        **extra,  # type: ignore[arg-type]
    )
    engine = make_engine(db_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return settings


def make_runtime(settings: Settings, clock: FrozenClock | None = None) -> Runtime:
    """A runtime on ``settings`` with a frozen clock."""
    return build(settings, clock=clock or FrozenClock())
