"""Connector plugins that bring target systems to the gateway's desired account state."""
