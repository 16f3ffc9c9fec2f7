"""The m3ter sink: usage changes as measurements on m3ter's Ingest API, OAuth2 client auth."""

from connectors._template import MappingMissing
from connectors.m3ter.auth import M3terAuth
from connectors.m3ter.mapping import measurement, split
from connectors.m3ter.settings import M3terSinkSettings
from connectors.m3ter.sink import M3terSink

__all__ = ["M3terAuth", "M3terSink", "M3terSinkSettings", "MappingMissing", "measurement", "split"]
