"""Runs steps with the published Keygen client ``keygen-py`` and prints each outcome as JSON.

Run as ``python tests/keygen_client.py '<json>'`` with ``{"config": {...KeygenConfig...},
"steps": [...]}``; each step is ``{"op": "validate", "fingerprints": [...]}``,
``{"op": "activate", "license": id, "fingerprint": fp}``, or, on the license the last successful
validation returned, ``{"op": "deactivate", "machine": id}``, ``{"op": "machines"}``,
``{"op": "machine", "machine": id-or-fingerprint}``, ``{"op": "ping", "machine": ...}`` and
``{"op": "machine_deactivate", "machine": ...}`` (the last two on the machine
``license.machine`` finds); offline: ``{"op": "checkout", "ttl": n?, "include": [...]?}`` (the
license file, then read back with ``LicenseFile.build_from_cert``, ``verify`` and ``decrypt``),
``{"op": "machine_checkout", "machine": ..., ...}`` (the same with ``MachineFile``, under the
license key and the fingerprint), ``{"op": "license_file", "key": ..., "certificate": ...}``
(verify and decrypt a given file) and ``{"op": "verify_key", "key": ...}`` (a signed key,
``keygen_sh.verify``). A process of its own because
the client keeps its configuration in a process-wide global and its native runtime may abort
while the interpreter shuts down after some errors; the script leaves with ``os._exit``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from keygen_sh import validate, verify
from keygen_sh.config import KeygenConfig, set_config
from keygen_sh.errors import Error, KeygenError
from keygen_sh.license import License, SchemeCode
from keygen_sh.license_file import LicenseFile
from keygen_sh.machine_file import MachineFile


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


def _license_file(key: str, certificate: str) -> dict[str, Any]:
    """A license file as the client reads it offline: decrypted and checked, then verified."""
    built = LicenseFile.build_from_cert(key, certificate)
    built.verify()
    dataset = built.decrypt(key)
    return {
        "ok": True,
        "license": dataset.license.id,
        "key": dataset.license.key,
        "ttl": dataset.ttl,
        "issued": dataset.issued.isoformat(),
        "expiry": dataset.expiry.isoformat(),
    }


def _machine_file(secret: str, certificate: str) -> dict[str, Any]:
    built = MachineFile.from_cert(secret, certificate)
    built.verify()
    dataset = built.decrypt(secret)
    return {
        "ok": True,
        "machine": dataset.machine.id,
        "fingerprint": dataset.machine.fingerprint,
        "license": dataset.license.id,
        "ttl": dataset.ttl,
    }


_OFFLINE_OPS = ("checkout", "machine_checkout", "license_file", "verify_key")


async def _offline(step: dict[str, Any], license: Any) -> dict[str, Any]:
    """The offline steps: files checked out and read back, files and signed keys verified."""
    if step["op"] == "checkout":
        issued = await license.checkout(step.get("ttl"), step.get("include"))
        issued.verify()  # the file as the API answered it
        return {
            **_license_file(license.key, issued.certificate),
            "certificate": issued.certificate,
            "file_ttl": issued.ttl,
        }
    if step["op"] == "machine_checkout":
        machine = await license.machine(step["machine"])
        issued = await machine.checkout(step.get("ttl"), step.get("include"))
        issued.verify()
        secret = license.key + machine.fingerprint
        return {**_machine_file(secret, issued.certificate), "file_ttl": issued.ttl}
    if step["op"] == "license_file":
        return _license_file(step["key"], step["certificate"])
    return {"ok": True, "dataset": verify(SchemeCode.Ed25519Sign, step["key"])}


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
            elif step["op"] in _OFFLINE_OPS:
                result = await _offline(step, license)
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
