"""Outgoing mail: a queue written in the change's transaction, and a sender that delivers it.

``enqueue`` (queue.py) adds a message inside an open session; ``MailListener`` queues the
password notifications; ``MailSender`` is the daemon component (SMTP or Maildir, retries).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.mail.listener import MailListener
from gateway.mail.queue import enqueue, link, render
from gateway.mail.sender import MailSender

if TYPE_CHECKING:
    from gateway.daemon import Component
    from gateway.runtime import Runtime

__all__ = [
    "MailListener",
    "MailSender",
    "enqueue",
    "link",
    "render",
    "sender_component",
    "wake",
    "wire",
]


def wire(rt: Runtime) -> None:
    """Attach the notification listener to the service (called from ``runtime._wire``)."""
    rt.service.listeners.append(MailListener(rt))


def wake(rt: Runtime) -> None:
    """Tell senders in this process that new mail was committed."""
    for callback in list(rt.service.after_commit):
        callback()


def sender_component(rt: Runtime) -> Component:
    """The daemon component factory (registered in ``daemon._register``)."""
    return MailSender(rt)
