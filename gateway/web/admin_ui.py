"""The admin portal: sign-in, users (temporary password, recovery e-mail, lock/unlock),
administrators ("Send Password Reset Email") and the organisation's recovery e-mail switch.

Every action calls the core (``CredentialService`` or ``ResetFlows``), which audits it with the
admin's name, ``via="admin-ui"`` and the client address.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.errors import NotFound, PolicyViolation
from gateway.views import AccountView
from gateway.web.common import actor, field, form_checked, redirect, render, web
from gateway.web.flows import recovery_enabled, set_recovery_enabled
from gateway.web.login import add_login_routes, nav, require
from gateway.web.reset_pages import add_reset_routes
from gateway.web.sessions import SessionInfo

VIA = "admin-ui"

router = APIRouter(include_in_schema=False)
add_login_routes(router, "admin")
add_reset_routes(router, "admin")


async def _signed_in(request: Request) -> tuple[SessionInfo, AccountView]:
    info = await require(request, "admin")
    me = await web(request).rt.service.get_account(info.account_id)
    return info, me


async def _account(request: Request, account_id: int, kind: str) -> AccountView | None:
    try:
        acc = await web(request).rt.service.get_account(account_id)
    except NotFound:
        return None
    return acc if acc.kind == kind else None


def _not_found(request: Request, info: SessionInfo) -> Response:
    data = {
        "portal": "admin",
        "title": "Not found",
        "message": "No such account.",
        "nav": nav("admin"),
    }
    return render(request, "message.html", data, status=404, session=info)


@router.get("/admin")
async def admin_root(request: Request) -> Response:
    """The admin portal's landing page."""
    return redirect("/admin/users")


@router.get("/admin/users")
async def users(request: Request) -> Response:
    """USER MANAGEMENT → Users."""
    return await _list(request, "user", "Users", "/admin/users")


@router.get("/admin/admins")
async def admins(request: Request) -> Response:
    """Administrators."""
    return await _list(request, "admin", "Administrators", "/admin/admins")


async def _list(request: Request, kind: str, title: str, base: str) -> Response:
    info, _ = await _signed_in(request)
    accounts = await web(request).rt.service.list_accounts(kind)
    data = {
        "portal": "admin",
        "title": title,
        "accounts": accounts,
        "kind": kind,
        "base": base,
        "nav": nav("admin"),
    }
    return render(request, "admin/users.html", data, session=info)


@router.get("/admin/users/{account_id}")
async def user_detail(request: Request, account_id: int) -> Response:
    """One user: details, lock/unlock, and the User Security Settings form."""
    info, _ = await _signed_in(request)
    acc = await _account(request, account_id, "user")
    if acc is None:
        return _not_found(request, info)
    return _user_page(request, info, acc)


def _user_page(
    request: Request, info: SessionInfo, acc: AccountView, error: str = "", notice: str = ""
) -> Response:
    data = {
        "portal": "admin",
        "title": acc.username,
        "acc": acc,
        "recovery_on": recovery_enabled(web(request).rt),
        "nav": nav("admin"),
        "error": error,
        "notice": notice,
    }
    return render(request, "admin/user.html", data, status=400 if error else 200, session=info)


@router.post("/admin/users/{account_id}")
async def user_save(request: Request, account_id: int) -> Response:
    """Save User: temporary password (generated or typed) and/or the recovery e-mail."""
    info, me = await _signed_in(request)
    form = await form_checked(request, info)
    acc = await _account(request, account_id, "user")
    if acc is None:
        return _not_found(request, info)
    choice = field(form, "temp")
    typed = field(form, "temp_password") if choice == "typed" else None
    if choice == "typed" and not typed:
        return _user_page(
            request, info, acc, error="Type the temporary password, or choose another option."
        )
    recovery: str | None = None
    if recovery_enabled(web(request).rt) and "recovery" in form:
        wanted = field(form, "recovery").strip()
        if wanted != (acc.recovery_email or ""):
            recovery = wanted
    try:
        generated = await web(request).flows.admin_reset_user(
            acc.username,
            actor=actor(request, me.username, VIA),
            temporary_password=typed,
            generate=choice == "generate",
            recovery_email=recovery,
        )
    except PolicyViolation as exc:
        return _user_page(request, info, acc, error=exc.message)
    acc = await web(request).rt.service.get_account(account_id)
    data = {
        "portal": "admin",
        "title": "User saved",
        "acc": acc,
        "generated": generated,
        "message": "The changes were saved.",
        "nav": nav("admin"),
    }
    return render(request, "admin/temp_password.html", data, session=info)


