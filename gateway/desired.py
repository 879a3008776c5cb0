"""The one rule that turns an account's state and a resource's actions into a DesiredState.

Both the dispatcher (what it delivers) and ``gateway policy plan`` (what it would deliver) call
``desired_state``; nothing else decides what a target should look like.

- ``disabled``: the account is disabled in the gateway; or locked with a disabling ``locked``
  action; or expired with a disabling ``expired`` action; or it was disabled by the gateway
  earlier (``disabled`` in ``owned``) and ``unlocked = "maintain"`` says to leave it so.
- ``force_change``: expired with ``expired = "force_change"``, or a temporary password pending.
- ``temporary``: the pending password is a temporary (must-change) one.
- the password is sent only when one is pending and ``password_change = "set"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.base import DesiredState
from gateway.policies import DISABLING, Actions


@dataclass(frozen=True)
class AccountState:
    """What the gateway knows about an account, as stored on its desired-state row."""

    locked: bool = False
    expired: bool = False
    account_disabled: bool = False
    password_pending: bool = False
    temporary: bool = False


def desired_state(
    state: AccountState, actions: Actions, *, version: int, owned: frozenset[str] = frozenset()
) -> DesiredState:
    """The state a target should be brought to for ``state`` under ``actions``."""
    locked_off = state.locked and actions.locked in DISABLING
    expired_off = state.expired and actions.expired in DISABLING
    kept_off = (
        "disabled" in owned
        and actions.unlocked == "maintain"
        and not state.locked
        and not state.expired
    )
    disabled = state.account_disabled or locked_off or expired_off or kept_off
    sends_password = state.password_pending and actions.password_change == "set"
    temporary = sends_password and state.temporary
    force_change = (state.expired and actions.expired == "force_change") or temporary
    return DesiredState(
        version=version,
        disabled=disabled,
        force_change=force_change,
        temporary=temporary,
        owned=owned,
    )


def sends_password(actions: Actions) -> bool:
    """True when this resource receives new passwords (``password_change = "set"``)."""
    return actions.password_change == "set"
