"""Credential gateway: one source of truth for passwords and account state."""

__version__ = "0.1.0"
