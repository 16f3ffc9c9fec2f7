"""What operators see of a running bridge: Prometheus metrics (``metrics``), their HTTP
middleware and exposition (``http``), and the store's state for ``meterbridge status``."""
