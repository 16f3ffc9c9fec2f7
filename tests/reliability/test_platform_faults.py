"""A billing platform down, then throttling with 429, then slow (timeouts), then back: the API
keeps accepting throughout (the changes wait in the outbox), and once the platforms answer
again each holds every ledger entry exactly once."""

from __future__ import annotations

import time
from pathlib import Path

from tests.reliability.harness import (
    PHASE_S,
    Figures,
    Load,
    Process,
    audit,
    base_env,
    make_licenses,
    platforms,
    running,
    sqlite_settings,
    wait_drained,
    wait_for,
)


def test_platforms_down_then_throttling_then_slow_then_back(tmp_path: Path) -> None:
    with platforms() as fakes:
        settings = {**sqlite_settings(tmp_path), **fakes.settings(timeout_s=1.0)}
        serve = Process("serve", base_env(settings), tmp_path / "serve.log")
        with running(serve):
            licenses = make_licenses(serve.url, 10)
            load = Load(lambda: [serve.url], licenses, threads=4, keys=True).start()
            load.wait_accepted(30)
            faults = []

            # Down: nothing listens on either platform's ports (connections refused).
            for name in ("lago", "m3ter_api", "m3ter_ingest"):
                fakes.down(name)
            time.sleep(PHASE_S)
            load.wait_accepted(20)  # the API keeps accepting while the platforms are away
            for name in ("lago", "m3ter_api", "m3ter_ingest"):
                fakes.up(name)
            faults.append(f"both platforms refusing connections for {PHASE_S:g} s")

            # Throttling: every request answered 429 for a while (Lago's X-RateLimit-Reset,
            # m3ter's Retry-After), then accepted.
            fakes.m3ter.retry_after = "1"
            throttled = 3  # each one waits out its reset: a few show the relay honours them
            fakes.lago.throttle(throttled, reset=1)
            fakes.m3ter.outages.extend([429] * throttled)
            wait_for(
                lambda: not fakes.lago.faults and not fakes.m3ter.outages,
                "the throttling to be used up",
                PHASE_S * 30,
            )
            faults.append(f"{throttled} answers of 429 from each platform")

            # Slow: requests that get no answer until the sink's 1 s timeout gives up, some
            # after the platform stored the batch (the resend is deduplicated on the entry id).
            slow = 2  # Lago: one before and one after storing the batch; m3ter: two
            fakes.lago.time_out(slow // 2)
            fakes.lago.time_out(slow // 2, after_storing=True)
            fakes.m3ter.outages.extend(["timeout"] * slow)
            wait_for(
                lambda: not fakes.lago.faults and not fakes.m3ter.outages,
                "the timeouts to be used up",
                PHASE_S * 30,
            )
            faults.append(f"{slow} timeouts from each platform (half of Lago's after storing)")

            load.wait_accepted(30)  # back
            load.stop()
            wait_drained(settings["BRIDGE_DATABASE_URL"])
        statuses = dict(load.statuses)
        assert set(statuses) == {200}, statuses  # the platforms' faults never reach clients
        figures = Figures(
            "billing platforms down, throttling, slow, back",
            f"{load.threads} keyed client threads",
            "; ".join(faults),
        )
        audit(
            figures,
            settings["BRIDGE_DATABASE_URL"],
            [load],
            fakes,
            tmp_path / "usage.ndjson",
        )
