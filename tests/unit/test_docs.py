"""The operator documents cannot rot: every setting is in docs/configuration.md (with its default, type and
environment variable), every error code in docs/operations.md, and deploy/proxbox.toml.example is exactly
what ``proxbox config example`` prints."""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal

import attrs

import proxbox.errors
from proxbox.config import SECTIONS, ProxmoxSettings, to_toml
from proxbox.config_example import example_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
        tp.__name__, tp.__name__
    )


def default_text(field: attrs.Attribute) -> str:  # type: ignore[type-arg]
    value = field.default
    if isinstance(value, tuple):
        value = list(value)
    return "`" + to_toml({"x": {"v": value}}).splitlines()[1].removeprefix("v = ") + "`"


def env_name(section: str, key: str) -> str:
    if section == "proxmox":
        return f"`PROXBOX_PROXMOX_<N>_{key.upper()}`"
    return f"`PROXBOX_{section.upper()}_{key.upper()}`"


def rows(section: str, cls: type) -> list[str]:
    """The table rows docs/configuration.md must contain, one per key, generated from the settings class."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in attrs.fields(cls):
        if f.metadata.get("internal"):
            continue
        doc = f.metadata.get("doc", "").replace("|", "\\|")
        secret = " (secret: never logged or printed)" if f.metadata.get("secret") else ""
        out.append(
            f"| `{f.name}` | {type_name(hints[f.name])} | {default_text(f)} | {env_name(section, f.name)} |"
            f" {doc}{secret} |"
        )
    return out


ALL_SECTIONS = [*SECTIONS.items(), ("proxmox", ProxmoxSettings)]


def test_every_setting_is_documented_with_its_type_default_and_environment_variable() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [row for section, cls in ALL_SECTIONS for row in rows(section, cls) if row not in text]
    assert not missing, "docs/configuration.md is missing (or has stale) rows:\n" + "\n".join(missing)


def test_configuration_doc_names_no_key_that_does_not_exist() -> None:
    text = (DOCS / "configuration.md").read_text()
    known = {f.name for _, cls in ALL_SECTIONS for f in attrs.fields(cls)}
    documented = {line.split("`")[1] for line in text.splitlines() if line.startswith("| `")}
    assert documented <= known, f"documented keys that are not settings: {sorted(documented - known)}"


def error_codes() -> dict[str, type]:
    return {
        cls.code: cls
        for _, cls in inspect.getmembers(proxbox.errors, inspect.isclass)
        if issubclass(cls, proxbox.errors.ProxboxError)
    }


def test_every_error_code_has_a_troubleshooting_entry() -> None:
    text = (DOCS / "operations.md").read_text()
    missing = sorted(code for code in error_codes() if f"### `{code}`" not in text)
    assert not missing, f"docs/operations.md has no '### `code`' entry for: {missing}"


def test_example_config_is_what_config_example_prints() -> None:
    shipped = (ROOT / "deploy" / "proxbox.toml.example").read_text()
    assert shipped == example_config(), (
        "deploy/proxbox.toml.example is stale: proxbox config example > deploy/proxbox.toml.example"
    )


def print_rows() -> None:  # pragma: no cover - a helper for whoever adds a setting
    for section, cls in ALL_SECTIONS:
        print(f"\n[{section}]")
        print("\n".join(rows(section, cls)))


if __name__ == "__main__":  # pragma: no cover
    print_rows()
