"""The NetBox side: :class:`~proxbox.netbox.client.NetBoxClient` (pynetbox in a bounded executor)."""

from proxbox.netbox.client import NetBoxClient, RequestStats

__all__ = ["NetBoxClient", "RequestStats"]
