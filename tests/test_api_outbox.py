"""The outbox over the admin API: status, dead letters and retry."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.domain.delivery import OutboxItem, PermanentDeliveryError
from bridge.service.relay import Relay, RelayPolicy
from connectors.memory import InMemorySink
from tests.conftest import Api, error_of


def test_status_dead_letters_and_retry(api: Api) -> None:
    """Changes queue for the default file sink; a rejected batch is listed as dead letters and
    a retry queues it again with the same entry ids."""
    context = api.client.app.state.context  # type: ignore[attr-defined]
    lic = api.license(api.policy())
    entry_ids = [api.increment(lic["id"]).headers["Usage-Entry-Id"] for _ in range(2)]
    status = api.ok("GET", "/v1/outbox")["data"]
    assert [
        (r["attributes"]["sink"], r["attributes"]["status"], r["attributes"]["count"])
        for r in status
    ] == [("file", "pending", 2)]

    def reject(_items: Sequence[OutboxItem]) -> None:
        raise PermanentDeliveryError("422 unknown metric")

    Relay(context.uows, [InMemorySink("file", reject)], context.clock, RelayPolicy()).run_once()
    letters = api.ok("GET", "/v1/outbox/dead-letters?sink=file")["data"]
    assert [d["attributes"]["entryId"] for d in letters] == entry_ids
    assert "422 unknown metric" in letters[0]["attributes"]["error"]

    retried = api.ok(
        "POST", "/v1/outbox/actions/retry", json={"meta": {"ids": [int(letters[0]["id"])]}}
    )
    assert retried["meta"]["requeued"] == 1
    sink = InMemorySink("file")
    Relay(context.uows, [sink], context.clock, RelayPolicy()).run_once()
    assert list(sink.received) == entry_ids[:1]
    assert api.ok("POST", "/v1/outbox/actions/retry")["meta"]["requeued"] == 1


def test_outbox_is_admin_only(api: Api) -> None:
    """Product and license bearers get 403 on the outbox routes."""
    product = api.product()
    token = api.product_token(product)
    for method, path in (("GET", "/v1/outbox"), ("POST", "/v1/outbox/actions/retry")):
        response = api.request(method, path, token=token)
        assert response.status_code == 403
        assert error_of(response)["code"] == "ACCESS_DENIED"


def test_status_counts_by_reason_and_dead_letters_show_theirs(api: Api) -> None:
    """GET /v1/outbox counts each status by reason (read from the stored column); a dead
    letter carries its reason next to the platform's error."""
    from bridge.domain.delivery import ItemFailure, mapping_missing

    context = api.client.app.state.context  # type: ignore[attr-defined]
    lic = api.license(api.policy())
    entry_ids = [api.increment(lic["id"]).headers["Usage-Entry-Id"] for _ in range(3)]

    def outcomes(items: Sequence[OutboxItem]) -> list[ItemFailure]:
        first, *rest = items
        rejected = ItemFailure(first.id, PermanentDeliveryError("400 bad"))
        return [rejected, *(ItemFailure(i.id, mapping_missing("no code")) for i in rest)]

    Relay(context.uows, [InMemorySink("file", outcomes)], context.clock, RelayPolicy()).run_once()
    status = {
        r["attributes"]["status"]: r["attributes"] for r in api.ok("GET", "/v1/outbox")["data"]
    }
    assert status["pending"]["reasons"] == {"mapping_missing": 2}
    assert status["pending"]["mappingMissing"] == 2
    assert status["dead"]["reasons"] == {"rejected": 1}
    (letter,) = api.ok("GET", "/v1/outbox/dead-letters")["data"]
    assert (letter["attributes"]["entryId"], letter["attributes"]["reason"]) == (
        entry_ids[0],
        "rejected",
    )
