"""``python -m bridge`` is ``meterbridge``."""

from bridge.cli import main

main()
