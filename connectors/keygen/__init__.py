"""Keygen's API, for the relay of an existing Keygen account: the client and its settings."""

from connectors.keygen.client import KeygenClient
from connectors.keygen.settings import KeygenSettings

__all__ = ["KeygenClient", "KeygenSettings"]
