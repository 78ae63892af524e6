"""A fully commented configuration with every default, generated from the settings classes themselves."""

from __future__ import annotations

from typing import Any

import attrs

from proxbox.config import SECTIONS, ProxmoxSettings, to_toml

_EXAMPLE_VALUES: dict[tuple[str, str], Any] = {
    ("netbox", "url"): "https://netbox.example.com",
    ("netbox", "token_file"): "/run/credentials/proxbox.service/netbox-token",
    ("proxmox", "name"): "lab-a",
    ("proxmox", "host"): "pve1.example.com",
    ("proxmox", "user"): "netbox@pve",
    ("proxmox", "token_name"): "proxbox",
    ("proxmox", "token_value_file"): "/run/credentials/proxbox.service/pve-lab-a",
}


def _section(name: str, cls: type, header: str) -> list[str]:
    lines = [header]
    for f in attrs.fields(cls):
        if f.metadata.get("internal"):
            continue
        text = f.metadata.get("doc", "")
        value = _EXAMPLE_VALUES.get((name, f.name), f.default)
        if isinstance(value, attrs.Factory):  # type: ignore[arg-type]
            value = value.factory()
        plain = list(value) if isinstance(value, tuple) else value
        rendered = to_toml({"x": {f.name: plain}}).splitlines()[1]
        if text:
            lines.append(f"# {text}")
        commented = f.metadata.get("secret") or (name, f.name) not in _EXAMPLE_VALUES
        lines.append(("# " if commented else "") + rendered)
    lines.append("")
    return lines


def example_config() -> str:
    out = [
        "# proxbox configuration. Every key is shown with its default; uncomment to change it.",
        "# Any key can be overridden from the environment: PROXBOX_<SECTION>_<KEY>, e.g. PROXBOX_NETBOX_URL,",
        "# and PROXBOX_PROXMOX_<INDEX>_<KEY> for [[proxmox]] tables.",
        "# Secrets can come from files (the *_file keys).",
        "",
    ]
    for name, cls in SECTIONS.items():
        out += _section(name, cls, f"[{name}]")
    out += ["# One [[proxmox]] table per cluster (or standalone node) endpoint."]
    out += _section("proxmox", ProxmoxSettings, "[[proxmox]]")
    return "\n".join(out)
