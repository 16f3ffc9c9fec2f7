"""The Lago sink: usage changes as Lago events, sent in batches to ``POST /api/v1/events/batch``."""

from connectors._template import MappingMissing
from connectors.lago.mapping import accepts, event
from connectors.lago.settings import LagoSinkSettings
from connectors.lago.sink import LagoSink

__all__ = ["LagoSink", "LagoSinkSettings", "MappingMissing", "accepts", "event"]
