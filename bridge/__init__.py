"""Metering Bridge: a Keygen-compatible limit store that forwards usage to billing platforms."""

__version__ = "0.1.0"
