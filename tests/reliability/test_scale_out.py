"""Two ``serve`` processes, two workers and two schedulers on one PostgreSQL at once, with
usage arriving at both API processes and every webhook delivered to both: each change is
billed once, each webhook stored once and applied once."""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from tests import webhook_signing as sign
from tests.reliability.harness import (
    ROUNDS,
    Figures,
    Load,
    Process,
    audit,
    base_env,
    make_licenses,
    platforms,
    running,
    wait_drained,
    wait_for,
)

HMAC_KEY = "lago-hmac-reliability"
WEBHOOKS = 40


def _send_webhooks(urls: list[str], subscriptions: list[str], sent: list[str]) -> None:
    """Each delivery to both API processes at once (as a platform's retry might), in order."""
    rng = random.Random(7)
    with httpx.Client(timeout=10) as http, ThreadPoolExecutor(len(urls)) as pool:
        for _ in range(WEBHOOKS):
            unique = uuid.uuid4().hex
            body = sign.body_of(
                {
                    "webhook_type": "alert.triggered",
                    "object_type": "alert",
                    "organization_id": "o",
                    "alert": {
                        "external_subscription_id": rng.choice(subscriptions),
                        "alert_name": "usage high",
                    },
                }
            )
            headers = sign.lago_hmac(HMAC_KEY, body, unique)
            posts = [
                pool.submit(http.post, f"{url}/v1/webhooks/lago", content=body, headers=headers)
                for url in urls
            ]
            answers = [p.result().status_code for p in posts]
            assert answers == [200, 200], answers
            sent.append(unique)


def test_two_of_each_process_on_one_postgresql(pg_url: str, tmp_path: Path) -> None:
    with platforms() as fakes:
        settings = {
            "BRIDGE_DATABASE_URL": pg_url,
            "BRIDGE_SINKS__FILE__ENABLED": "false",
            "BRIDGE_SCHEDULER__ENABLED": "false",  # the two schedulers below run the jobs
            "BRIDGE_SCHEDULER__CLOSE_INTERVAL_S": "1",
            "BRIDGE_MACHINES__REAP_INTERVAL_S": "1",
            "BRIDGE_WEBHOOKS__LAGO__HMAC_KEY": HMAC_KEY,
            **fakes.settings(),
        }
        env = base_env(settings)
        serves = [Process("serve", env, tmp_path / f"serve{n}.log") for n in (1, 2)]
        workers = [Process("worker", env, tmp_path / f"worker{n}.log") for n in (1, 2)]
        schedulers = [Process("scheduler", env, tmp_path / f"scheduler{n}.log") for n in (1, 2)]
        with running(*serves, *workers, *schedulers):
            urls = [s.url for s in serves]
            licenses = make_licenses(urls[0], 10)
            keyed = Load(lambda: urls, licenses, threads=4, keys=True).start()
            unkeyed = Load(lambda: urls, licenses, threads=2, keys=False).start()
            sent: list[str] = []
            _send_webhooks(urls, [f"sub_{n}" for n in range(10)], sent)
            keyed.wait_accepted(60 * ROUNDS)
            keyed.stop()
            unkeyed.stop()
            wait_drained(pg_url)
            engine = create_engine(pg_url)

            def handled() -> bool:
                with engine.connect() as conn:
                    return bool(
                        conn.execute(
                            text("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'applied'")
                        ).scalar_one()
                        == WEBHOOKS
                    )

            wait_for(handled, "every webhook applied")
            with engine.connect() as conn:
                stored = list(
                    conn.execute(text("SELECT delivery_id FROM webhook_deliveries")).scalars()
                )
                effects = list(
                    conn.execute(text("SELECT delivery_id FROM webhook_effects")).scalars()
                )
            engine.dispose()
        assert sorted(stored) == sorted(sent)  # each delivery stored once, from either API
        assert sorted(effects) == sorted(sent)  # and applied once, by one of four handlers
        figures = Figures(
            "2 serve + 2 workers + 2 schedulers on one PostgreSQL",
            f"{keyed.threads} keyed + {unkeyed.threads} unkeyed client threads across both APIs; "
            f"{WEBHOOKS} Lago webhooks, each sent to both APIs at once",
            "none beyond the concurrency (4 relays, 4 webhook workers, 2 schedulers)",
            notes=f"webhooks stored {len(stored)}, applied {len(effects)} (of {WEBHOOKS})",
        )
        audit(figures, pg_url, [keyed, unkeyed], fakes)
