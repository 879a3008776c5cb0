"""E-mailed link pages: reset requests, the set-password page behind a token, recovery verification.

A GET on a token link only looks the token up and renders a form; the POST hands everything to
``ResetFlows`` (which re-checks the token, the rules, the Terms of Service and the TOTP code).
The answer to a reset request is the same whatever the address: existing, unknown, locked or
disabled; the link in the mail is built by the core from ``base_url`` only.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from gateway import tokens
from gateway.errors import AuthenticationFailed, PolicyViolation
from gateway.web.common import client, field, form_checked, render, web

SENT = (
    "If an account uses that address, a message with a reset link is on its way. "
    "Check your inbox (and the spam folder)."
)
INVALID = "This link is not valid any more. Request a new one."
SUCCESS = "Password reset was successful."


def _texts(kind: str) -> dict[str, str]:
    if kind == "admin":
        return {
            "prefix": "/admin",
            "request_title": "Reset Administrator Password",
            "request_button": "Set Password",
            "form_title": "Set Administrator Password",
            "form_button": "Set Password",
        }
    return {
        "prefix": "",
        "request_title": "Reset User Password",
        "request_button": "Send Reset Request",
        "form_title": "Reset Password",
        "form_button": "Reset Password",
    }


def _invalid(request: Request, kind: str) -> Response:
    t = _texts(kind)
    data = {
        "portal": kind,
        "title": "Link not valid",
        "message": INVALID,
        "link": (f"{t['prefix']}/reset", t["request_title"]),
    }
    return render(request, "message.html", data, status=404)


def _form(request: Request, kind: str, token: str, page: object, error: str = "") -> Response:
    t = _texts(kind)
    data = {
        "portal": kind,
        "title": t["form_title"],
        "button": t["form_button"],
        "action": f"{t['prefix']}/reset/{token}",
        "page": page,
        "error": error,
    }
    return render(request, "reset_form.html", data, status=400 if error else 200)


def add_reset_routes(router: APIRouter, kind: str) -> None:
    """Register the reset request and token pages for ``kind`` (user or admin)."""
    t = _texts(kind)
    p = t["prefix"]

    @router.get(f"{p}/reset")
    async def request_form(request: Request) -> Response:
        data = {
            "portal": kind,
            "kind": kind,
            "title": t["request_title"],
            "button": t["request_button"],
            "action": f"{p}/reset",
            "back": f"{p}/login",
        }
        return render(request, "reset_request.html", data)

    @router.post(f"{p}/reset")
    async def request_reset(request: Request) -> Response:
        form = await form_checked(request)
        await web(request).flows.request_reset(
            field(form, "email"), kind=kind, client=client(request)
        )
        data = {"portal": kind, "title": "Check your e-mail", "message": SENT, "link": None}
        return render(request, "message.html", data)

    @router.get(p + "/reset/{token}")
    async def token_form(request: Request, token: str) -> Response:
        page = await run_in_threadpool(web(request).flows.open_reset, token)
        if page is None or page.kind != kind:
            return _invalid(request, kind)
        return _form(request, kind, token, page)

    @router.post(p + "/reset/{token}")
    async def complete(request: Request, token: str) -> Response:
        form = await form_checked(request)
        flows = web(request).flows
        page = await run_in_threadpool(flows.open_reset, token)
        if page is None or page.kind != kind:
            return _invalid(request, kind)
        code = field(form, "totp") or None
        try:
            await flows.complete_reset(
                token,
                field(form, "password"),
                field(form, "confirm"),
                tos_accepted=field(form, "tos") == "yes",
                totp_code=code,
                client=client(request),
            )
        except PolicyViolation as exc:
            page = await run_in_threadpool(flows.open_reset, token)
            if page is None:
                return _invalid(request, kind)
            return _form(request, kind, token, page, exc.message)
        except AuthenticationFailed:
            page = await run_in_threadpool(flows.open_reset, token)
            if page is None:
                return _invalid(request, kind)
            return _form(request, kind, token, page, "The verification code was not accepted.")
        data = {
            "portal": kind,
            "title": "Password reset",
            "message": SUCCESS,
            "link": (f"{p}/login", "Sign in"),
        }
        return render(request, "message.html", data)


def add_verify_routes(router: APIRouter) -> None:
    """Register the recovery e-mail verification link pages."""

    @router.get("/verify-recovery/{token}")
    async def verify_form(request: Request, token: str) -> Response:
        purposes = [tokens.Purpose.VERIFY_RECOVERY.value]
        row = await run_in_threadpool(web(request).rt.service.peek_token, token, purposes)
        if row is None:
            return _verify_invalid(request)
        data = {"portal": "user", "action": f"/verify-recovery/{token}"}
        return render(request, "verify_recovery.html", data)

    @router.post("/verify-recovery/{token}")
    async def verify(request: Request, token: str) -> Response:
        await form_checked(request)
        try:
            await web(request).flows.verify_recovery_email(token, client=client(request))
        except PolicyViolation:
            return _verify_invalid(request)
        data = {
            "portal": "user",
            "title": "Recovery e-mail verified",
            "message": "Your recovery e-mail address is verified.",
            "link": ("/login", "Continue to the User Portal"),
        }
        return render(request, "message.html", data)


def _verify_invalid(request: Request) -> Response:
    data = {
        "portal": "user",
        "title": "Link not valid",
        "message": "This verification link is not valid any more. "
        "Enter your recovery e-mail again in the User Portal (Profile → Recovery Email).",
        "link": ("/login", "User Portal"),
    }
    return render(request, "message.html", data, status=404)
