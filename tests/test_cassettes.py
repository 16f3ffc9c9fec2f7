"""Wire contracts: each sink's requests match the vendors' documented examples (vcrpy
cassettes, replayed only; a request that differs finds no match and the test fails)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import vcr

from bridge.domain.delivery import OutboxItem
from bridge.testing import FakeClock
from connectors.lago import LagoSink, LagoSinkSettings
from connectors.m3ter import M3terSink, M3terSinkSettings
from tests.builders import outbox_item

CASSETTES = Path(__file__).parent / "cassettes"
# The example's instant: 1651240791.123 in Lago's spec.
WHEN = datetime(2022, 4, 29, 13, 59, 51, 123000, tzinfo=UTC)

replay = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="none",  # never record: CI replays what is committed
    match_on=["method", "uri", "body"],  # bodies compare as JSON, not as bytes
    filter_headers=["authorization"],
)


def item(entry_id: str, delta: int, metadata: dict[str, object]) -> OutboxItem:
    return outbox_item(
        item_id=1,
        entry_id=entry_id,
        sink="sink",
        delta=delta,
        occurred_at=WHEN,
        license_id="lic-1",
        policy="pol-1",
        metadata=metadata,
        actor="admin:admin",
    )


def test_lago_events_batch_matches_the_documented_example() -> None:
    """The Lago sink sends exactly the spec's example event and accepts the documented answer."""
    settings = LagoSinkSettings(
        enabled=True,
        api_key="lago-key",
        default_metric_code="storage",
        property_field="gb",
    )
    sink = LagoSink(settings)
    with replay.use_cassette("lago_events_batch.yaml") as cassette:
        failures = sink.deliver(
            [item("transaction_1234567890", 10, {"lago_subscription_id": "sub_1234567890"})]
        )
    sink.close()
    assert failures == []
    assert cassette.play_count == 1
    assert cassette.all_played


def test_m3ter_token_and_measurements_match_the_documented_shapes() -> None:
    """The m3ter sink takes a client-credentials token, then sends the documented measurement
    shape and accepts {"result": "accepted"}."""
    settings = M3terSinkSettings(
        enabled=True,
        org_id="00000000-0000-0000-0000-000000000001",
        client_id="access-key-id",
        client_secret="api-secret",
        default_meter_code="api_calls",
    )
    sink = M3terSink(settings, clock=FakeClock(WHEN))
    with replay.use_cassette("m3ter_measurements.yaml") as cassette:
        failures = sink.deliver(
            [item("7c2a9d4e-1b5f-4a8e-9c3d-2e6f8a0b1c4d", 10, {"m3ter_account_code": "ACME-001"})]
        )
    sink.close()
    assert failures == []
    assert cassette.play_count == 2
    assert cassette.all_played
