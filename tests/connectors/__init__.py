"""Tests of the connector plugins, each against its real target or a strict fake."""
