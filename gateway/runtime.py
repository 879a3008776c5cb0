"""Builds the running pieces (store, hasher, sealer, policies, service) from settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.clock import Clock
from gateway.errors import ConfigError
from gateway.hashing import Hasher
from gateway.orgpolicy import OrgPolicy
from gateway.outbox import attach as attach_outbox
from gateway.policies import PolicySet, load_policy_set
from gateway.sealing import Sealer
from gateway.service import CredentialService
from gateway.settings import Settings
from gateway.store.engine import Store, make_engine
from gateway.store.migrate import is_current
from gateway.web.sessions import SessionListener


@dataclass
class Runtime:
    """Everything one gateway process runs on."""

    settings: Settings
    store: Store
    hasher: Hasher
    sealer: Sealer
    service: CredentialService
    policies: PolicySet
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def org_policy(self) -> OrgPolicy:
        """The organisation rules in force (part of the policy set, swapped on reload)."""
        return self.policies.org

    @org_policy.setter
    def org_policy(self, value: OrgPolicy) -> None:
        self.policies = self.policies.model_copy(update={"org": value})

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
    policies = _load_policies(settings, store)
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
    rt = Runtime(settings, store, hasher, sealer, service, policies)
    holder["rt"] = rt
    _wire(rt)
    return rt


def _wire(rt: Runtime) -> None:
    """Attach each area's listeners and providers to the service (one line per area)."""
    from gateway import mail
    from gateway.radius import listener as radius_listener

    attach_outbox(rt)  # propagation rows + target password limits
    rt.service.listeners.append(SessionListener())  # web: end sessions on password change
    radius_listener.wire_runtime(rt)  # RADIUS: sessions store, success-cache invalidation
    mail.wire(rt)  # mail: notifications queued with each change


def _load_policies(settings: Settings, store: Store) -> PolicySet:
    """The resource policies; a bad file at start-up is a configuration error (exit 2)."""
    from gateway.errors import PolicyFileError

    try:
        return load_policy_set(Path(settings.policies_dir))
    except PolicyFileError as exc:
        store.dispose()
        raise ConfigError(f"invalid policy file: {exc}") from None
