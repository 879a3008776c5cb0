"""The user portal: sign-in, profile, TOTP enrolment with a QR code, and the recovery e-mail."""

from __future__ import annotations

import qrcode
import qrcode.image.svg
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway import mfa
from gateway.errors import AuthenticationFailed, PolicyViolation
from gateway.web.common import actor, advance_session, field, form_checked, redirect, render, web
from gateway.web.flows import recovery_enabled
from gateway.web.login import add_login_routes, after_enrolment, nav, require
from gateway.web.reset_pages import add_reset_routes, add_verify_routes
from gateway.web.sessions import SessionInfo

ISSUER = "Credential Gateway"
VIA = "portal"

router = APIRouter(include_in_schema=False)
add_login_routes(router, "user")
add_reset_routes(router, "user")
add_verify_routes(router)


def qr_svg(uri: str) -> str:
    """An inline SVG QR code for ``uri`` (no scripts, no styles: passes the strict CSP)."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=10)
    svg: str = image.to_string(encoding="unicode")
    return svg.replace("<svg ", '<svg role="img" aria-label="TOTP QR code" ', 1)


@router.get("/")
async def root(request: Request) -> Response:
    """Send the browser to its profile or to the login page."""
    return redirect("/profile")


@router.get("/terms")
async def terms(request: Request) -> Response:
    """The Terms of Service an administrator agrees to when setting a password."""
    return render(request, "terms.html", {"portal": "admin", "title": "Terms of Service"})


@router.get("/profile")
async def profile(request: Request) -> Response:
    """The signed-in user's profile."""
    info = await require(request, "user")
    return await _profile(request, info)


async def _profile(request: Request, info: SessionInfo, notice: str = "") -> Response:
    rt = web(request).rt
    acc = await rt.service.get_account(info.account_id)
    data = {
        "portal": "user",
        "title": "Profile",
        "acc": acc,
        "recovery_on": recovery_enabled(rt),
        "nav": nav("user"),
        "notice": notice,
    }
    return render(request, "profile.html", data, session=info)


@router.get("/profile/password")
async def profile_password(request: Request) -> Response:
    """Voluntary password change (the form asks for the current password)."""
    return redirect("/password")


@router.get("/profile/totp")
async def totp_page(request: Request) -> Response:
    """Explain TOTP enrolment; the seed is only created by the POST below."""
    info = await require(request, "user", allow_enrol=True)
    acc = await web(request).rt.service.get_account(info.account_id)
    if acc.mfa_enrolled:
        return await _profile(request, info, "An authenticator app is already set up.")
    data = {"portal": "user", "title": "Authenticator app", "nav": nav("user")}
    return render(request, "totp_enrol.html", data, session=info)


@router.post("/profile/totp/start")
async def totp_start(request: Request) -> Response:
    """Create an unconfirmed seed and show it once, as a QR code and as text."""
    info = await require(request, "user", allow_enrol=True)
    await form_checked(request, info)
    rt = web(request).rt
    acc = await rt.service.get_account(info.account_id)
    if acc.mfa_enrolled:
        return await _profile(request, info, "An authenticator app is already set up.")
    seed = await rt.service.enrol_totp(info.account_id, actor=actor(request, acc.username, VIA))
    uri = mfa.provisioning_uri(seed, acc.email, ISSUER)
    data = {
        "portal": "user",
        "title": "Authenticator app",
        "nav": nav("user"),
        "qr_svg": qr_svg(uri),
        "secret": seed,
        "username": acc.username,
    }
    return render(request, "totp_enrol.html", data, session=info)


@router.post("/profile/totp/confirm")
async def totp_confirm(request: Request) -> Response:
    """Confirm enrolment with the first code from the app."""
    info = await require(request, "user", allow_enrol=True)
    form = await form_checked(request, info)
    rt = web(request).rt
    acc = await rt.service.get_account(info.account_id)
    try:
        await rt.service.verify_totp(
            info.account_id,
            field(form, "code"),
            actor=actor(request, acc.username, VIA),
            confirm=True,
        )
    except AuthenticationFailed:
        data = {
            "portal": "user",
            "title": "Authenticator app",
            "nav": nav("user"),
            "error": "The code was not accepted. Start again to get a new secret.",
        }
        return render(request, "totp_enrol.html", data, status=400, session=info)
    if info.stage == "enrol":  # enforced enrolment done: continue the sign-in
        stage = after_enrolment(info.must_change)
        response = redirect("/password" if stage == "must_change" else "/profile")
        await advance_session(request, response, info, stage)
        return response
    return await _profile(request, info, "Your authenticator app is set up.")


@router.get("/profile/recovery")
async def recovery_page(request: Request) -> Response:
    """Profile → Recovery Email (only while the organisation has the feature on)."""
    info = await require(request, "user")
    return await _recovery(request, info)


async def _recovery(
    request: Request, info: SessionInfo, error: str = "", notice: str = ""
) -> Response:
    rt = web(request).rt
    if not recovery_enabled(rt):
        data = {
            "portal": "user",
            "title": "Recovery Email",
            "message": "Your organisation has not enabled recovery e-mail.",
            "nav": nav("user"),
        }
        return render(request, "message.html", data, status=404, session=info)
    acc = await rt.service.get_account(info.account_id)
    page: dict[str, object] = {
        "portal": "user",
        "title": "Recovery Email",
        "acc": acc,
        "nav": nav("user"),
        "error": error,
        "notice": notice,
    }
    return render(request, "recovery.html", page, status=400 if error else 200, session=info)


@router.post("/profile/recovery")
async def recovery_save(request: Request) -> Response:
    """Save a recovery address; the core mails it a "Verify Now!" link."""
    info = await require(request, "user")
    form = await form_checked(request, info)
    rt = web(request).rt
    acc = await rt.service.get_account(info.account_id)
    address = field(form, "recovery").strip()
    try:
        await web(request).flows.set_recovery_email(
            info.account_id, address, actor=actor(request, acc.username, VIA)
        )
    except PolicyViolation as exc:
        return await _recovery(request, info, error=exc.message)
    notice = f"We sent a message to {address}. Click “Verify Now!” in it within the time it states."
    return await _recovery(request, info, notice=notice)
