"""Pure mapping: hand-built inventories → the NetBox objects they must produce."""

from __future__ import annotations

from proxbox.config import ProxmoxSettings
from proxbox.sync.mapping import apply_filters, desired_state, disk_mb, map_inventory, vcpus_value
from proxbox.sync.model import (
    CF_ORPHANED,
    CF_VMID,
    DEVICE,
    DISK,
    INTERFACE,
    IP,
    MAC,
    OWNER_TAG,
    PLATFORM,
    SITE,
    TAG,
    VM,
    Desired,
    DesiredState,
    Ref,
)
from tests.fixtures.sync import cluster, disk, guest, inventory, ip, make_settings, nic, node


def one(state: DesiredState, kind: str, key: tuple) -> Desired:
    found = [o for o in state.objects if o.kind == kind and o.key == key]
    assert len(found) == 1, f"{kind} {key}: {len(found)} objects"
    return found[0]


def keys(state: DesiredState, kind: str) -> set[tuple]:
    return {o.key for o in state.objects if o.kind == kind}


def test_guest_becomes_vm_identified_by_cluster_and_vmid_with_normalized_fields():
    g = guest(101, "web01", vcpus=2, memory_mb=4096, onboot=False, description="Web server\nsecond line")
    state = map_inventory(inventory(cluster("lab-a", guests=[g])), make_settings())
    vm = one(state, VM, ("lab-a", 101))
    assert vm.get("name") == "web01"
    assert vm.get("status") == "active"
    assert vm.get("vcpus") == "2.00"
    assert vm.get("memory") == 4096
    assert vm.get("start_on_boot") == "off"
    assert vm.get("description") == "Web server"
    assert vm.get(f"cf.{CF_VMID}") == 101
    assert vm.get(f"cf.{CF_ORPHANED}") is None
    assert vm.get("cluster") == Ref("cluster", ("lab-a",))
    assert vm.get("device") == Ref(DEVICE, ("lab-a", "pve1"))
    assert vm.get("role") == Ref("device_role", ("proxmox-vm",))
    assert vm.get("platform") == Ref(PLATFORM, ("linux",))
    assert vm.get("tags") == frozenset({OWNER_TAG})


def test_status_maps_running_stopped_paused_and_leaves_unknown_alone():
    guests = [
        guest(100, status="running"),
        guest(101, status="stopped"),
        guest(102, status="paused"),
        guest(103, status="unknown"),
        guest(104, status="running", template=True),
    ]
    state = map_inventory(inventory(cluster(guests=guests)), make_settings(include_templates=True))
    status = {o.key[1]: o.get("status", "KEEP") for o in state.by_kind(VM)}
    assert status == {100: "active", 101: "offline", 102: "paused", 103: "KEEP", 104: "offline"}


def test_lxc_container_gets_container_role_and_distribution_platform():
    g = guest(200, "ct1", kind="lxc", ostype="debian")
    vm = one(map_inventory(inventory(cluster(guests=[g])), make_settings()), VM, ("lab-a", 200))
    assert vm.get("role") == Ref("device_role", ("proxmox-container",))
    assert vm.get("platform") == Ref(PLATFORM, ("debian",))


def test_unknown_os_type_sets_no_platform():
    vm = one(
        map_inventory(inventory(cluster(guests=[guest(100, ostype="other")])), make_settings()),
        VM,
        ("lab-a", 100),
    )
    assert not vm.has("platform")


def test_same_name_in_two_clusters_gives_two_vms_with_plain_names():
    inv = inventory(
        cluster("lab-a", guests=[guest(100, "db", cluster="lab-a")]),
        cluster("lab-b", [node("pve1", "lab-b")], guests=[guest(100, "db", cluster="lab-b")]),
    )
    state = map_inventory(inv, make_settings())
    assert keys(state, VM) == {("lab-a", 100), ("lab-b", 100)}
    assert {o.get("name") for o in state.by_kind(VM)} == {"db"}


def test_same_name_twice_in_one_cluster_is_qualified_with_the_vmid():
    inv = inventory(cluster(guests=[guest(100, "db"), guest(101, "DB"), guest(102, "web")]))
    names = {o.key[1]: o.get("name") for o in map_inventory(inv, make_settings()).by_kind(VM)}
    assert names == {100: "db (100)", 101: "DB (101)", 102: "web"}


def test_nodes_with_the_same_name_on_one_site_are_qualified_with_their_cluster():
    inv = inventory(cluster("lab-a", [node("pve1", "lab-a")]), cluster("lab-b", [node("pve1", "lab-b")]))
    state = map_inventory(inv, make_settings())
    names = {o.key: o.get("name") for o in state.by_kind(DEVICE)}
    assert names == {("lab-a", "pve1"): "pve1 (lab-a)", ("lab-b", "pve1"): "pve1 (lab-b)"}


