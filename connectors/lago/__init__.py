"""The Lago sink: usage changes as Lago events, sent in batches to ``POST /api/v1/events/batch``."""

from connectors._template import MappingMissing
from connectors.lago.mapping import event, should_send
from connectors.lago.settings import LagoSinkSettings
from connectors.lago.sink import LagoSink

__all__ = ["LagoSink", "LagoSinkSettings", "MappingMissing", "event", "should_send"]
