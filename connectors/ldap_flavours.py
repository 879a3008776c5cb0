"""What each directory flavour writes to reach a desired state (pure: no I/O here).

========  ============================  ============================  ========================
flavour   disable / restore             must change / clear           password
========  ============================  ============================  ========================
openldap  pwdAccountLockedTime          pwdReset TRUE / delete        RFC 3062 or userPassword
          = 000001010000Z / delete
389ds     nsAccountLock TRUE / delete   passwordExpirationTime 1970   RFC 3062 or userPassword
                                        / delete
ad        userAccountControl bit 0x2    pwdLastSet 0 / -1             unicodePwd (TLS only)
          set / clear (+ lockoutTime 0)
========  ============================  ============================  ========================

``Flavour.plan()`` compares the entry as read with the desired state and returns only the
changes needed: ``before`` the password step (undoing the gateway's own disable, so a
verification bind can work), ``after`` it, and the new ``owned`` set. Ownership: a disable is the
gateway's when ``owned`` says so, or, for a redelivery whose ``owned`` was lost, when the entry
carries the gateway's lock value and ``modifiersName`` is the gateway's bind DN (OpenLDAP and
389-ds keep it; AD does not, so there only ``owned`` counts). A disable someone else made is
never claimed and never undone. OpenLDAP's ppolicy drops ``pwdAccountLockedTime`` on every
password change, so a permanent lock present before a new password is written back after it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base import DesiredState

DISABLED = "disabled"
FORCE_CHANGE = "force_change"
PPOLICY_OID = "1.3.6.1.4.1.42.2.27.8.5.1"
PASSWD_MODIFY_OID = "1.3.6.1.4.1.4203.1.11.1"
OPENLDAP_LOCK = "000001010000Z"
UF_ACCOUNTDISABLE = 0x2
# AD bind sub-codes that prove the password itself was right (must change, expired, disabled,
# account expired); 52e (wrong password) and 775 (locked out, any password) prove nothing.
AD_RIGHT_PASSWORD = frozenset({"773", "532", "533", "701"})

Changes = dict[str, list[Any]]
Entry = Mapping[str, Sequence[str]]


def same_dn(a: str, b: str) -> bool:
    """Compare two DNs loosely (case and spaces around separators)."""

    def norm(dn: str) -> str:
        return re.sub(r"\s*([,=+])\s*", r"\1", dn.strip()).lower()

    return bool(a) and norm(a) == norm(b)


def _first(entry: Entry, attr: str) -> str:
    values = entry.get(attr) or []
    return str(values[0]) if values else ""


@dataclass(frozen=True)
class Plan:
    """Attribute replacements before and after the password step, and the new owned set."""

    before: Changes = field(default_factory=dict)
    after: Changes = field(default_factory=dict)
    owned: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Flavour:
    """The attributes and values one directory product uses (OpenLDAP and 389-ds style)."""

    name: str
    lock_attr: str
    lock_value: str
    must_change_attr: str
    must_change_value: str
    must_change_clear: tuple[str, ...] = ()
    clear_on_password: bool = True
    password_clears_lock: bool = False

    @property
    def read_attrs(self) -> tuple[str, ...]:
        """What ``plan`` reads first."""
        return (self.lock_attr, self.must_change_attr, "modifiersName")

    def is_disabled(self, entry: Entry) -> bool:
        """True when the entry is disabled now, by anyone."""
        return bool(_first(entry, self.lock_attr))

    def has_gateway_lock(self, entry: Entry) -> bool:
        """True when the disable present has the value the gateway writes."""
        return _first(entry, self.lock_attr).upper() == self.lock_value.upper()

    def last_modifier(self, entry: Entry) -> str:
        """The DN that last modified the entry ('' when the directory does not say)."""
        return _first(entry, "modifiersName")

    def disable(self, entry: Entry) -> Changes:
        """Changes that disable the entry."""
        return {self.lock_attr: [self.lock_value]}

    def restore(self, entry: Entry) -> Changes:
        """Changes that undo the gateway's disable."""
        return {self.lock_attr: []}

    def must_change_now(self, entry: Entry) -> bool:
        """True when the entry already demands a new password."""
        return _first(entry, self.must_change_attr).upper() == self.must_change_value.upper()

    def after_password(self, entry: Entry) -> Changes:
        """Extra changes whenever a new password is set (none by default)."""
        return {}

    def plan(self, entry: Entry, desired: DesiredState, password_set: bool, me: str) -> Plan:
        """The changes that bring ``entry`` to ``desired`` (``me`` is the gateway's bind DN)."""
        owned = set(desired.owned)
        before: Changes = {}
        after: Changes = {}
        mine = same_dn(self.last_modifier(entry), me)
        disabled_now = self.is_disabled(entry)
        ours = disabled_now and self.has_gateway_lock(entry) and (DISABLED in owned or mine)
        rewrite = password_set and self.password_clears_lock and self.has_gateway_lock(entry)
        if desired.disabled:
            # a lock that the password change will drop and that is not a permanent one
            vanishes = disabled_now and password_set and self.password_clears_lock
            if not disabled_now or ours or (vanishes and not self.has_gateway_lock(entry)):
                owned.add(DISABLED)
            else:
                owned.discard(DISABLED)  # someone else's disable: never claimed
            if not disabled_now or vanishes:
                after.update(self.disable(entry))
        else:
            if ours:
                before.update(self.restore(entry))
            elif disabled_now and rewrite:
                after.update(self.disable(entry))  # keep an administrator's permanent lock
            owned.discard(DISABLED)
        if password_set:
            after.update(self.after_password(entry))
        must = desired.force_change or (password_set and desired.temporary)
        set_now = self.must_change_now(entry)
        if must:
            if password_set or not set_now:
                after[self.must_change_attr] = [self.must_change_value]
            if password_set or not set_now or mine:
                owned.add(FORCE_CHANGE)
        else:
            if set_now and (
                (password_set and self.clear_on_password)
                or (not password_set and (FORCE_CHANGE in owned or mine))
            ):
                after[self.must_change_attr] = list(self.must_change_clear)
            owned.discard(FORCE_CHANGE)
        return Plan(before=before, after=after, owned=frozenset(owned))

    def history_refusal(self, result: Mapping[str, Any]) -> bool:
        """True when a refused password change says the value was used before."""
        controls = result.get("controls") or {}
        ctrl = controls.get(PPOLICY_OID) if isinstance(controls, Mapping) else None
        if ctrl is not None and ppolicy_error(ctrl.get("value")) == 8:
            return True
        message = str(result.get("message", "")).lower()
        return "history" in message or "not being changed from existing value" in message

    def binds_gateway(self, result: Mapping[str, Any]) -> bool:
        """True when ppolicy treated the gateway like a user changing its own password (too
        young, change not allowed, old password needed): the bind DN lacks admin rights."""
        controls = result.get("controls") or {}
        ctrl = controls.get(PPOLICY_OID) if isinstance(controls, Mapping) else None
        return ctrl is not None and ppolicy_error(ctrl.get("value")) in (3, 4, 7)

    def same_as_current(self, result: Mapping[str, Any]) -> bool:
        """True when the server said the new value equals the current one (OpenLDAP wording)."""
        return "not being changed from existing value" in str(result.get("message", "")).lower()

    def bind_proves_password(self, ok: bool, result: Mapping[str, Any]) -> bool:
        """Whether a verification bind's outcome shows the password is the current one."""
        return ok


