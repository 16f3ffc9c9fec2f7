"""The one logging configuration: structlog events with fields, context bound per request and
per delivery, secrets redacted by pattern.

Event names are snake_case ``<noun>_<past participle>`` (what happened to what, or the state
it is in), never sentences: ``outbox_delivered``, ``machine_activated``, ``relay_started``,
``job_failed``, ``request_completed``, ``lago_mapping_missing``. Details go in fields
(``sink="lago", count=100``). ``tests/test_logging.py`` holds every event of the code to it.

Context: what is bound with ``structlog.contextvars`` appears on every line logged under it.
The API middleware binds ``request_id`` for the whole request (the threadpool copies it; the
``BatchWriter`` runs each change in the context it was submitted from); the usage path binds
``license_id`` once it has resolved the license; the relay binds ``sink`` and ``batch``; the
scheduler binds ``job``.

Redaction (``redact``) runs on every line, ours and the standard-library records of uvicorn,
Alembic and httpx alike, after exceptions are formatted: fields whose name says secret, token,
password, authorization or key (not ``idempotency_key``) are dropped, and every string is
scrubbed of credentials wherever they appear: ``Bearer``/``Basic``/``License`` credentials,
the bridge's own tokens, ``name=value`` and ``"name": "value"`` pairs of such names, license
keys in API paths and in "license 'KEY'" details, and the values in database error text
(SQLAlchemy's ``[parameters: ...]``, PostgreSQL's ``DETAIL`` and ``invalid input`` quotes).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import threading
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A field or parameter name that holds a secret: api_key, client_secret, access_token, key, ...
_SECRET_NAME = (
    r"[\w-]*(?:secret|token|password|passwd|authorization|credential|api[_-]?key)[\w-]*"  # noqa: S105
    r"|(?:[\w-]*[_-])?key"
)
_SECRET_FIELD = re.compile(rf"(?i)(?:{_SECRET_NAME})")
_NOT_SECRET = re.compile(r"(?i)idempotency|^(?:key_?count|keys?_total)$")


def _keep_ids(match: re.Match[str]) -> str:
    """Redact the ``value`` group unless it is a UUID (a resource id, not a secret)."""
    value = match.group("value")
    if _UUID.fullmatch(value) or value == "actions":
        return match.group(0)
    return f"{match.group('head')}{REDACTED}{match.group('tail')}"


def _pair(match: re.Match[str]) -> str:
    if not _secret_field(match.group("name")):
        return match.group(0)
    quote = match.group("vq") or ""
    return f"{match.group('head')}{quote}{REDACTED}{quote}"


_Scrub = tuple[tuple[str, ...], re.Pattern[str], str | Callable[[re.Match[str]], str]]
_SECRET_WORDS = ("secret", "token", "passw", "authoriz", "credential", "key")

# Each pattern with the words (lower case) a text must contain for it to apply: most values
# contain none and cost a few substring searches instead of the patterns' tens of microseconds.
# Order matters: credentials first (their values may contain "=" or quotes), then pairs.
_SCRUBS: tuple[_Scrub, ...] = (
    # HTTP credentials: Bearer and Basic anywhere; License where it starts a header value
    # (prose such as "license suspended" is left alone).
    (
        ("bearer ", "bearer\t", "basic ", "basic\t", "license ", "license\t"),
        re.compile(
            r"(?i)(?P<head>(?:\bbearer|\bbasic|(?:^|[\"':=]\s*)license)\s+)"
            r"(?P<value>[^\s\"',;)\]}]{6,})(?P<tail>)"
        ),
        _keep_ids,
    ),
    # The bridge's own tokens (admin-..., prod-..., activ-...), even without a scheme.
    (("admin-", "prod-", "activ-"), re.compile(r"\b(?:admin|prod|activ)-[0-9a-f]{64}\b"), REDACTED),
    # name=value, name: value, "name": "value", 'name': 'value' for secret names.
    (
        _SECRET_WORDS,
        re.compile(
            # Any word before ":" or "=", possessive (no backtracking); _pair checks the name.
            r"""(?P<head>(?P<q>["']?)\b(?P<name>[\w-]++)(?P=q)\s*[:=]\s*)"""
            r"""(?:(?P<vq>["']).*?(?P=vq)|[^\s,;&)\]}"']+)"""
        ),
        _pair,
    ),
    # License ids or keys in API paths and query strings: ids are kept, keys redacted.
    (
        ("/licenses/",),
        re.compile(r"(?P<head>/licenses/)(?P<value>[^/?#\s\"']+)(?P<tail>)"),
        _keep_ids,
    ),
    (
        ("license=",),
        re.compile(r"(?P<head>[?&]license=)(?P<value>[^&#\s\"']+)(?P<tail>)"),
        _keep_ids,
    ),
    # Keygen's not-found detail: "The requested license 'KEY' was not found".
    (
        ("license '",),
        re.compile(r"(?i)(?P<head>\blicense ')(?P<value>[^']*)(?P<tail>')"),
        _keep_ids,
    ),
    # Database error text: bound parameters, PostgreSQL's DETAIL and quoted input values.
    (("[parameters: ",), re.compile(r"\[parameters: [^\n]*"), f"[parameters: {REDACTED}]"),
    (("detail:",), re.compile(r"(?m)^DETAIL:.*$"), f"DETAIL:  {REDACTED}"),
    (
        ("invalid input",),
        re.compile(r"(?i)(invalid input (?:syntax|value) for [^:\n]*: )\"[^\"\n]*\""),
        rf"\1{REDACTED}",
    ),
)
_TRIGGER = re.compile("|".join(re.escape(w) for ws, _, _ in _SCRUBS for w in dict.fromkeys(ws)))


