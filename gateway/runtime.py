"""Builds the running pieces (store, hasher, sealer, policies, service) from settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.clock import Clock
from gateway.errors import ConfigError
from gateway.hashing import Hasher
from gateway.orgpolicy import OrgPolicy, load_org
from gateway.sealing import Sealer
from gateway.service import CredentialService
from gateway.settings import Settings
from gateway.store.engine import Store, make_engine
from gateway.store.migrate import is_current


@dataclass
class Runtime:
    """Everything one gateway process runs on."""

    settings: Settings
    store: Store
    hasher: Hasher
    sealer: Sealer
    service: CredentialService
    org_policy: OrgPolicy
    extras: dict[str, Any] = field(default_factory=dict)

    def org(self) -> OrgPolicy:
        """The organisation rules in force (swapped on reload)."""
        return self.org_policy

    def close(self) -> None:
        """Release pools and connections."""
        self.service.close()
        self.hasher.close()
        self.store.dispose()


def build(settings: Settings, *, clock: Clock | None = None, check_schema: bool = True) -> Runtime:
    """Open the store and load keys and policies; refuses an unmigrated database."""
    key_file = Path(settings.secrets.key_file)
    if not key_file.exists():
        raise ConfigError(f"key file {key_file} does not exist; run `gateway init` first")
    sealer = Sealer.from_file(key_file)
    store = Store(make_engine(settings.database.url, settings.database.pool_size))
    if check_schema and not is_current(store.engine):
        store.dispose()
        raise ConfigError("the database schema is not current; run `gateway init`")
    org_policy = load_org(Path(settings.policies_dir))
    hasher = Hasher(settings.hashing)
    holder: dict[str, Runtime] = {}
    service = CredentialService(
        store,
        hasher,
        sealer,
        lambda: holder["rt"].org_policy,
        clock=clock,
        db_workers=settings.database.pool_size,
    )
    rt = Runtime(settings, store, hasher, sealer, service, org_policy)
    holder["rt"] = rt
    _wire(rt)
    return rt


def _wire(rt: Runtime) -> None:
    """Attach each area's listeners and providers to the service (one line per area)."""
    # areas: propagation outbox, mail notifications, RADIUS session tracking
