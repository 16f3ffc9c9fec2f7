"""The bridge's client library: how an application meters itself, online or offline.

Imports only the standard library and httpx (never the server's FastAPI, SQLAlchemy or
settings), so it can ship inside any application::

    from bridge.client import MeterClient

    meter = MeterClient("https://licensing.example.com", license_key, "usage-buffer.db")
    meter.increment()          # durable at once; sent now, or at the next sync if offline
"""

from bridge.client.buffer import Record
from bridge.client.meter import (
    AsyncMeterClient,
    CheckInRefused,
    LimitReached,
    MeterClient,
    MeterError,
    Unreachable,
)

__all__ = [
    "AsyncMeterClient",
    "CheckInRefused",
    "LimitReached",
    "MeterClient",
    "MeterError",
    "Record",
    "Unreachable",
]
