"""Render a message from its templates and queue it inside the caller's open transaction.

Templates live in ``gateway/mail/templates``: ``<name>.txt`` and ``<name>.html`` (autoescaped).
A template context never holds a password; one-time links are the only secret a body may
carry, which is why bodies are sealed at rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.orm import Session

from gateway.mail.models import MailMessage
from gateway.sealing import Sealer

TEMPLATES = Path(__file__).with_name("templates")
BODY_PURPOSE = "mail-body"
PRODUCT = "Credential gateway"

SUBJECTS = {
    "password_changed": "Your password was changed",
    "password_changed_temporary": "A temporary password was set for your account",
    "reset_link": "Password Reset",
    "reset_needs_admin": "Password Reset",
    "reset_success": "Password reset was successful.",
    "verify_recovery": "Verify your recovery e-mail address",
    "recovery_verified": "Your recovery e-mail address is verified",
}


@dataclass(frozen=True)
class Body:
    """A rendered message body: plain text and HTML."""

    text: str
    html: str


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render(template: str, context: dict[str, Any]) -> Body:
    """Render ``template`` (text and HTML) with ``context``."""
    ctx = {"product": PRODUCT, "subject": subject_for(template, context), **context}
    env = _env()
    return Body(
        env.get_template(f"{template}.txt").render(ctx),
        env.get_template(f"{template}.html").render(ctx),
    )


def subject_for(template: str, context: dict[str, Any]) -> str:
    """The subject line of a template (variant for temporary passwords)."""
    if template == "password_changed" and context.get("temporary"):
        return SUBJECTS["password_changed_temporary"]
    return SUBJECTS[template]


def fmt_time(when: datetime) -> str:
    """A timestamp as shown in mails (UTC)."""
    return when.strftime("%Y-%m-%d %H:%M UTC")


def link(base_url: str, path: str, token: str) -> str:
    """A link built only from the configured ``base_url`` (never from request headers)."""
    return f"{base_url.rstrip('/')}/{path.strip('/')}/{token}"


def seal_body(sealer: Sealer, body: Body) -> bytes:
    """Seal a rendered body for the queue."""
    return sealer.seal(json.dumps({"text": body.text, "html": body.html}), BODY_PURPOSE)


def open_body(sealer: Sealer, sealed: bytes) -> Body:
    """Open a sealed body from the queue."""
    data = json.loads(sealer.open(sealed, BODY_PURPOSE))
    return Body(str(data["text"]), str(data["html"]))


def enqueue(
    session: Session,
    *,
    sealer: Sealer,
    now: datetime,
    recipient: str,
    template: str,
    context: dict[str, Any],
    account_id: int | None = None,
) -> MailMessage:
    """Queue one message in ``session`` (the transaction of the change it reports)."""
    body = render(template, context)
    row = MailMessage(
        account_id=account_id,
        template=template,
        recipient=recipient,
        subject=subject_for(template, context),
        sealed_body=seal_body(sealer, body),
        status="pending",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
        last_error="",
    )
    session.add(row)
    return row
