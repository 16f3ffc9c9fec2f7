"""``meterbridge``: serve the API and operate the store from a shell.

Where a command lives: ``meterbridge GROUP ...`` is in ``bridge/cli/GROUP.py``, one module per
command group, named exactly as the group (``meterbridge outbox retry`` is ``outbox.py``). Such a
module defines ``app``, its ``typer.Typer``, and is listed in ``GROUPS`` below, which adds it
under its module's name. The commands without a group, ``serve``, ``worker`` and ``scheduler``
(the long-running processes), are in ``processes.py``; what several modules share (the wired
container, output, common options) is in ``support.py``. A new group ``keys`` is therefore
``bridge/cli/keys.py`` plus one entry in ``GROUPS``; ``tests/test_cli_layout.py`` checks the rule.

Store commands act as the admin, directly on the configured database (an operator on the box).
Output is a readable table by default and JSON with ``--json``.
"""

from __future__ import annotations

import typer

from bridge.cli import (
    db,
    keygen,
    keys,
    license,
    machine,
    outbox,
    periods,
    policy,
    processes,
    product,
    reconcile,
    status,
    usage,
    webhooks,
)

app = typer.Typer(
    help="Metering Bridge: Keygen-compatible usage limits, forwarded to billing.",
    no_args_is_help=True,
)
for command in (processes.scheduler, processes.serve, processes.worker):
    app.command()(command)

# In the order of --help.
GROUPS = (
    status,
    db,
    product,
    policy,
    license,
    usage,
    outbox,
    periods,
    webhooks,
    reconcile,
    machine,
    keys,
    keygen,
)
for group in GROUPS:
    app.add_typer(group.app, name=group.__name__.rpartition(".")[2])


def main() -> None:
    app()
