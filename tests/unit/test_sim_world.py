"""The world generator: sizes, determinism, per-object seeding and the variety a sync must handle."""

from __future__ import annotations

import collections
import ipaddress
import json
import re

import pytest

from proxbox.sim import dump, generate
from proxbox.sim.generate import Profile, cluster_name
from proxbox.sim.model import format_size, hashed_mac, parse_size, pool_address


def test_sizes_are_exactly_clusters_times_nodes_with_guests_each():
    world = generate(seed=3, clusters=3, nodes=4, guests=25)
    assert [c.name for c in world.clusters] == ["lab-a", "lab-b", "lab-c"]
    for c in world.clusters:
        assert len(c.nodes) == 4
        assert len(c.guests) == 25
        assert not c.standalone


def test_vmids_start_at_100_in_every_cluster_and_collide_across_clusters():
    world = generate(seed=1, clusters=2, nodes=2, guests=10)
    a, b = (sorted(c.guests) for c in world.clusters)
    assert a == b == list(range(100, 110))


def test_guest_names_repeat_across_clusters_but_not_within_one():
    world = generate(seed=5, clusters=3, nodes=2, guests=30)
    names = [{g.name for g in c.guests.values()} for c in world.clusters]
    for c in world.clusters:
        assert len({g.name for g in c.guests.values()}) == len(c.guests)
    assert names[0] & names[1] & names[2]


def test_qemu_lxc_mix_is_about_seventy_thirty():
    world = generate(seed=11, clusters=1, nodes=3, guests=1000)
    kinds = collections.Counter(g.kind for g in world.clusters[0].guests.values())
    assert 0.64 < kinds["qemu"] / 1000 < 0.76


def test_same_arguments_give_byte_identical_dumps():
    one = json.dumps(dump(generate(seed=42, clusters=2, nodes=3, guests=40, standalone=1)))
    two = json.dumps(dump(generate(seed=42, clusters=2, nodes=3, guests=40, standalone=1)))
    other = json.dumps(dump(generate(seed=43, clusters=2, nodes=3, guests=40, standalone=1)))
    assert one == two
    assert one != other


def test_adding_guests_does_not_reshuffle_existing_ones():
    small = dump(generate(seed=9, clusters=1, nodes=2, guests=10))["clusters"][0]["guests"]
    large = dump(generate(seed=9, clusters=1, nodes=2, guests=30))["clusters"][0]["guests"]
    assert large[:10] == small


def test_standalone_endpoints_are_single_node_and_named_after_their_node():
    world = generate(seed=1, clusters=1, nodes=2, guests=4, standalone=2)
    standalone = [c for c in world.clusters if c.standalone]
    assert [c.name for c in standalone] == ["pve-s1", "pve-s2"]
    for c in standalone:
        assert [n.name for n in c.nodes] == [c.name]
        assert len(c.guests) == 4


def test_offline_node_starts_offline_and_unknown_ones_are_rejected():
    world = generate(seed=1, clusters=1, nodes=3, guests=3, offline=["lab-a/pve-a2"])
    assert [n.online for n in world.clusters[0].nodes] == [True, False, True]
    with pytest.raises(ValueError, match="no node"):
        generate(seed=1, clusters=1, nodes=3, guests=3, offline=["lab-a/pve-a9"])


def test_rejects_empty_worlds_and_guest_counts_beyond_the_address_pool():
    with pytest.raises(ValueError):
        generate(clusters=0, standalone=0)
    with pytest.raises(ValueError, match="guests per endpoint"):
        generate(clusters=1, guests=2501)


def test_macs_are_proxmox_oui_upper_case_and_unique_across_the_world():
    world = generate(seed=2, clusters=3, nodes=2, guests=300)
    macs = [n.mac for c in world.clusters for g in c.guests.values() for n in g.nics]
    assert all(re.fullmatch(r"BC:24:11(:[0-9A-F]{2}){3}", m) for m in macs)
    assert len(macs) == len(set(macs))
    assert hashed_mac("lab-a", 100, 0) == hashed_mac("lab-a", 100, 0) != hashed_mac("lab-b", 100, 0)


def test_guest_addresses_come_from_per_cluster_pools_and_never_collide():
    world = generate(seed=4, clusters=2, nodes=2, guests=600)
    seen: set[str] = set()
    for c in world.clusters:
        for g in c.guests.values():
            for nic in g.nics:
                if nic.ip4:
                    assert nic.ip4.startswith(f"10.{c.index}.")
                    assert nic.ip4 not in seen
                    seen.add(nic.ip4)
                    if nic.gw4:
                        assert ipaddress.ip_address(nic.gw4) in ipaddress.ip_interface(nic.ip4).network
    assert pool_address(1, 20, 0) == ("10.1.20.2/24", "10.1.20.1")
    assert pool_address(1, None, 250) == ("10.1.101.2/24", "10.1.101.1")


def test_a_medium_world_has_the_variety_a_sync_must_handle():
    world = generate(seed=1, clusters=2, nodes=3, guests=200)
    guests = [g for c in world.clusters for g in c.guests.values()]
    qemu = [g for g in guests if g.kind == "qemu"]
    lxc = [g for g in guests if g.kind == "lxc"]
    assert {g.status for g in guests} == {"running", "stopped"}
    assert any(g.template for g in qemu)
    assert {g.agent for g in qemu if g.agent_config not in (None, "0")} == {"answering", "silent"}
    assert any(g.agent_config is None for g in qemu) and any(g.agent_config == "0" for g in qemu)
    assert any(g.ostype.startswith("win") for g in qemu)
    assert any(len(g.nics) > 1 for g in qemu)
    assert {n.vlan for g in guests for n in g.nics} >= {None, 10, 20, 30}
    assert any(n.trunks for g in qemu for n in g.nics)
    assert any(g.cloudinit for g in qemu)
    buses = {d.bus for g in qemu for d in g.disks}
    assert {"scsi", "virtio", "sata", "ide", "efidisk", "unused"} <= buses
    assert any(d.media == "cdrom" for g in qemu for d in g.disks)
    assert {n.mode4 for g in lxc for n in g.nics} >= {"static", "dhcp"}
    assert "auto" in {n.mode6 for g in lxc for n in g.nics}
    assert any(d.volume.startswith("/") for g in lxc for d in g.disks)  # bind mount
    assert any(g.noise for g in qemu)
    assert any(g.snapshots for g in guests)
    assert any(c.backups for c in world.clusters)


def test_profile_knobs_shape_the_world():
    world = generate(
        seed=1, clusters=1, nodes=1, guests=50, profile=Profile(lxc=0.0, running=1.0, template=0.0)
    )
    assert {g.kind for g in world.clusters[0].guests.values()} == {"qemu"}
    assert {g.status for g in world.clusters[0].guests.values()} == {"running"}


def test_cluster_names_continue_past_z():
    assert [cluster_name(i) for i in (0, 25, 26, 27)] == ["lab-a", "lab-z", "lab-aa", "lab-ab"]


@pytest.mark.parametrize(
    ("size", "text"), [(32 * 2**30, "32G"), (4 * 2**20, "4M"), (2**40, "1T"), (528 * 1024, "528K")]
)
def test_sizes_round_trip_through_pve_suffixes(size, text):
    assert format_size(size) == text
    assert parse_size(text) == size
