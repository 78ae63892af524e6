"""The Proxmox VE source: a blocking proxmoxer client behind a bounded executor, and typed discovery.

- :mod:`proxbox.proxmox.models` — the typed inventory values (shared contract).
- :mod:`proxbox.proxmox.parse` — raw API payloads → those values (``*_from_api`` named constructors).
- :mod:`proxbox.proxmox.client` — :class:`~proxbox.proxmox.client.PveClient`, retries and error translation.
- :mod:`proxbox.proxmox.discovery` — :func:`~proxbox.proxmox.discovery.discover_all`.
"""
