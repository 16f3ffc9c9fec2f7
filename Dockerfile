# Metering Bridge: one image for every process. `serve` (the default) runs the API, the outbox
# relay, the webhook worker and the scheduler; the same image runs `worker` or `scheduler` alone
# (`docker run IMAGE worker`), or any other command (`docker run IMAGE outbox status`).
# tests/test_container.py checks this file against the CLI and the settings.

# -- build: the bridge and its dependencies in a virtual environment (pip, its caches and any
# compiler stay in this stage). The dependencies are the versions CI tested, hash-checked
# (requirements/runtime.lock, derived from ci.lock by scripts/split_lock.py); the wheel is built
# by the locked backend (requirements/build.lock) in an environment of its own. ------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements/runtime.lock requirements/build.lock ./requirements/
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --require-hashes -r requirements/build.lock \
 && python -m venv /opt/meterbridge \
 && /opt/meterbridge/bin/pip install --no-cache-dir --require-hashes -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY connectors ./connectors
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/meterbridge/bin/pip install --no-cache-dir --no-deps /wheels/*.whl \
 && /opt/meterbridge/bin/pip uninstall --yes --quiet pip setuptools

# -- run: that environment alone on a slim base, as an unprivileged user ------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/meterbridge/bin:$PATH
RUN useradd --create-home --uid 10001 --user-group bridge
COPY --from=build /opt/meterbridge /opt/meterbridge
USER bridge
RUN mkdir -p /home/bridge/data
# Everything the bridge keeps lives in this one volume, also the working directory: the SQLite
# file, the file sink's NDJSON and the response-signing key (created beside the SQLite file).
# With PostgreSQL, set BRIDGE_DATABASE_URL and BRIDGE_SIGNING__KEY (one key for every replica).
WORKDIR /home/bridge/data
ENV BRIDGE_HOST=0.0.0.0 \
    BRIDGE_PORT=8080 \
    BRIDGE_DATABASE_URL=sqlite:////home/bridge/data/meterbridge.db \
    BRIDGE_SINKS__FILE__PATH=/home/bridge/data/meterbridge-usage.ndjson \
    BRIDGE_LOG_FORMAT=json
# glibc keeps freed memory in per-thread arenas: two keep a long-running process flat. The
# bridge's processes bound them themselves; this covers anything else run in the image.
ENV MALLOC_ARENA_MAX=2
VOLUME ["/home/bridge/data"]
EXPOSE 8080
# /readyz answers 200 when the database does (503 while it is away). Only `serve` listens:
# compose.yaml turns the check off for `worker` and `scheduler`.
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('BRIDGE_PORT', '8080'), timeout=2)"]
# `docker stop` sends SIGTERM: each command stops gracefully within Docker's 10 s and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["meterbridge"]
CMD ["serve"]
