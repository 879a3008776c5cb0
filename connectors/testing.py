"""The contract every connector meets; each connector's tests inherit ``ConnectorContract``.

A subclass provides fixtures, against a real (or, for the cloud APIs, a strict fake) target:

- ``connector``: a connector instance for the target;
- ``target``: a ``ContractTarget`` that creates accounts at the target and observes them
  (can this password sign in? is the account disabled? disable it by hand, as an admin would).

The contract then checks what the dispatcher relies on: the class is a valid plugin, the
constructor does no I/O, accounts are found by identity, ``apply`` is idempotent, a disable
is undone only when the gateway owns it, and failures arrive as the gateway's error tree.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import SecretStr

from connectors.base import AccountRef, Connector, DesiredState, Identity
from connectors.registry import validate
from gateway.errors import ConnectorError, NotFoundError

T = TypeVar("T")


class ContractTarget(Protocol):
    """What the contract needs to observe and prepare the target."""

    def create(self, username: str, email: str, password: str) -> None: ...

    def can_sign_in(self, username: str, password: str) -> bool: ...

    def is_disabled(self, username: str) -> bool: ...

    def disable_by_hand(self, username: str) -> None: ...


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion (the contract does not need an async test plugin)."""
    return asyncio.run(coro)


class ConnectorContract:
    """Inherit this in ``tests/connectors/test_<name>.py`` and provide the two fixtures."""

    supports_disable: ClassVar[bool] = True
    supports_hand_disable: ClassVar[bool] = True

    @staticmethod
    def _who() -> tuple[str, str, str, str]:
        tag = uuid.uuid4().hex[:10]
        return f"ct{tag}", f"ct{tag}@example.org", f"Contract-Old-{tag}!", f"Contract-New-{tag}!"

    async def _link(self, connector: Connector, user: str, mail: str) -> AccountRef:
        ref = await connector.find_account(Identity(username=user, email=mail))
        assert ref is not None, "find_account did not find an existing account"
        return ref

    def test_plugin_is_valid(self, connector: Connector) -> None:
        """The class passes the registry's validation under its own name."""
        cls = type(connector)
        assert validate(cls.name, cls) is cls
        for trigger, values in getattr(cls, "allowed_actions", {}).items():
            assert values, f"no allowed actions for {trigger}"

    def test_constructor_does_no_io(self, connector: Connector) -> None:
        """A second instance on the same config is built without touching the network."""
        cls: Any = type(connector)
        config = getattr(connector, "config", None)
        if config is None:
            return
        cls("contract-noio", config)

    def test_find_account(self, connector: Connector, target: ContractTarget) -> None:
        """An existing account is found; an unknown one gives None."""
        user, mail, old, _ = self._who()
        target.create(user, mail, old)

        async def go() -> None:
            try:
                assert (await self._link(connector, user, mail)).key
                ghost = Identity(username="nobody" + user, email="nobody" + mail)
                assert await connector.find_account(ghost) is None
            finally:
                await connector.aclose()

        run(go())

    def test_password_is_set_and_idempotent(
        self, connector: Connector, target: ContractTarget
    ) -> None:
        """The new password works, the old one no longer does; delivering twice succeeds."""
        user, mail, old, new = self._who()
        target.create(user, mail, old)

        async def go() -> None:
            try:
                ref = await self._link(connector, user, mail)
                for _ in range(2):
                    await connector.apply(ref, DesiredState(version=1), SecretStr(new))
            finally:
                await connector.aclose()

        run(go())
        assert target.can_sign_in(user, new)
        assert not target.can_sign_in(user, old)

    def test_disable_then_restore(self, connector: Connector, target: ContractTarget) -> None:
        """Disabling is reported in ``owned`` and undone by a state that is not disabled."""
        if not self.supports_disable:
            return
        user, mail, old, _ = self._who()
        target.create(user, mail, old)

        async def go() -> None:
            try:
                ref = await self._link(connector, user, mail)
                owned = await connector.apply(ref, DesiredState(version=1, disabled=True), None)
                assert "disabled" in owned
                assert target.is_disabled(user)
                again = await connector.apply(
                    ref, DesiredState(version=2, disabled=True, owned=owned), None
                )
                assert "disabled" in again
                back = await connector.apply(ref, DesiredState(version=3, owned=again), None)
                assert "disabled" not in back
            finally:
                await connector.aclose()

        run(go())
        assert not target.is_disabled(user)
        assert target.can_sign_in(user, old)

    def test_hand_disable_is_left_alone(self, connector: Connector, target: ContractTarget) -> None:
        """An account an admin disabled at the target stays disabled on restore."""
        if not (self.supports_disable and self.supports_hand_disable):
            return
        user, mail, old, _ = self._who()
        target.create(user, mail, old)
        target.disable_by_hand(user)

        async def go() -> None:
            try:
                ref = await self._link(connector, user, mail)
                owned = await connector.apply(ref, DesiredState(version=1), None)
                assert "disabled" not in owned
            finally:
                await connector.aclose()

        run(go())
        assert target.is_disabled(user)

    def test_missing_account_is_not_found(self, connector: Connector) -> None:
        """Applying to an account that does not exist raises NotFoundError (a ConnectorError)."""
        ghost = AccountRef(self._ghost_key(connector))

        async def go() -> None:
            try:
                await connector.apply(ghost, DesiredState(version=1, disabled=True), None)
            finally:
                await connector.aclose()

        try:
            run(go())
        except NotFoundError:
            return
        except ConnectorError as exc:
            raise AssertionError(f"expected NotFoundError, got {type(exc).__name__}") from exc
        raise AssertionError("applying to a missing account did not fail")

    def _ghost_key(self, connector: Connector) -> str:
        """A key that names no account at the target (override when keys have a shape)."""
        return f"missing-{uuid.uuid4().hex}"