@dataclass(frozen=True)
class ActiveDirectory(Flavour):
    """Active Directory (and Samba AD): userAccountControl, pwdLastSet, unicodePwd."""

    @property
    def read_attrs(self) -> tuple[str, ...]:
        """userAccountControl holds the disable bit among other flags."""
        return ("userAccountControl", "pwdLastSet", "lockoutTime")

    def _uac(self, entry: Entry) -> int:
        return int(_first(entry, "userAccountControl") or "512")

    def is_disabled(self, entry: Entry) -> bool:
        """Bit 0x2 of userAccountControl."""
        return bool(self._uac(entry) & UF_ACCOUNTDISABLE)

    def has_gateway_lock(self, entry: Entry) -> bool:
        """AD has one disable bit; whose it is shows only in ``owned``."""
        return self.is_disabled(entry)

    def last_modifier(self, entry: Entry) -> str:
        """AD keeps no modifiersName."""
        return ""

    def disable(self, entry: Entry) -> Changes:
        """Set bit 0x2, keeping every other flag."""
        return {"userAccountControl": [str(self._uac(entry) | UF_ACCOUNTDISABLE)]}

    def restore(self, entry: Entry) -> Changes:
        """Clear bit 0x2 and any lockout."""
        return {
            "userAccountControl": [str(self._uac(entry) & ~UF_ACCOUNTDISABLE)],
            "lockoutTime": ["0"],
        }

    def after_password(self, entry: Entry) -> Changes:
        """A reset also clears the target's own lockout."""
        if _first(entry, "lockoutTime") not in ("", "0"):
            return {"lockoutTime": ["0"]}
        return {}

    def history_refusal(self, result: Mapping[str, Any]) -> bool:
        """0000052D is AD's password-restriction refusal (history among others)."""
        return str(result.get("message", "")).upper().startswith("0000052D")

    def binds_gateway(self, result: Mapping[str, Any]) -> bool:
        """AD does not send ppolicy controls."""
        return False

    def same_as_current(self, result: Mapping[str, Any]) -> bool:
        """AD never says so; only a bind can tell."""
        return False

    def bind_proves_password(self, ok: bool, result: Mapping[str, Any]) -> bool:
        """Success, or a refusal sub-code that AD gives only after checking the password."""
        if ok:
            return True
        found = re.search(r"data ([0-9a-f]+)", str(result.get("message", "")))
        return found is not None and found.group(1) in AD_RIGHT_PASSWORD


FLAVOURS: dict[str, Flavour] = {
    "openldap": Flavour(
        name="openldap",
        lock_attr="pwdAccountLockedTime",
        lock_value=OPENLDAP_LOCK,
        must_change_attr="pwdReset",
        must_change_value="TRUE",
        password_clears_lock=True,
    ),
    "389ds": Flavour(
        name="389ds",
        lock_attr="nsAccountLock",
        lock_value="TRUE",
        must_change_attr="passwordExpirationTime",
        must_change_value="19700101000000Z",
        clear_on_password=False,
    ),
    "ad": ActiveDirectory(
        name="ad",
        lock_attr="userAccountControl",
        lock_value="",
        must_change_attr="pwdLastSet",
        must_change_value="0",
        must_change_clear=("-1",),
        clear_on_password=False,
    ),
}


def ppolicy_error(value: object) -> int | None:
    """The ``error`` field of a ppolicy response control value (BER), or None.

    PasswordPolicyResponseValue ::= SEQUENCE { warning [0] ... OPTIONAL,
    error [1] ENUMERATED OPTIONAL }; ldap3 hands over the raw bytes.
    """
    if not isinstance(value, bytes | bytearray) or len(value) < 2 or value[0] != 0x30:
        return None
    i, end = 2, 2 + value[1]
    while i + 1 < min(end, len(value)):
        tag, length = value[i], value[i + 1]
        if tag == 0x81 and length == 1 and i + 2 < len(value):
            return int(value[i + 2])
        i += 2 + length
    return None
