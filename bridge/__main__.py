"""``python -m bridge`` is ``meterbridge``."""

from bridge.entry import main

main()