def test_nodes_with_the_same_name_on_different_sites_keep_their_name():
    endpoints = [
        ProxmoxSettings(name="lab-a", host="a", user="u@pve", site="Paris"),
        ProxmoxSettings(name="lab-b", host="b", user="u@pve", site="Berlin"),
    ]
    inv = inventory(cluster("lab-a", [node("pve1", "lab-a")]), cluster("lab-b", [node("pve1", "lab-b")]))
    state = map_inventory(inv, make_settings(endpoints))
    assert {o.get("name") for o in state.by_kind(DEVICE)} == {"pve1"}
    assert keys(state, SITE) == {("paris",), ("berlin",)}
    assert one(state, "cluster", ("lab-b",)).get("scope_id") == Ref(SITE, ("berlin",))


def test_default_site_is_used_when_the_endpoint_names_none():
    state = map_inventory(inventory(cluster()), make_settings(default_site="Main DC"))
    assert keys(state, SITE) == {("main-dc",)}


def test_node_device_has_status_identity_and_version():
    inv = inventory(cluster(nodes=[node("pve1"), node("pve2", online=False, pve_version=None)]))
    state = map_inventory(inv, make_settings())
    up, down = one(state, DEVICE, ("lab-a", "pve1")), one(state, DEVICE, ("lab-a", "pve2"))
    assert (up.get("status"), down.get("status")) == ("active", "offline")
    assert up.get("cf.proxmox_node") == "pve1"
    assert up.get("description") == "Proxmox VE 9.1.2"
    assert not down.has("description")  # unknown: left as NetBox has it


def test_interfaces_one_per_nic_with_mac_object_and_vlan_mode():
    nics = (
        nic(0, mac="bc:24:11:aa:bb:01", vlan=30),
        nic(1, mac="BC:24:11:AA:BB:02", trunks=(10, 20)),
        nic(2, mac=None),
    )
    state = map_inventory(inventory(cluster(guests=[guest(100, nics=nics, ips=())])), make_settings())
    ifaces = {o.key[2]: o for o in state.by_kind(INTERFACE)}
    assert set(ifaces) == {"net0", "net1", "net2"}
    assert ifaces["net0"].get("mode") == "access"
    assert ifaces["net0"].get("description") == "virtio on vmbr0 VLAN 30"
    assert ifaces["net1"].get("mode") == "tagged"
    assert ifaces["net2"].get("mode") is None
    assert ifaces["net0"].get("primary_mac_address") == Ref(MAC, ("lab-a", 100, "net0"))
    assert ifaces["net2"].get("primary_mac_address") is None
    macs = {o.key[2]: o.get("mac_address") for o in state.by_kind(MAC)}
    assert macs == {"net0": "BC:24:11:AA:BB:01", "net1": "BC:24:11:AA:BB:02"}


def test_ips_go_to_their_own_interface_skipping_loopback_link_local_and_unattributed():
    ips = (
        ip("10.0.0.10/24", "net0"),
        ip("127.0.0.1/8", "net0", loopback=True),
        ip("fe80::1/64", "net0", link_local=True),
        ip("FD00:0:0:0::5/64", "net1"),
        ip("172.17.0.1/16", None),
        ip("10.0.0.10/24", "net1"),  # the same address seen twice: written once, on the first NIC
    )
    g = guest(100, nics=(nic(0), nic(1)), ips=ips)
    state = map_inventory(inventory(cluster(guests=[g])), make_settings())
    assert keys(state, IP) == {("lab-a", 100, "net0", "10.0.0.10/24"), ("lab-a", 100, "net1", "fd00::5/64")}
    addr = one(state, IP, ("lab-a", 100, "net1", "fd00::5/64"))
    assert addr.get("assigned_object_id") == Ref(INTERFACE, ("lab-a", 100, "net1"))
    assert addr.parent == Ref(INTERFACE, ("lab-a", 100, "net1"))


def test_primary_ips_are_the_first_of_each_family_by_nic_order():
    ips = (ip("10.0.1.5/24", "net1"), ip("fd00::9/64", "net1"), ip("10.0.0.5/24", "net0"))
    g = guest(100, nics=(nic(0), nic(1)), ips=ips)
    vm = one(
        map_inventory(inventory(cluster(guests=[g])), make_settings(primary_ip="always")), VM, ("lab-a", 100)
    )
    assert vm.get("primary_ip4") == Ref(IP, ("lab-a", 100, "net0", "10.0.0.5/24"))
    assert vm.get("primary_ip6") == Ref(IP, ("lab-a", 100, "net1", "fd00::9/64"))
    assert "primary_ip4" not in vm.create_only


def test_primary_ip_policy_when_undefined_is_create_only_and_never_leaves_it_out():
    inv = inventory(cluster(guests=[guest(100)]))
    vm = one(map_inventory(inv, make_settings(primary_ip="when-undefined")), VM, ("lab-a", 100))
    assert {"primary_ip4", "primary_ip6"} <= vm.create_only
    vm = one(map_inventory(inv, make_settings(primary_ip="never")), VM, ("lab-a", 100))
    assert not vm.has("primary_ip4") and not vm.has("primary_ip6")
    vm = one(
        map_inventory(inv, make_settings(primary_ip="always", overwrite_primary_ip=False)), VM, ("lab-a", 100)
    )
    assert "primary_ip4" in vm.create_only


