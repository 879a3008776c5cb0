"""A recording connector for engine tests: a small in-memory (or on-disk) target.

It behaves like a real directory where it matters to the engine: accounts must exist to be
found, a disable is reported in ``owned`` and undone only when owned, a down target raises
``TransientError`` (with ``retry_after``), a poison account raises ``RejectedError``. Every
``apply`` is recorded so tests can count deliveries and see which password arrived.
With ``state_file`` set, the target lives in a JSON file, so it survives a killed process.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr

from connectors.base import AccountRef, DesiredState, Identity, PasswordLimit
from gateway.errors import NotFoundError, RejectedError, TargetConfigError, TransientError

NAME = "recording"


class RecordingConfig(BaseModel):
    """``[connection]`` of a recording resource."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = "default"
    state_file: str = ""
    delay: float = 0.0


class Target:
    """The recorded target: accounts, and every apply in order."""

    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, Any]] = {}
        self.applies: list[dict[str, Any]] = []
        self.down = False
        self.retry_after: float | None = None
        self.poison: set[str] = set()
        self.hang = False
        self.misconfigured = False  # apply() raises TargetConfigError (bad credentials)

    def add(self, username: str, password: str = "initial") -> None:
        """Create an account at the target."""
        self.accounts[username] = {"password": password, "disabled": False, "force": False}

    def applies_for(self, username: str) -> list[dict[str, Any]]:
        """The recorded applies for one account."""
        return [a for a in self.applies if a["key"] == username]

    def dump(self) -> dict[str, Any]:
        """JSON-able state."""
        return {"accounts": self.accounts, "applies": self.applies, "poison": sorted(self.poison)}

    def load(self, data: Mapping[str, Any]) -> None:
        """Replace the state from ``dump()`` output."""
        self.accounts = dict(data.get("accounts", {}))
        self.applies = list(data.get("applies", []))
        self.poison = set(data.get("poison", []))


TARGETS: dict[str, Target] = {}


def target(name: str = "default") -> Target:
    """The shared target called ``name`` (created on first use)."""
    return TARGETS.setdefault(name, Target())


@contextmanager
def on_disk(path: str) -> Iterator[Target]:
    """Load a file-backed target under an exclusive lock and save it afterwards."""
    file = Path(path)
    file.touch(exist_ok=True)
    with open(f"{path}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        t = Target()
        text = file.read_text(encoding="utf-8")
        if text:
            t.load(json.loads(text))
        yield t
        fresh = json.dumps(t.dump())
        if fresh != text:  # written atomically: a process killed here leaves the old state
            tmp = file.with_suffix(".tmp")
            tmp.write_text(fresh, encoding="utf-8")
            os.replace(tmp, file)


class RecordingConnector:
    """A test connector that records what the dispatcher asks of it."""

    name: ClassVar[str] = NAME
    Config: ClassVar[type[BaseModel]] = RecordingConfig
    password_limits: ClassVar[tuple[PasswordLimit, ...]] = (
        PasswordLimit(target="recording", max_length=40),
    )
    allowed_actions: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "password_change": ("set", "maintain"),
        "expired": ("disable", "maintain", "force_change"),
        "locked": ("disable", "maintain"),
        "unlocked": ("restore", "maintain"),
    }

    def __init__(self, resource: str, config: BaseModel) -> None:
        assert isinstance(config, RecordingConfig)
        self.resource = resource
        self.config = config
        self.closed = False

    @contextmanager
    def _target(self) -> Iterator[Target]:
        if self.config.state_file:
            with on_disk(self.config.state_file) as t:
                yield t
        else:
            yield target(self.config.target)

    async def find_account(self, who: Identity) -> AccountRef | None:
        """Link by username."""
        with self._target() as t:
            if t.down:
                raise TransientError("target down", retry_after=t.retry_after)
            return AccountRef(who.username) if who.username in t.accounts else None

    async def apply(
        self, account: AccountRef, desired: DesiredState, password: SecretStr | None
    ) -> frozenset[str]:
        """Bring the account to ``desired``; returns what the gateway now owns."""
        if self.config.delay:
            await asyncio.sleep(self.config.delay)
        with self._target() as t:
            hang = t.hang or os.environ.get("RECORDING_HANG") == "1"
        while hang:
            await asyncio.sleep(3600)
        with self._target() as t:
            return self._apply(t, account, desired, password)

    def _apply(
        self, t: Target, account: AccountRef, desired: DesiredState, password: SecretStr | None
    ) -> frozenset[str]:
        if t.down:
            raise TransientError("target down", retry_after=t.retry_after)
        if t.misconfigured:
            raise TargetConfigError("invalid credentials", resource=self.resource)
        if account.key in t.poison:
            raise RejectedError("the target refused the value", resource=self.resource)
        acc = t.accounts.get(account.key)
        if acc is None:
            raise NotFoundError("no such account", resource=self.resource)
        owned = set(desired.owned)
        if password is not None:
            acc["password"] = password.get_secret_value()
        if desired.disabled and not acc["disabled"]:
            acc["disabled"] = True
            owned.add("disabled")
        elif not desired.disabled:
            if "disabled" in owned and acc["disabled"]:
                acc["disabled"] = False
            owned.discard("disabled")
        acc["force"] = desired.force_change
        t.applies.append(
            {
                "key": account.key,
                "version": desired.version,
                "password": None if password is None else password.get_secret_value(),
                "disabled": desired.disabled,
                "force_change": desired.force_change,
                "temporary": desired.temporary,
            }
        )
        return frozenset(owned)

    async def check(self) -> None:
        """Health: fails while the target is down."""
        with self._target() as t:
            if t.down:
                raise TransientError("target down")

    async def aclose(self) -> None:
        """Nothing to release; remembered so tests can see it."""
        self.closed = True


def policy_toml(
    *,
    target_name: str = "default",
    state_file: str = "",
    delay: float = 0.0,
    enabled: bool = True,
    concurrency: int = 4,
    locked: str = "disable",
    expired: str = "force_change",
    unlocked: str = "restore",
    password_change: str = "set",
    groups: tuple[str, ...] = (),
) -> str:
    """A resource file for the recording connector."""
    group_list = ", ".join(json.dumps(g) for g in groups)
    return f"""connector = "recording"
enabled = {"true" if enabled else "false"}
concurrency = {concurrency}

[covers]
kinds = ["user"]
groups = [{group_list}]

[actions]
password_change = "{password_change}"
expired = "{expired}"
locked = "{locked}"
unlocked = "{unlocked}"

[connection]
target = "{target_name}"
state_file = "{state_file}"
delay = {delay}
"""


@contextmanager
def registered() -> Iterator[type[RecordingConnector]]:
    """Register the recording connector for the duration of a test."""
    from connectors import registry

    registry.register(NAME, RecordingConnector)
    try:
        yield RecordingConnector
    finally:
        registry.unregister(NAME)
        TARGETS.clear()


def write_policy(settings: Any, name: str, text: str) -> None:
    """Write a resource file into the settings' policies directory."""
    (Path(settings.policies_dir) / f"{name}.toml").write_text(text, encoding="utf-8")
