"""The harness gives a real NetBox that pynetbox can write to and read from, and resets it to empty."""

from __future__ import annotations

import pynetbox
import pytest


def test_cluster_with_tag_written_through_pynetbox_reads_back(netbox):
    api = netbox.api()
    tag = api.extras.tags.create(name="proxbox", slug="proxbox", color="ff5722")
    ctype = api.virtualization.cluster_types.create(name="Proxmox VE", slug="proxmox-ve")
    created = api.virtualization.clusters.create(name="lab-a", type=ctype.id, tags=[tag.id], status="active")

    fetched = api.virtualization.clusters.get(created.id)

    assert fetched.name == "lab-a"
    assert fetched.type.slug == "proxmox-ve"
    assert [t.slug for t in fetched.tags] == ["proxbox"]
    assert [c.id for c in api.virtualization.clusters.filter(tag="proxbox")] == [created.id]


def test_reset_returns_an_empty_netbox(netbox):
    api = netbox.api()
    api.dcim.sites.create(name="left-over", slug="left-over")
    assert api.dcim.sites.count() == 1

    netbox.instance.reset()

    assert api.dcim.sites.count() == 0
    assert netbox.change_count() == 0


def test_netbox_rejects_a_wrong_token(netbox):
    api = pynetbox.api(netbox.url, token="0" * 40)
    with pytest.raises(pynetbox.RequestError) as excinfo:
        api.dcim.sites.count()
    assert excinfo.value.req.status_code == 403
