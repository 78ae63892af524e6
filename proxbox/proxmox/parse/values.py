"""Tolerant scalars and PVE property strings: the building blocks every payload parser uses."""

from __future__ import annotations

import re
from typing import Any

# ---------------------------------------------------------------------------------------- tolerant scalars

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def as_bool(value: Any, default: bool = False) -> bool:
    """0/1, "0"/"1", true/false, "yes"/"no" → bool; anything else → ``default``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return default


def as_int(value: Any) -> int | None:
    """An integer from an int, a float or a numeric string ("4096", "4096.0"); otherwise None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value else None  # NaN
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
            return int(number) if number == number and abs(number) != float("inf") else None
    return None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def as_str(value: Any) -> str | None:
    """A non-empty string (numbers are stringified); None for missing/empty/containers."""
    if value is None or isinstance(value, dict | list | tuple | bool):
        return None
    text = str(value).strip()
    return text or None


def split_tags(value: Any) -> tuple[str, ...]:
    """PVE tags: ``"prod;web"`` (also ``,`` or spaces); order kept, duplicates dropped."""
    text = as_str(value)
    if not text:
        return ()
    seen: dict[str, None] = {}
    for tag in re.split(r"[;,\s]+", text):
        if tag:
            seen.setdefault(tag, None)
    return tuple(seen)


# ---------------------------------------------------------------------------------------- property strings


def split_property_string(text: str) -> list[tuple[str | None, str]]:
    """``"local-lvm:vm-100-disk-0,size=32G"`` → ``[(None, "local-lvm:vm-100-disk-0"), ("size", "32G")]``.

    A token without ``=`` has key None (PVE's "default key"). Values may be double-quoted to contain commas
    (``description="a, b"``), with backslash escapes inside the quotes.
    """
    tokens: list[tuple[str | None, str]] = []
    if '"' not in text:  # the common case: no quoting, a plain split
        for raw in text.split(","):
            _add_token(tokens, raw)
        return tokens
    buf: list[str] = []
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            buf.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            _add_token(tokens, "".join(buf))
            buf = []
        else:
            buf.append(ch)
    _add_token(tokens, "".join(buf))
    return tokens


def _add_token(tokens: list[tuple[str | None, str]], raw: str) -> None:
    raw = raw.strip()
    if not raw:
        return
    key, sep, value = raw.partition("=")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", key.strip()):
        tokens.append((key.strip(), value.strip()))
    else:
        tokens.append((None, raw))


def property_dict(text: Any, default_key: str | None = None) -> dict[str, str]:
    """A property string as a dict; the bare first token lands under ``default_key`` (if given)."""
    source = as_str(text)
    if source is None:
        return {}
    out: dict[str, str] = {}
    for key, value in split_property_string(source):
        if key is None:
            if default_key is not None and default_key not in out:
                out[default_key] = value
        else:
            out.setdefault(key, value)
    return out


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_size(value: Any) -> int | None:
    """``"32G"`` → 34359738368; ``"528K"``, ``"1.5T"``, ``"4096"`` (bytes); missing/garbage → None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    text = as_str(value)
    if text is None:
        return None
    match = _SIZE_RE.match(text)
    if not match:
        return None
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def normalize_mac(value: Any) -> str | None:
    """Any common MAC spelling → ``"BC:24:11:5E:7A:01"``; None for garbage and the all-zero MAC."""
    text = as_str(value)
    if text is None:
        return None
    digits = re.sub(r"[^0-9A-Fa-f]", "", text)
    if len(digits) != 12 or len(re.sub(r"[:\-.\s]", "", text)) != 12:
        return None
    if set(digits) == {"0"}:
        return None
    digits = digits.upper()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))
