"""``meterbridge keys``: the account's response-signing key (``bridge/keys.py``)."""

from __future__ import annotations

import json

import typer

from bridge.cli.support import ConfigOpt, JsonOpt, err, out
from bridge.keys import SigningKeyInvalid, key_path, load_key
from bridge.settings import ConfigFileMissing, load_settings

app = typer.Typer(help="The key that signs every API response.", no_args_is_help=True)


@app.command("show")
def keys_show(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Print the public key: hex (Keygen's dashboard form, what clients such as keygen-py take
    as ``public_key``) and base64 of the hex (the form of Keygen's account ``meta.keys``)."""
    try:
        settings = load_settings(config)
        key = load_key(settings)
    except ConfigFileMissing as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except SigningKeyInvalid as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if key is None:
        err.print(
            f"[red]error:[/red] no signing key at {key_path(settings)} yet: the first "
            "`meterbridge serve` creates it, or set BRIDGE_SIGNING__KEY"
        )
        raise typer.Exit(1)
    source = "signing.key" if settings.signing.key is not None else str(key_path(settings))
    shown = {
        "account": settings.account,
        "ed25519": key.public_hex(),
        "ed25519Base64": key.public_base64(),
        "source": source,
    }
    if as_json:
        out.print_json(json.dumps(shown))
        return
    out.print(f"account         {shown['account']}", soft_wrap=True)
    out.print(f"ed25519 (hex)   {shown['ed25519']}", soft_wrap=True)
    out.print(f"ed25519 (API)   {shown['ed25519Base64']}", soft_wrap=True)
    out.print(f"private key in  {source}", soft_wrap=True)