def scrub(text: str) -> str:
    """``text`` with every credential the patterns know replaced by ``[redacted]``."""
    low = text.lower()
    if _TRIGGER.search(low) is None:
        return text
    for words, pattern, replacement in _SCRUBS:
        if any(word in low for word in words):
            text = pattern.sub(replacement, text)
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, int | float):  # bool is an int
        return value
    if isinstance(value, dict):
        return {k: REDACTED if _secret_field(k) else _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return scrub(str(value))  # whatever it is, it is rendered as text: scrub that text


@functools.lru_cache(maxsize=1024)  # field names are few: decided once each
def _secret_field(name: Any) -> bool:
    return (
        isinstance(name, str)
        and bool(_SECRET_FIELD.fullmatch(name))
        and not _NOT_SECRET.search(name)
    )


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop secret fields and scrub every other value (run after exceptions are formatted)."""
    for name, value in event.items():
        if name not in _OWN:
            event[name] = REDACTED if _secret_field(name) else _clean(value)
    return event


_OWN = frozenset({"level", "timestamp", "logger"})  # written by the processors before redact


class _Stderr:
    """Standard error as it is at each write (tests and the CLI runner swap it): logs never
    mix with a command's output on stdout. structlog's logger and the standard library's
    handler each lock only themselves; one lock here keeps their lines whole between threads."""

    _lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_handler: logging.Handler | None = None
# Libraries whose INFO lines are noise next to ours (httpx logs every request it sends).
_QUIET = ("httpx", "httpcore", "alembic", "apscheduler")


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def resolve_format(fmt: str) -> str:
    """``console`` or ``json``: ``auto`` is console on a terminal, JSON otherwise."""
    if fmt == "auto":
        return "console" if _on_terminal() else "json"
    return fmt


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog, and route the standard library's records (uvicorn, Alembic,
    APScheduler, httpx) through the same context, redaction and renderer. ``fmt``: ``json``,
    ``console``, or ``auto`` (console on a terminal, JSON otherwise: a container, systemd, a
    pipe into a log shipper)."""
    global _handler  # noqa: PLW0603 (one configuration per process; a rerun replaces it)
    fmt = resolve_format(fmt)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.plain_traceback  # no local variables (secrets)
        )
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    _handler = handler
