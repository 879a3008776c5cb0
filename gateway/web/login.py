"""Sign-in for both portals: password, then TOTP when enrolled, then a new password when due.

Every failure (unknown, wrong, locked, disabled, wrong portal) gets the same page and status.
Attempts are throttled per client address on top of the core's per-account lockout.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.audit import Actor
from gateway.errors import AuthenticationFailed, Overloaded, PolicyViolation
from gateway.web.common import (
    actor,
    advance_session,
    client,
    current,
    end_session,
    field,
    form_checked,
    redirect,
    render,
    start_session,
    web,
)
from gateway.web.sessions import SessionInfo

FAILED = "Sign-in failed. Check your details and try again."
THROTTLED = "Too many attempts from your address. Wait a few minutes and try again."
PORTALS = {
    "user": {"prefix": "", "home": "/profile", "via": "portal", "title": "User Portal Login"},
    "admin": {
        "prefix": "/admin",
        "home": "/admin/users",
        "via": "admin-ui",
        "title": "Admin Portal Login",
    },
}


def prefix(portal: str) -> str:
    """The URL prefix of ``portal``."""
    return PORTALS[portal]["prefix"]


def home(portal: str) -> str:
    """Where a signed-in account of ``portal`` lands."""
    return PORTALS[portal]["home"]


def via(portal: str) -> str:
    """The audit ``via`` of ``portal``."""
    return PORTALS[portal]["via"]


def _login_page(request: Request, portal: str, *, error: str = "", status: int = 200) -> Response:
    p = prefix(portal)
    data = {
        "portal": portal,
        "title": PORTALS[portal]["title"],
        "action": f"{p}/login",
        "reset_href": f"{p}/reset",
        "reset_text": "Reset Administrator Password"
        if portal == "admin"
        else "Reset User Password",
        "other": ("/login", "User Portal Login") if portal == "admin" else None,
        "error": error,
    }
    return render(request, "login.html", data, status=status)


def _next_url(portal: str, stage: str) -> str:
    if stage == "mfa":
        return f"{prefix(portal)}/login/totp"
    if stage == "must_change":
        return f"{prefix(portal)}/password"
    if stage == "enrol":
        return "/profile/totp"
    return home(portal)


def after_enrolment(must_change: bool) -> str:
    """The stage that follows a first-factor login once any enforced enrolment is done."""
    return "must_change" if must_change else "ok"


class SignInRequired(Exception):
    """Raised by ``require``: the app answers with ``response`` (a redirect to the right step)."""

    def __init__(self, response: Response) -> None:
        super().__init__("sign-in required")
        self.response = response


async def require(
    request: Request, portal: str, *, allow_must_change: bool = False, allow_enrol: bool = False
) -> SessionInfo:
    """The signed-in session of ``portal``; otherwise ``SignInRequired`` with the redirect."""
    info = await current(request, portal)
    if info is None:
        raise SignInRequired(redirect(f"{prefix(portal)}/login"))
    if (
        info.stage == "mfa"
        or (info.stage == "must_change" and not allow_must_change)
        or (info.stage == "enrol" and not allow_enrol)
    ):
        raise SignInRequired(redirect(_next_url(portal, info.stage)))
    return info


def add_login_routes(router: APIRouter, portal: str) -> None:
    """Register login, TOTP step, password change and logout for ``portal``."""
    p = prefix(portal)

    @router.get(f"{p}/login", name=f"{portal}_login")
    async def login_form(request: Request) -> Response:
        info = await current(request, portal)
        if info is not None:
            return redirect(_next_url(portal, info.stage))
        return _login_page(request, portal)

    @router.post(f"{p}/login")
    async def login(request: Request) -> Response:
        form = await form_checked(request)
        ctx = web(request)
        if not ctx.login_limiter.allow(f"{portal}|{client(request)}"):
            return _login_page(request, portal, error=THROTTLED, status=429)
        try:
            result = await ctx.rt.service.authenticate(
                field(form, "username"),
                field(form, "password"),
                via=via(portal),
                client=client(request),
            )
        except AuthenticationFailed:
            return _login_page(request, portal, error=FAILED, status=401)
        except Overloaded:
            return _login_page(request, portal, error=THROTTLED, status=503)
        if result.kind != portal:
            return _login_page(request, portal, error=FAILED, status=401)
        org = ctx.rt.org_policy
        if result.mfa_enrolled:
            stage = "mfa"
        elif portal == "user" and org.mfa.enforce_for_portal:
            stage = "enrol"  # MFA is enforced for the portal: set it up before anything else
        else:
            stage = after_enrolment(result.must_change)
        response = redirect(_next_url(portal, stage))
        await start_session(request, response, result.account_id, portal, stage, result.must_change)
        return response

    @router.get(f"{p}/login/totp")
    async def totp_form(request: Request) -> Response:
        info = await current(request, portal)
        if info is None or info.stage != "mfa":
            return redirect(f"{p}/login")
        data = {"portal": portal, "action": f"{p}/login/totp", "logout": f"{p}/logout"}
        return render(request, "totp.html", data, session=info)

    @router.post(f"{p}/login/totp")
    async def totp(request: Request) -> Response:
        info = await current(request, portal)
        if info is None or info.stage != "mfa":
            return redirect(f"{p}/login")
        form = await form_checked(request, info)
        ctx = web(request)
        if not ctx.login_limiter.allow(f"{portal}|{client(request)}"):
            return _login_page(request, portal, error=THROTTLED, status=429)
        acc = await ctx.rt.service.get_account(info.account_id)
        try:
            await ctx.rt.service.verify_totp(
                info.account_id, field(form, "code"), actor=_actor(request, acc.username, portal)
            )
        except AuthenticationFailed:
            info_now = await current(request, portal)
            if info_now is None:  # the limit locked the account and ended the session
                response = _login_page(request, portal, error=FAILED, status=401)
                await end_session(request, response, info)
                return response
            data = {
                "portal": portal,
                "action": f"{p}/login/totp",
                "logout": f"{p}/logout",
                "error": "The code was not accepted.",
            }
            return render(request, "totp.html", data, status=401, session=info)
        stage = "must_change" if info.must_change else "ok"
        response = redirect(_next_url(portal, stage))
        await advance_session(request, response, info, stage)
        return response

    @router.get(f"{p}/password")
    async def password_form(request: Request) -> Response:
        info = await require(request, portal, allow_must_change=True)
        return await _password_page(request, portal, info)

    @router.post(f"{p}/password")
    async def password(request: Request) -> Response:
        info = await require(request, portal, allow_must_change=True)
        form = await form_checked(request, info)
        ctx = web(request)
        acc = await ctx.rt.service.get_account(info.account_id)
        new, confirm = field(form, "password"), field(form, "confirm")
        if new != confirm:
            return await _password_page(request, portal, info, "The passwords do not match.")
        must = info.stage == "must_change"
        try:
            await ctx.rt.service.change_password(
                info.account_id,
                new,
                actor=_actor(request, acc.username, portal),
                current_password=None if must else field(form, "current"),
            )
        except PolicyViolation as exc:
            return await _password_page(request, portal, info, exc.message)
        except AuthenticationFailed:
            return await _password_page(request, portal, info, "The current password is not right.")
        data = {
            "portal": portal,
            "title": "Password changed",
            "message": "Your password was changed and your sessions were ended. "
            "Sign in with the new password.",
            "link": (f"{p}/login", "Sign in"),
        }
        response = render(request, "message.html", data)
        await end_session(request, response, info)
        return response

    @router.post(f"{p}/logout")
    async def logout(request: Request) -> Response:
        info = await current(request, portal)
        if info is not None:
            await form_checked(request, info)
        response = redirect(f"{p}/login")
        await end_session(request, response, info)
        return response


def _actor(request: Request, name: str, portal: str) -> Actor:
    return actor(request, name, via(portal))


async def _password_page(
    request: Request, portal: str, info: SessionInfo, error: str = ""
) -> Response:
    ctx = web(request)
    acc = await ctx.rt.service.get_account(info.account_id)
    rules = ctx.rt.org_policy.rules_for(acc.kind)
    data = {
        "portal": portal,
        "title": "Set a new password",
        "action": f"{prefix(portal)}/password",
        "must": info.stage == "must_change",
        "username": acc.username,
        "min_length": rules.min_length,
        "max_length": rules.max_length,
        "error": error,
        "nav": nav(portal) if info.stage == "ok" else None,
    }
    return render(request, "set_password.html", data, status=400 if error else 200, session=info)


def nav(portal: str) -> list[tuple[str, str]]:
    """The navigation links of a signed-in page."""
    if portal == "admin":
        return [
            ("/admin/users", "Users"),
            ("/admin/admins", "Administrators"),
            ("/admin/settings", "Settings"),
        ]
    return [("/profile", "Profile")]
