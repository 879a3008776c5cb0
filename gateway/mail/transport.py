"""Deliver one message: SMTP (STARTTLS or implicit TLS, with authentication) or a Maildir.

Errors are translated once, here: an SMTP 5xx reply for the message or its recipient is
``PermanentMailError`` (give up); network trouble, timeouts, 4xx replies and refused
credentials are ``TransientMailError`` (retry with backoff; credentials may be fixed).
"""

from __future__ import annotations

import mailbox
import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from gateway.errors import GatewayError
from gateway.settings import MailSettings, read_secret

TIMEOUT_SECONDS = 30.0


class MailError(GatewayError):
    """A message could not be delivered."""


class TransientMailError(MailError):
    """Try again later (network, timeout, 4xx, authentication)."""


class PermanentMailError(MailError):
    """The server refused this message for good (5xx)."""


class Transport(Protocol):
    """Delivers one message synchronously (the sender runs it in a thread)."""

    def send(self, message: EmailMessage) -> None: ...


class MaildirTransport:
    """Writes messages into a local Maildir (no SMTP host configured)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, message: EmailMessage) -> None:
        """Add ``message`` to the Maildir."""
        try:
            box = mailbox.Maildir(str(self.path), create=True)
            box.add(message)
        except OSError as exc:
            raise TransientMailError(f"maildir: {exc.strerror or type(exc).__name__}") from None


class SmtpTransport:
    """SMTP with STARTTLS (``tls = "starttls"``), implicit TLS (``"tls"``) or none (``"none"``)."""

    def __init__(self, settings: MailSettings, ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.context = ssl_context or ssl.create_default_context()
        self._password: SecretStr | None = (
            read_secret(settings.password_file) if settings.password_file is not None else None
        )

    def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` over one SMTP connection."""
        cfg = self.settings
        try:
            smtp: smtplib.SMTP
            if cfg.tls == "tls":
                smtp = smtplib.SMTP_SSL(
                    cfg.host, cfg.port, timeout=TIMEOUT_SECONDS, context=self.context
                )
            else:
                smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=TIMEOUT_SECONDS)
            with smtp:
                if cfg.tls == "starttls":
                    smtp.starttls(context=self.context)
                if cfg.username:
                    password = self._password.get_secret_value() if self._password else ""
                    smtp.login(cfg.username, password)
                smtp.send_message(message)
        except smtplib.SMTPAuthenticationError as exc:
            raise TransientMailError(f"smtp authentication refused ({exc.smtp_code})") from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(500 <= code < 600 for code in codes):
                raise PermanentMailError(f"recipient refused ({codes[0]})") from None
            raise TransientMailError(f"recipient deferred ({codes[0] if codes else '?'})") from None
        except smtplib.SMTPResponseException as exc:
            if 500 <= exc.smtp_code < 600:
                raise PermanentMailError(f"smtp refused ({exc.smtp_code})") from None
            raise TransientMailError(f"smtp deferred ({exc.smtp_code})") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientMailError(f"smtp: {type(exc).__name__}") from None


def transport_for(settings: MailSettings, ssl_context: ssl.SSLContext | None = None) -> Transport:
    """SMTP when ``host`` is set, otherwise the Maildir."""
    if settings.host:
        return SmtpTransport(settings, ssl_context)
    return MaildirTransport(Path(settings.maildir))
