"""``meterbridge product``: products."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.cli.support import ADMIN, ConfigOpt, JsonOpt, container, show
from bridge.domain.commands import NewProduct
from bridge.service import products
from bridge.service.common import PageRequest

app = typer.Typer(help="Products.", no_args_is_help=True)


@app.command("create")
def product_create(
    name: Annotated[str, typer.Option(help="Product name")],
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    with container(config) as c:
        product = products.create_product(c.uows, c.clock, ADMIN, NewProduct(name=name))
    show([product], ["id", "name", "created"], as_json, "Product", one=True)


@app.command("list")
def product_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    with container(config, migrate=False) as c:
        page = products.list_products(c.uows, ADMIN, PageRequest(1, 100))
    show(page.items, ["id", "name", "created"], as_json, f"Products ({page.total})")
