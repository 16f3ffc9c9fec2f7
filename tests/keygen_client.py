"""Runs steps with the published Keygen client ``keygen-py`` and prints each outcome as JSON.

Run as ``python tests/keygen_client.py '<json>'`` with ``{"config": {...KeygenConfig...},
"steps": [...]}``; each step is ``{"op": "validate", "fingerprints": [...]}``,
``{"op": "activate", "license": id, "fingerprint": fp}``, or, on the license the last successful
validation returned, ``{"op": "deactivate", "machine": id}``, ``{"op": "machines"}``,
``{"op": "machine", "machine": id-or-fingerprint}``, ``{"op": "ping", "machine": ...}`` and
``{"op": "machine_deactivate", "machine": ...}`` (the last two on the machine
``license.machine`` finds). A process of its own because
the client keeps its configuration in a process-wide global and its native runtime may abort
while the interpreter shuts down after some errors; the script leaves with ``os._exit``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from keygen_sh import validate
from keygen_sh.config import KeygenConfig, set_config
from keygen_sh.errors import Error, KeygenError
from keygen_sh.license import License


def _outcome(error: KeygenError) -> dict[str, Any]:
    try:
        typed = Error.from_error(error)
    except (ValueError, TypeError):  # e.g. "Unknown error": signature or JSON failures
        return {"ok": False, "error": "Unknown", "message": str(error.args[0])}
    return {"ok": False, "error": type(typed).__name__, "code": getattr(typed, "code", None)}


def _machine(machine: Any) -> dict[str, Any]:
    return {
        "id": machine.id,
        "fingerprint": machine.fingerprint,
        "require_heartbeat": machine.require_heartbeat,
        "heartbeat_status": machine.heartbeat_status,
        "heartbeat_duration": machine.heartbeat_duration,
    }


async def run(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    license: Any = None
    for step in steps:
        try:
            if step["op"] == "validate":
                license = await validate(step["fingerprints"])
                result: dict[str, Any] = {
                    "ok": True,
                    "id": license.id,
                    "key": license.key,
                    "status": license.status,
                    "policy": license.policy,
                }
            elif step["op"] == "activate":
                machine = await License.activate_machine(step["license"], step["fingerprint"])
                result = {"ok": True, **_machine(machine)}
            elif step["op"] == "deactivate":
                await license.deactivate(step["machine"])
                result = {"ok": True}
            elif step["op"] == "machines":
                result = {"ok": True, "machines": [_machine(m) for m in await license.machines()]}
            elif step["op"] == "machine":
                result = {"ok": True, **_machine(await license.machine(step["machine"]))}
            elif step["op"] == "ping":
                machine = await license.machine(step["machine"])
                result = {"ok": True, **_machine(await machine.ping())}
            elif step["op"] == "machine_deactivate":
                await (await license.machine(step["machine"])).deactivate()
                result = {"ok": True}
            else:
                raise ValueError(step["op"])
        except KeygenError as error:
            result = _outcome(error)
        results.append({"op": step["op"], **result})
    return results


def main() -> None:
    spec = json.loads(sys.argv[1])
    set_config(KeygenConfig(**spec["config"]))
    print(json.dumps(asyncio.run(run(spec["steps"]))), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
