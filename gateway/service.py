"""CredentialService: the one API every front-end calls; all rules are applied here.

Each operation is one transaction holding the account change, its audit row and whatever the
listeners (propagation, mail) add. Authentication failures are uniform: unknown, wrong, locked,
expired and disabled all raise ``AuthenticationFailed``; the audit row keeps the real reason.
"""

from __future__ import annotations

from gateway.service_accounts import AccountOps
from gateway.service_base import SEED_PURPOSE, AuthResult, Grace, identity_key
from gateway.service_mfa import MfaOps
from gateway.service_state import StateOps

__all__ = ["SEED_PURPOSE", "AuthResult", "CredentialService", "Grace", "identity_key"]


class CredentialService(AccountOps, StateOps, MfaOps):
    """Accounts, passwords, expiry, lockout and MFA, one transaction per operation.

    The parts live in ``service_auth`` (authenticate), ``service_passwords`` (changes,
    temporary passwords, tokens), ``service_state`` (lock, unlock, expire, scheduled jobs),
    ``service_mfa`` (TOTP, recovery e-mail) and ``service_accounts`` (CRUD, audit), all on
    ``service_base.ServiceBase``.
    """
