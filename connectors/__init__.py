"""Connectors: publish canonical events for the systems Switchboard coordinates."""
