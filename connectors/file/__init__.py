"""The file sink: NDJSON records appended to a local file, fsynced per batch."""

from connectors.file.sink import FileSink, FileSinkSettings

__all__ = ["FileSink", "FileSinkSettings"]
