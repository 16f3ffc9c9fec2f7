"""Outbound integrations to billing platforms (Lago, m3ter, a file sink), one folder each.

Each implements ``bridge.domain.ports.Sink``; the bridge's domain never imports a connector.
"""
