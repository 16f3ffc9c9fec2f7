"""A machine activation's answer: built as plain data (``Renderer.machine_json``), it is the
document the models render, and the one reading the machine back gives."""

from __future__ import annotations

import json
from typing import Any

from bridge.api import schemas as s
from tests.conftest import Api

METADATA = {"x": [1, 2.5, None, {"é": "ü"}], "n": {"deep": True}}


def activate(api: Api, license_id: str, fingerprint: str, **attributes: Any) -> dict[str, Any]:
    body = {
        "data": {
            "type": "machines",
            "attributes": {"fingerprint": fingerprint, **attributes},
            "relationships": {"license": {"data": {"type": "licenses", "id": license_id}}},
        }
    }
    return api.ok("POST", "/v1/machines", 201, json=body)


def licenses(api: Api) -> list[str]:
    """Licenses of floating policies whose machines render differently: no heartbeat, a
    heartbeat required from the first ping, a heartbeat counted from creation."""
    return [
        api.license(api.policy(floating=True))["id"],
        api.license(api.policy(floating=True, requireHeartbeat=True, heartbeatDuration=600))["id"],
        api.license(
            api.policy(floating=True, heartbeatBasis="FROM_CREATION", heartbeatDuration=120)
        )["id"],
    ]


def test_the_machine_document_is_rendered_as_the_models_render_it(api: Api) -> None:
    context = api.client.app.state.context  # type: ignore[attr-defined]
    made = []
    for i, lic in enumerate(licenses(api)):
        made.append(activate(api, lic, f"fp-{i}")["data"]["id"])
        attrs = {"cores": 4, "name": "n", "platform": "p", "hostname": "h", "metadata": METADATA}
        made.append(activate(api, lic, f"fp-full-{i}", **attrs)["data"]["id"])
    with context.uows(write=True) as uow:  # a checked-out machine shows lastCheckOut
        uow.machines.touch_checked_out(made[0], context.clock.now())
        uow.commit()
    with context.uows() as uow:
        for machine_id in made:
            machine = uow.machines.get(machine_id)
            assert machine is not None
            now = context.clock.now()
            expected = s.MachineDocument(data=context.render.machine(machine, now)).model_dump(
                mode="json", by_alias=True
            )
            assert json.loads(context.render.machine_json(machine, now)) == expected


def test_an_activation_answers_what_reading_the_machine_gives(api: Api) -> None:
    """The answer is built from the activation, not read back: it must equal a read."""
    for i, lic in enumerate(licenses(api)):
        answer = activate(api, lic, f"fp-{i}", cores=2, name="box", metadata=METADATA)
        machine_id = answer["data"]["id"]
        assert api.ok("GET", f"/v1/machines/{machine_id}") == answer
        long_form = f"/v1/accounts/default/machines/{machine_id}"
        assert api.ok("GET", long_form)["data"] == answer["data"]
