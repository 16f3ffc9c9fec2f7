"""The error codes are an API: unique, upper-snake, and documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.domain import errors
from bridge.domain.errors import all_error_classes

README = Path(__file__).resolve().parents[1] / "README.md"


def test_codes_are_unique_and_upper_snake() -> None:
    """No two error classes share a code, and every code is UPPER_SNAKE."""
    codes = [cls.code for cls in all_error_classes()]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", code) for code in codes)


def test_every_code_is_in_the_readme_and_the_module_tree() -> None:
    """Each code appears in the README's error table and in the errors module docstring."""
    readme = README.read_text()
    tree = errors.__doc__ or ""
    for cls in all_error_classes():
        assert f"`{cls.code}`" in readme, f"{cls.code} missing from README.md"
        assert cls.code in tree, f"{cls.code} missing from the bridge.domain.errors docstring"


def test_statuses_are_client_errors_or_unavailable() -> None:
    """Every concrete error is a 4xx or a 503; only the base class is a 500."""
    for cls in all_error_classes():
        if cls is errors.BridgeError:
            continue
        assert 400 <= cls.status < 500 or cls.status == 503, cls