@router.post("/admin/users/{account_id}/lock")
async def user_lock(request: Request, account_id: int) -> Response:
    """Lock a user until an admin unlocks it."""
    return await _lock(request, account_id, lock=True)


@router.post("/admin/users/{account_id}/unlock")
async def user_unlock(request: Request, account_id: int) -> Response:
    """Unlock a user without touching the password."""
    return await _lock(request, account_id, lock=False)


async def _lock(request: Request, account_id: int, *, lock: bool) -> Response:
    info, me = await _signed_in(request)
    await form_checked(request, info)
    acc = await _account(request, account_id, "user")
    if acc is None:
        return _not_found(request, info)
    service = web(request).rt.service
    who = actor(request, me.username, VIA)
    if lock:
        await service.lock(account_id, actor=who)
    else:
        await service.unlock(account_id, actor=who)
    acc = await service.get_account(account_id)
    return _user_page(request, info, acc, notice="Locked." if lock else "Unlocked.")


@router.get("/admin/admins/{account_id}")
async def admin_detail(request: Request, account_id: int) -> Response:
    """One administrator."""
    info, _ = await _signed_in(request)
    acc = await _account(request, account_id, "admin")
    if acc is None:
        return _not_found(request, info)
    data = {"portal": "admin", "title": acc.username, "acc": acc, "nav": nav("admin")}
    return render(request, "admin/admin.html", data, session=info)


@router.get("/admin/admins/{account_id}/send-reset")
async def send_reset_confirm(request: Request, account_id: int) -> Response:
    """Send Password Reset Email → confirmation with a Send button."""
    info, _ = await _signed_in(request)
    acc = await _account(request, account_id, "admin")
    if acc is None:
        return _not_found(request, info)
    data = {
        "portal": "admin",
        "title": "Send Password Reset Email",
        "acc": acc,
        "nav": nav("admin"),
    }
    return render(request, "admin/send_reset.html", data, session=info)


@router.post("/admin/admins/{account_id}/send-reset")
async def send_reset(request: Request, account_id: int) -> Response:
    """Queue the 24-hour reset mail for another administrator."""
    info, me = await _signed_in(request)
    await form_checked(request, info)
    acc = await _account(request, account_id, "admin")
    if acc is None:
        return _not_found(request, info)
    try:
        await web(request).flows.send_admin_reset(
            acc.username, actor=actor(request, me.username, VIA), kind="admin"
        )
    except PolicyViolation as exc:
        data = {"portal": "admin", "title": "Not sent", "message": exc.message, "nav": nav("admin")}
        return render(request, "message.html", data, status=400, session=info)
    data = {
        "portal": "admin",
        "title": "Reset e-mail sent",
        "message": f"A password reset e-mail is on its way to {acc.email}. "
        "The link is valid for 24 hours.",
        "link": (f"/admin/admins/{acc.id}", f"Back to {acc.username}"),
        "nav": nav("admin"),
    }
    return render(request, "message.html", data, session=info)


@router.get("/admin/settings")
async def settings_page(request: Request) -> Response:
    """Settings → Security → Password Recovery Email."""
    info, _ = await _signed_in(request)
    return _settings(request, info)


def _settings(request: Request, info: SessionInfo, notice: str = "") -> Response:
    data = {
        "portal": "admin",
        "title": "Settings",
        "recovery_on": recovery_enabled(web(request).rt),
        "nav": nav("admin"),
        "notice": notice,
    }
    return render(request, "admin/settings.html", data, session=info)


@router.post("/admin/settings")
async def settings_save(request: Request) -> Response:
    """Turn the recovery e-mail feature on or off for the organisation (audited by the core)."""
    info, me = await _signed_in(request)
    form = await form_checked(request, info)
    on = field(form, "recovery_enabled") == "yes"
    await set_recovery_enabled(web(request).rt, on, actor=actor(request, me.username, VIA))
    return _settings(request, info, notice="Settings saved.")
