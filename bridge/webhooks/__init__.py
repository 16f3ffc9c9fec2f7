"""Webhooks in: signature verifiers (pure) and the inbox that stores verified deliveries."""
