"""Access-Request decisions: PAP through the service, the resource's policy actions, and MFA.

The rules live in ``CredentialService``; this module only translates:

* PAP -> ``authenticate(via="radius:<resource>")``: unknown, wrong, locked, disabled and expired
  (action ``reject``) all end in the same Access-Reject without a Reply-Message;
* expired with action ``grace`` -> the service's ``Grace`` (N logins / N days); an accept in grace
  carries the policy's grace message;
* a must-change (temporary) password -> Access-Reject with the policy's message, only after the
  password was verified, so it leaks nothing to someone without the password;
* TOTP for enrolled accounts: ``append`` (the code follows the password) or ``challenge``
  (Access-Challenge with a State bound to this login, used once, expiring). Codes go through
  ``service.verify_totp``: each accepted once, wrong codes count towards the MFA limit;
* accounts the resource does not cover (kinds, groups) are rejected alike;
* group -> reply attribute mappings are added to an Access-Accept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors.radius import RadiusConfig
from gateway.audit import Actor
from gateway.errors import AuthenticationFailed, NotFound, Overloaded
from gateway.radius import wire
from gateway.radius.cache import Hit, Success, SuccessCache, SuccessLog
from gateway.radius.challenge import ChallengeStore
from gateway.radius.metrics import Metrics
from gateway.service import AuthResult, CredentialService, Grace, identity_key

if TYPE_CHECKING:
    from gateway.policies import ResourcePolicy

TOTP_DIGITS = 6


@dataclass(frozen=True)
class Outcome:
    """What to answer: a code and reply attributes, or nothing at all (load shed)."""

    code: int
    attributes: tuple[tuple[str, Any], ...] = ()
    shed: bool = False


REJECT = Outcome(wire.ACCESS_REJECT)
SHED = Outcome(0, shed=True)


@dataclass(frozen=True)
class Request:
    """The parts of an Access-Request a decision needs."""

    user: str
    password: str | None
    state: bytes | None
    client: str  # the NAS source address


class AccessDecider:
    """Turns one Access-Request into an ``Outcome`` under a RADIUS resource policy."""

    def __init__(
        self,
        service: CredentialService,
        cache: SuccessCache,
        successes: SuccessLog,
        metrics: Metrics,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.cache = cache
        self.successes = successes
        self.metrics = metrics
        self.monotonic = monotonic
        self.challenges = ChallengeStore(ttl=120)

    async def decide(self, policy: ResourcePolicy, req: Request) -> Outcome:
        """The answer to one Access-Request."""
        config = policy.connection
        assert isinstance(config, RadiusConfig)
        if not req.user or req.password is None:
            return REJECT
        if req.state is not None:
            return await self._answer_challenge(policy, config, req)
        via = f"radius:{policy.name}"
        digest = None
        if config.success_cache_seconds:
            digest = self.cache.digest(policy.name, identity_key(req.user), req.password)
            attributes = self.cached(policy, req, digest)
            if attributes is not None:
                return Outcome(wire.ACCESS_ACCEPT, attributes)
            self.metrics.cache_misses += 1
        password, code = req.password, None
        if config.mfa == "append" and await self._enrolled(req.user):
            tail = password[-TOTP_DIGITS:]
            if len(password) > TOTP_DIGITS and tail.isdigit():
                password, code = password[:-TOTP_DIGITS], tail
        grace = None
        if policy.actions.expired == "grace":
            grace = Grace(logins=config.expired_grace.logins, days=config.expired_grace.days)
        try:
            result = await self.service.authenticate(
                req.user, password, via=via, client=req.client, grace=grace
            )
        except AuthenticationFailed:
            return REJECT
        except Overloaded:
            self.metrics.hash_saturation += 1
            return SHED
        if not _covered(policy, result):
            return REJECT
        if result.must_change and not result.in_grace:
            return Outcome(wire.ACCESS_REJECT, (("Reply-Message", config.must_change_message),))
        if result.mfa_enrolled:
            if config.mfa == "challenge":
                return self._challenge(config, req, result)
            if code is None or not await self._totp(result, code, via, req.client):
                return REJECT
        attributes = _accept_attributes(config, result)
        if digest is not None and code is None and not result.mfa_enrolled and not result.in_grace:
            self._remember(config, digest, result, attributes)
        return Outcome(wire.ACCESS_ACCEPT, attributes)

    async def _enrolled(self, user: str) -> bool:
        try:
            return (await self.service.get_account(user)).mfa_enrolled
        except NotFound:
            return False

    def cached(
        self, policy: ResourcePolicy, req: Request, digest: bytes
    ) -> tuple[tuple[str, Any], ...] | None:
        """Reply attributes of a live success-cache entry (recording the success), or None."""
        hit = self.cache.get(digest, self.monotonic())
        if hit is None:
            return None
        now = self.service.clock.now()
        expires = hit.result.expires_at
        if expires is not None and expires <= now:
            self.cache.invalidate(hit.result.account_id)
            return None
        self.metrics.cache_hits += 1
        self.successes.add(
            Success(
                hit.result.account_id, hit.result.username, now, f"radius:{policy.name}", req.client
            )
        )
        return hit.attributes

    def _remember(
        self,
        config: RadiusConfig,
        digest: bytes,
        result: AuthResult,
        attributes: tuple[tuple[str, Any], ...],
    ) -> None:
        until = self.monotonic() + config.success_cache_seconds
        self.cache.put(digest, Hit(result, until, attributes))

    def _challenge(self, config: RadiusConfig, req: Request, result: AuthResult) -> Outcome:
        self.challenges.ttl = config.challenge_seconds
        state = self.challenges.issue(
            req.client, identity_key(req.user), result.account_id, self.monotonic(), result
        )
        self.metrics.challenges += 1
        return Outcome(
            wire.ACCESS_CHALLENGE,
            (("State", state), ("Reply-Message", config.challenge_message)),
        )

    async def _answer_challenge(
        self, policy: ResourcePolicy, config: RadiusConfig, req: Request
    ) -> Outcome:
        assert req.state is not None and req.password is not None
        pending = self.challenges.take(
            req.state, req.client, identity_key(req.user), self.monotonic()
        )
        if pending is None:
            return REJECT
        result: AuthResult = pending.context
        if not await self._totp(result, req.password, f"radius:{policy.name}", req.client):
            return REJECT
        return Outcome(wire.ACCESS_ACCEPT, _accept_attributes(config, result))

    async def _totp(self, result: AuthResult, code: str, via: str, client: str) -> bool:
        try:
            await self.service.verify_totp(
                result.account_id, code, actor=Actor(identity_key(result.username), via, client)
            )
        except AuthenticationFailed:
            return False
        return True


def _covered(policy: ResourcePolicy, result: AuthResult) -> bool:
    covers = policy.covers
    if result.kind not in covers.kinds:
        return False
    return not covers.groups or bool(set(covers.groups) & set(result.groups))


def _accept_attributes(config: RadiusConfig, result: AuthResult) -> tuple[tuple[str, Any], ...]:
    out = list(config.reply_attributes(result.groups))
    if result.in_grace:
        out.append(("Reply-Message", config.grace_message))
    return tuple(out)
