# Metering Bridge: the API, the outbox relay and the scheduler in one image (`serve`); the same
# image runs `worker` or `scheduler` alone.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY connectors ./connectors
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 bridge
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER bridge
RUN mkdir -p /home/bridge/data
# Everything the bridge keeps lives in the volume: the SQLite file and the file sink's NDJSON
# (and, as the working directory, anything else a relative path names).
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
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)" || exit 1
ENTRYPOINT ["meterbridge"]
CMD ["serve"]