def test_overwrite_switches_make_fields_create_only():
    inv = inventory(cluster(guests=[guest(100)]))
    settings = make_settings(
        overwrite_role=False, overwrite_description=False, overwrite_tags=False, overwrite_platform=False
    )
    vm = one(map_inventory(inv, settings), VM, ("lab-a", 100))
    assert {"role", "description", "tags", "platform"} <= vm.create_only
    vm = one(map_inventory(inv, make_settings()), VM, ("lab-a", 100))
    assert not {"role", "description", "tags", "platform"} & vm.create_only


def test_virtual_disks_only_for_real_disks_with_a_size_in_mb_rounded_up():
    disks = (
        disk("scsi0", 32),
        disk("virtio1", 0.5),
        disk("efidisk0", 0.004),
        disk("tpmstate0", 0.004),
        disk("mp1", None, storage=None, volume="/mnt/shared"),
    )
    state = map_inventory(inventory(cluster(guests=[guest(100, disks=disks)])), make_settings())
    sizes = {o.key[2]: o.get("size") for o in state.by_kind(DISK)}
    assert sizes == {"scsi0": 32768, "virtio1": 512}
    assert disk_mb(1) == 1 and disk_mb(1024**2 + 1) == 2


def test_proxmox_tags_are_mirrored_as_tags_with_slugs():
    g = guest(100, tags=("Prod", "web+db", "proxbox"))
    state = map_inventory(inventory(cluster(guests=[g])), make_settings())
    vm = one(state, VM, ("lab-a", 100))
    assert vm.get("tags") == frozenset({OWNER_TAG, "prod", "web-db"})
    assert {("prod",), ("web-db",)} <= keys(state, TAG)


def test_guest_whose_config_could_not_be_read_keeps_its_details_and_children():
    g = guest(100, config_complete=False, vcpus=4.0, tags=("prod",))
    state = map_inventory(inventory(cluster(guests=[g])), make_settings())
    vm = one(state, VM, ("lab-a", 100))
    assert not vm.has("vcpus") and not vm.has("memory") and not vm.has("description")
    assert "tags" in vm.create_only
    assert not state.by_kind(INTERFACE) and not state.by_kind(DISK)
    assert state.children_unknown == frozenset({("lab-a", 100)})


def test_guest_whose_addresses_could_not_be_read_is_marked_so_no_ip_is_removed():
    state = map_inventory(inventory(cluster(guests=[guest(100, ips_complete=False)])), make_settings())
    assert state.ips_unknown == frozenset({("lab-a", 100)})
    assert "primary_ip4" in one(state, VM, ("lab-a", 100)).create_only


def test_filters_select_but_presence_counts_every_guest():
    guests = [
        guest(100, "web01"),
        guest(101, "db01", tags=("skip",)),
        guest(102, "tmpl", template=True),
        guest(103, "off", status="stopped"),
        guest(104, "web02", node="pve2"),
    ]
    inv = inventory(
        cluster(guests=guests), cluster("lab-b", [node("pve1", "lab-b")], [guest(100, cluster="lab-b")])
    )
    settings = make_settings(
        exclude_tags=("skip",), include_stopped=False, exclude_nodes=("pve2",), exclude_clusters=("lab-b",)
    )
    filtered = apply_filters(inv, settings.sync)
    assert filtered.skipped_clusters == ("lab-b",)
    state = desired_state(inv, filtered.inventory, settings, "full")
    assert keys(state, VM) == {("lab-a", 100)}
    assert keys(state, DEVICE) == {("lab-a", "pve1")}
    assert state.clusters == frozenset({"lab-a"})
    assert ("lab-a", 101) in state.present_guests and ("lab-b", 100) in state.present_guests


def test_guest_name_regexes_must_match_the_whole_name():
    inv = inventory(cluster(guests=[guest(100, "web01"), guest(101, "preweb"), guest(102, "db")]))
    state = map_inventory(inv, make_settings(include_guests=("web.*",)))
    assert keys(state, VM) == {("lab-a", 100)}


def test_cluster_is_complete_only_when_every_node_was_read():
    inv = inventory(
        cluster("lab-a", complete_nodes=["pve1"]),
        cluster("lab-b", [node("pve1", "lab-b")]),
    )
    state = map_inventory(inv, make_settings())
    assert state.complete_clusters == frozenset({"lab-b"})


def test_nodes_run_maps_clusters_and_devices_only():
    inv = inventory(cluster(guests=[guest(100)]))
    state = map_inventory(inv, make_settings(), "nodes")
    assert not state.by_kind(VM) and state.by_kind(DEVICE)
    assert VM not in state.managed
    vms = map_inventory(inv, make_settings(), "vms")
    assert vms.by_kind(VM) and vms.by_kind(DEVICE)  # devices are mapped (VMs point at them) but not managed
    assert DEVICE not in vms.managed


def test_vcpus_value_is_two_decimal_places():
    assert vcpus_value(1) == "1.00"
    assert vcpus_value(0.5) == "0.50"
    assert vcpus_value(None) is None
    assert vcpus_value(0) is None
