"""Parsing of Proxmox VE payloads: every example of /work/shared/notes/proxmox-api.md, plus the odd cases."""

from __future__ import annotations

import pytest

from proxbox.proxmox import parse
from proxbox.proxmox.models import Disk, IpAddress, Nic

G = 1024**3
M = 1024**2
K = 1024

# -------------------------------------------------------------------------------------- tolerant scalars


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, True),
        (0, False),
        ("1", True),
        ("0", False),
        (True, True),
        ("true", True),
        ("False", False),
        (None, False),
    ],
)
def test_booleans_accept_integers_strings_and_json_booleans(value, expected):
    assert parse.as_bool(value) is expected


def test_unknown_boolean_spelling_falls_back_to_the_default():
    assert parse.as_bool("maybe", default=True) is True
    assert parse.as_bool([], default=False) is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [("4096", 4096), (4096, 4096), ("4096.0", 4096), (2.7, 2), ("x", None), (None, None)],
)
def test_integers_accept_numbers_sent_as_strings(value, expected):
    assert parse.as_int(value) == expected


def test_loadavg_strings_parse_as_floats():
    assert [parse.as_float(v) for v in ["0.12", "0.30", "0.25"]] == [0.12, 0.30, 0.25]
    assert parse.as_float("n/a") is None


def test_tags_split_on_semicolons_and_keep_order_without_duplicates():
    assert parse.split_tags("prod;web") == ("prod", "web")
    assert parse.split_tags("b,a;b a") == ("b", "a")
    assert parse.split_tags(None) == ()


# ------------------------------------------------------------------------------------- property strings


def test_property_string_keeps_the_bare_first_token_under_the_default_key():
    props = parse.property_dict("local-lvm:vm-100-disk-0,iothread=1,size=32G,ssd=1", default_key="file")
    assert props == {"file": "local-lvm:vm-100-disk-0", "iothread": "1", "size": "32G", "ssd": "1"}


def test_property_string_options_come_in_any_order_and_quoted_values_may_hold_commas():
    assert parse.split_property_string('size=8G,a="x, y",local:vol') == [
        ("size", "8G"),
        ("a", "x, y"),
        (None, "local:vol"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("32G", 32 * G),
        ("200G", 200 * G),
        ("650M", 650 * M),
        ("4M", 4 * M),
        ("528K", 528 * K),
        ("1T", 1024 * G),
    ],
)
def test_sizes_with_suffix_become_bytes(text, expected):
    assert parse.parse_size(text) == expected


def test_size_without_suffix_is_bytes_and_missing_or_garbage_is_none():
    assert parse.parse_size("4096") == 4096
    assert parse.parse_size("1.5G") == int(1.5 * G)
    assert parse.parse_size(None) is None
    assert parse.parse_size("big") is None


@pytest.mark.parametrize(
    "text",
    ["bc:24:11:5e:7a:01", "BC:24:11:5E:7A:01", "bc-24-11-5e-7a-01", "bc2411.5e7a01", " BC:24:11:5e:7A:01 "],
)
def test_macs_normalize_to_upper_case_colon_form(text):
    assert parse.normalize_mac(text) == "BC:24:11:5E:7A:01"


def test_garbage_and_all_zero_macs_are_no_mac():
    assert parse.normalize_mac("00:00:00:00:00:00") is None
    assert parse.normalize_mac("not a mac") is None
    assert parse.normalize_mac("BC:24:11:5E:7A") is None
    assert parse.normalize_mac(None) is None


# ------------------------------------------------------------------------------------------------- disks


def test_scsi_disk_example():
    disk = parse.disk_from_api("scsi0", "local-lvm:vm-100-disk-0,iothread=1,size=32G,ssd=1")
    assert disk == Disk(
        name="scsi0",
        bus="scsi",
        index=0,
        storage="local-lvm",
        volume="local-lvm:vm-100-disk-0",
        size_bytes=32 * G,
    )


def test_virtio_disk_example_with_options_before_size():
    disk = parse.disk_from_api("virtio1", "ceph-rbd:vm-100-disk-1,backup=0,cache=writeback,size=200G")
    assert disk is not None
    assert (disk.bus, disk.index, disk.storage, disk.size_bytes) == ("virtio", 1, "ceph-rbd", 200 * G)


@pytest.mark.parametrize(
    "value", ["local:iso/debian-13.iso,media=cdrom,size=650M", "none,media=cdrom", "cdrom,media=cdrom"]
)
def test_cdrom_drives_are_not_disks(value):
    assert parse.disk_from_api("ide2", value) is None


def test_unused_volumes_are_not_disks():
    assert parse.disk_from_api("unused0", "local-lvm:vm-100-disk-3") is None


def test_efidisk_is_a_small_disk_on_its_own_bus():
    disk = parse.disk_from_api("efidisk0", "local-lvm:vm-100-disk-2,efitype=4m,pre-enrolled-keys=1,size=4M")
    assert disk is not None
    assert (disk.bus, disk.index, disk.size_bytes, disk.volume) == (
        "efidisk",
        0,
        4 * M,
        "local-lvm:vm-100-disk-2",
    )


def test_tpmstate_is_a_disk_on_its_own_bus():
    disk = parse.disk_from_api("tpmstate0", "local-lvm:vm-100-disk-3,size=4M,version=v2.0")
    assert disk is not None
    assert (disk.bus, disk.size_bytes) == ("tpmstate", 4 * M)


def test_disk_without_size_has_unknown_size():
    disk = parse.disk_from_api("sata0", "local-lvm:vm-100-disk-4")
    assert disk is not None
    assert disk.size_bytes is None


def test_passthrough_disk_has_no_storage():
    disk = parse.disk_from_api("scsi3", "/dev/disk/by-id/ata-ST4000-Z1,backup=0,size=3815447M")
    assert disk is not None
    assert disk.storage is None
    assert disk.volume == "/dev/disk/by-id/ata-ST4000-Z1"
    assert disk.size_bytes == 3815447 * M


def test_non_disk_keys_are_not_disks():
    for key in ("net0", "scsihw", "ipconfig0", "numa0", "virtiofs0", "boot"):
        assert parse.disk_from_api(key, "local-lvm:x,size=1G") is None


def test_lxc_rootfs_example_mounts_at_root():
    disk = parse.lxc_disk_from_api("rootfs", "local-lvm:vm-200-disk-0,size=8G")
    assert disk == Disk(
        name="rootfs",
        bus="rootfs",
        index=0,
        storage="local-lvm",
        volume="local-lvm:vm-200-disk-0",
        size_bytes=8 * G,
        mountpoint="/",
    )


def test_lxc_mount_point_example():
    disk = parse.lxc_disk_from_api("mp0", "local-lvm:vm-200-disk-1,mp=/srv/data,backup=1,size=50G")
    assert disk is not None
    assert (disk.bus, disk.index, disk.storage, disk.size_bytes, disk.mountpoint) == (
        "mp",
        0,
        "local-lvm",
        50 * G,
        "/srv/data",
    )


def test_lxc_bind_mount_has_no_storage_and_no_size():
    disk = parse.lxc_disk_from_api("mp1", "/mnt/shared,mp=/shared")
    assert disk is not None
    assert (disk.storage, disk.size_bytes, disk.volume, disk.mountpoint) == (
        None,
        None,
        "/mnt/shared",
        "/shared",
    )


def test_lxc_unused_volume_is_not_a_disk():
    assert parse.lxc_disk_from_api("unused0", "local-lvm:vm-200-disk-9") is None


# -------------------------------------------------------------------------------------------------- NICs


def test_nic_example():
    nic = parse.nic_from_api("net0", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0,firewall=1,tag=30")
    assert nic == Nic(name="net0", index=0, model="virtio", mac="BC:24:11:5E:7A:01", bridge="vmbr0", vlan=30)


def test_nic_trunks_link_down_and_mtu():
    nic = parse.nic_from_api(
        "net2", "e1000=bc:24:11:00:00:02,bridge=vmbr1,trunks=10;20,link_down=1,mtu=9000,queues=4"
    )
    assert nic is not None
    assert (nic.index, nic.model, nic.mac, nic.trunks, nic.link_down, nic.mtu, nic.vlan) == (
        2,
        "e1000",
        "BC:24:11:00:00:02",
        (10, 20),
        True,
        9000,
        None,
    )


def test_nic_trunk_ranges_are_expanded():
    nic = parse.nic_from_api("net0", "virtio=BC:24:11:00:00:03,bridge=vmbr0,trunks=10-12;20")
    assert nic is not None
    assert nic.trunks == (10, 11, 12, 20)


def test_legacy_nic_spelling_model_and_macaddr():
    nic = parse.nic_from_api("net1", "model=vmxnet3,macaddr=BC:24:11:AA:BB:CC,bridge=vmbr0,tag=20")
    assert nic is not None
    assert (nic.model, nic.mac, nic.vlan, nic.bridge) == ("vmxnet3", "BC:24:11:AA:BB:CC", 20, "vmbr0")


def test_nic_with_only_model_and_mac():
    nic = parse.nic_from_api("net0", "rtl8139=BC:24:11:00:00:04")
    assert nic is not None
    assert (nic.model, nic.mac, nic.bridge) == ("rtl8139", "BC:24:11:00:00:04", None)


LXC_NET0_EXAMPLE = (
    "name=eth0,bridge=vmbr0,firewall=1,gw=10.30.0.1,hwaddr=BC:24:11:9A:00:01,"
    "ip=10.30.0.53/24,ip6=auto,tag=30,type=veth"
)


def test_lxc_nic_example_gives_the_nic_and_its_static_ipv4():
    parsed = parse.lxc_nic_from_api(
        "net0",
        LXC_NET0_EXAMPLE,
    )
    assert parsed is not None
    nic, ips = parsed
    assert nic == Nic(
        name="net0",
        index=0,
        model="veth",
        mac="BC:24:11:9A:00:01",
        bridge="vmbr0",
        vlan=30,
        guest_name="eth0",
    )
    assert ips == (IpAddress(address="10.30.0.53/24", family=4, nic="net0", source="lxc-config"),)


@pytest.mark.parametrize(("ip", "ip6"), [("dhcp", "dhcp"), ("manual", "manual"), ("dhcp", "auto")])
def test_lxc_dynamic_addressing_gives_no_static_address(ip, ip6):
    parsed = parse.lxc_nic_from_api(
        "net1", f"name=eth1,bridge=vmbr0,hwaddr=BC:24:11:9A:00:02,ip={ip},ip6={ip6}"
    )
    assert parsed is not None
    assert parsed[1] == ()


def test_lxc_static_ipv6():
    parsed = parse.lxc_nic_from_api("net0", "name=eth0,hwaddr=BC:24:11:9A:00:03,ip6=fd00:30::53/64")
    assert parsed is not None
    assert [(ip.address, ip.family) for ip in parsed[1]] == [("fd00:30::53/64", 6)]


# ------------------------------------------------------------------------------------------- cloud-init


def test_ipconfig_example_gives_the_static_ipv4_of_the_matching_nic():
    ips = parse.ips_from_ipconfig("ipconfig0", "ip=10.30.0.21/24,gw=10.30.0.1,ip6=auto")
    assert ips == (IpAddress(address="10.30.0.21/24", family=4, nic="net0", source="cloud-init"),)


def test_ipconfig_dhcp_gives_nothing_and_static_ipv6_is_kept():
    assert parse.ips_from_ipconfig("ipconfig1", "ip=dhcp,ip6=dhcp") == ()
    ips = parse.ips_from_ipconfig("ipconfig1", "ip=dhcp,ip6=fd00::21/64,gw6=fd00::1")
    assert [(ip.address, ip.nic) for ip in ips] == [("fd00::21/64", "net1")]


# ------------------------------------------------------------------------------------------- guest agent

AGENT_EXAMPLE = {
    "result": [
        {
            "name": "lo",
            "hardware-address": "00:00:00:00:00:00",
            "ip-addresses": [
                {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
                {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128},
            ],
        },
        {
            "name": "eth0",
            "hardware-address": "bc:24:11:5e:7a:01",
            "ip-addresses": [
                {"ip-address-type": "ipv4", "ip-address": "10.30.0.21", "prefix": 24},
                {"ip-address-type": "ipv6", "ip-address": "fe80::be24:11ff:fe5e:7a01", "prefix": 64},
            ],
            "statistics": {"rx-bytes": 1, "tx-bytes": 2},
        },
        {
            "name": "docker0",
            "hardware-address": "02:42:ac:11:00:01",
            "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "172.17.0.1", "prefix": 16}],
        },
    ]
}
NET0 = Nic(name="net0", index=0, model="virtio", mac="BC:24:11:5E:7A:01", bridge="vmbr0", vlan=30)


def test_agent_addresses_are_matched_to_config_nics_by_mac_case_insensitively():
    ips, names = parse.ips_from_agent(AGENT_EXAMPLE, [NET0])
    assert [(ip.address, ip.nic, ip.source, ip.usable) for ip in ips] == [
        ("10.30.0.21/24", "net0", "agent", True),
        ("fe80::be24:11ff:fe5e:7a01/64", "net0", "agent", False),
    ]
    assert names == {"net0": "eth0"}


def test_agent_link_local_addresses_are_flagged():
    ips, _ = parse.ips_from_agent(AGENT_EXAMPLE, [NET0])
    link_local = [ip for ip in ips if ip.family == 6]
    assert link_local[0].link_local is True
    assert link_local[0].loopback is False


def test_agent_interfaces_without_a_mac_match_are_ignored():
    ips, _ = parse.ips_from_agent(AGENT_EXAMPLE, [NET0])
    assert not any(ip.address.startswith(("127.", "172.17.")) or ip.address == "::1/128" for ip in ips)


def test_agent_loopback_without_hardware_address_is_ignored():
    payload = {
        "result": [
            {"name": "Loopback Pseudo-Interface 1", "ip-addresses": [{"ip-address": "::1", "prefix": 128}]}
        ]
    }
    assert parse.ips_from_agent(payload, [NET0]) == ((), {})


def test_loopback_address_on_a_matched_interface_is_kept_but_flagged():
    payload = {
        "result": [
            {
                "name": "eth0",
                "hardware-address": "BC-24-11-5E-7A-01",
                "ip-addresses": [{"ip-address": "127.0.1.1", "prefix": 8}],
            }
        ]
    }
    ips, _ = parse.ips_from_agent(payload, [NET0])
    assert len(ips) == 1
    assert ips[0].loopback is True
    assert ips[0].usable is False


def test_windows_agent_names_and_zone_ids():
    payload = {
        "result": [
            {
                "name": "Ethernet 2",
                "hardware-address": "BC:24:11:5E:7A:01",
                "ip-addresses": [
                    {"ip-address-type": "ipv6", "ip-address": "fe80::1%12", "prefix": 64},
                    {"ip-address-type": "ipv4", "ip-address": "10.30.0.99", "prefix": 24},
                ],
            }
        ]
    }
    ips, names = parse.ips_from_agent(payload, [NET0])
    assert [ip.address for ip in ips] == ["fe80::1/64", "10.30.0.99/24"]
    assert names == {"net0": "Ethernet 2"}


def test_agent_garbage_is_tolerated():
    for payload in (None, {}, {"result": None}, {"result": ["x", {"name": "eth0"}]}, []):
        assert parse.ips_from_agent(payload, [NET0]) == ((), {})


def test_agent_addresses_without_prefix_are_host_addresses():
    payload = {
        "result": [{"hardware-address": "bc:24:11:5e:7a:01", "ip-addresses": [{"ip-address": "10.1.2.3"}]}]
    }
    ips, _ = parse.ips_from_agent(payload, [NET0])
    assert ips[0].address == "10.1.2.3/32"


# ------------------------------------------------------------------------------------------ LXC runtime

CT_NET0 = Nic(
    name="net0", index=0, model="veth", mac="BC:24:11:9A:00:01", bridge="vmbr0", vlan=30, guest_name="eth0"
)


def test_lxc_interfaces_pve9_shape_is_matched_by_mac():
    payload = [
        {"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128"},
        {
            "name": "eth0",
            "hwaddr": "bc:24:11:9a:00:01",
            "inet": "10.30.0.53/24",
            "inet6": "fe80::be24:11ff:fe9a:1/64",
            "hardware-address": "bc:24:11:9a:00:01",
            "ip-addresses": [
                {"ip-address-type": "inet", "ip-address": "10.30.0.53", "prefix": 24},
                {"ip-address-type": "inet6", "ip-address": "fe80::be24:11ff:fe9a:1", "prefix": 64},
            ],
        },
    ]
    ips, covered = parse.ips_from_lxc_interfaces(payload, [CT_NET0])
    assert [(ip.address, ip.nic, ip.source, ip.link_local) for ip in ips] == [
        ("10.30.0.53/24", "net0", "lxc-interfaces", False),
        ("fe80::be24:11ff:fe9a:1/64", "net0", "lxc-interfaces", True),
    ]
    assert covered == {"net0"}


def test_lxc_interfaces_older_shape_uses_hwaddr_inet_and_inet6():
    payload = [
        {"name": "eth0", "hwaddr": "bc:24:11:9a:00:01", "inet": "10.30.0.53/24", "inet6": "fd00::53/64"}
    ]
    ips, _ = parse.ips_from_lxc_interfaces(payload, [CT_NET0])
    assert [ip.address for ip in ips] == ["10.30.0.53/24", "fd00::53/64"]


def test_lxc_interfaces_without_mac_match_by_name():
    payload = [{"name": "eth0", "inet": "10.30.0.54/24"}]
    ips, covered = parse.ips_from_lxc_interfaces(payload, [CT_NET0])
    assert [ip.address for ip in ips] == ["10.30.0.54/24"]
    assert covered == {"net0"}


def test_lxc_interfaces_null_for_a_stopped_container():
    assert parse.ips_from_lxc_interfaces(None, [CT_NET0]) == ((), set())


# ------------------------------------------------------------------------------------------------ guests

QEMU_CONFIG = {
    "name": "web01",
    "ostype": "l26",
    "cores": 2,
    "sockets": 2,
    "memory": "8192",
    "agent": "1,fstrim_cloned_disks=1",
    "onboot": 1,
    "tags": "prod;web",
    "description": "front end",
    "boot": "order=scsi0;ide2;net0",
    "scsihw": "virtio-scsi-single",
    "scsi0": "local-lvm:vm-100-disk-0,iothread=1,size=32G,ssd=1",
    "virtio1": "ceph-rbd:vm-100-disk-1,backup=0,cache=writeback,size=200G",
    "ide2": "local:iso/debian-13.iso,media=cdrom,size=650M",
    "efidisk0": "local-lvm:vm-100-disk-2,efitype=4m,pre-enrolled-keys=1,size=4M",
    "unused0": "local-lvm:vm-100-disk-3",
    "net0": "virtio=BC:24:11:5E:7A:01,bridge=vmbr0,firewall=1,tag=30",
    "net1": "virtio=BC:24:11:5E:7A:02,bridge=vmbr0,tag=20",
    "ipconfig0": "ip=10.30.0.21/24,gw=10.30.0.1,ip6=auto",
    "ipconfig1": "ip=10.20.0.21/24",
    "smbios1": "uuid=5f0c2f0e-0000-4000-8000-000000000100",
    "digest": "abc",
    "some-future-key": {"nested": True},
}
RESOURCES_ROW = {
    "id": "qemu/100",
    "type": "qemu",
    "vmid": 100,
    "name": "web01",
    "node": "pve1",
    "status": "running",
    "template": 0,
    "tags": "prod;web",
    "maxcpu": 4,
    "maxmem": 8589934592,
    "maxdisk": 34359738368,
    "cpu": 0.021,
    "mem": 3221225472,
    "uptime": 86400,
}


def test_qemu_guest_from_config_agent_and_listing():
    guest = parse.qemu_guest_from_api(
        cluster="lab-a", node="pve1", listing=RESOURCES_ROW, config=QEMU_CONFIG, agent=AGENT_EXAMPLE
    )
    assert guest.key == ("lab-a", 100)
    assert (guest.name, guest.kind, guest.status, guest.template) == ("web01", "qemu", "running", False)
    assert (guest.vcpus, guest.memory_mb, guest.onboot, guest.ostype) == (4.0, 8192, True, "l26")
    assert guest.tags == ("prod", "web")
    assert guest.agent_enabled is True
    assert [d.name for d in guest.disks] == ["efidisk0", "scsi0", "virtio1"]
    assert guest.disk_bytes == 32 * G + 200 * G + 4 * M
    assert [(n.name, n.mac, n.vlan, n.guest_name) for n in guest.nics] == [
        ("net0", "BC:24:11:5E:7A:01", 30, "eth0"),
        ("net1", "BC:24:11:5E:7A:02", 20, None),
    ]
    # the agent answered: its addresses win over cloud-init
    assert {ip.source for ip in guest.ips} == {"agent"}
    assert [ip.address for ip in guest.ips if ip.usable] == ["10.30.0.21/24"]
    assert guest.config_complete and guest.ips_complete


def test_qemu_guest_without_agent_answer_uses_cloud_init_addresses():
    guest = parse.qemu_guest_from_api(cluster="lab-a", node="pve1", listing=RESOURCES_ROW, config=QEMU_CONFIG)
    assert [(ip.address, ip.nic, ip.source) for ip in guest.ips] == [
        ("10.30.0.21/24", "net0", "cloud-init"),
        ("10.20.0.21/24", "net1", "cloud-init"),
    ]


def test_qemu_guest_with_unreadable_config_is_kept_from_the_listing():
    guest = parse.qemu_guest_from_api(cluster="lab-a", node="pve1", listing=RESOURCES_ROW, config=None)
    assert guest.config_complete is False
    assert guest.ips_complete is False
    assert (guest.name, guest.status, guest.vcpus, guest.memory_mb) == ("web01", "running", 4.0, 8192)
    assert guest.disks == () and guest.nics == ()
    assert guest.tags == ("prod", "web")
    assert guest.onboot is None


def test_qemu_memory_as_property_string_and_vcpus_override():
    config = {"memory": "current=2048", "cores": "4", "sockets": "1", "vcpus": "2", "template": 1}
    guest = parse.qemu_guest_from_api(
        cluster="c", node="n", listing={"vmid": "9000", "status": "stopped"}, config=config
    )
    assert (guest.vmid, guest.memory_mb, guest.vcpus, guest.template, guest.name) == (
        9000,
        2048,
        2.0,
        True,
        "VM 9000",
    )


def test_qemu_agent_disabled_spellings():
    for value in ("0", 0, "enabled=0,fstrim_cloned_disks=1", None):
        assert parse.agent_enabled({"agent": value}) is False
    for value in ("1", 1, "enabled=1", "1,type=isa"):
        assert parse.agent_enabled({"agent": value}) is True


LXC_CONFIG = {
    "hostname": "dns01",
    "ostype": "debian",
    "arch": "amd64",
    "cores": 2,
    "memory": 1024,
    "swap": 512,
    "unprivileged": 1,
    "features": "nesting=1",
    "onboot": 0,
    "tags": "infra",
    "rootfs": "local-lvm:vm-200-disk-0,size=8G",
    "mp0": "local-lvm:vm-200-disk-1,mp=/srv/data,backup=1,size=50G",
    "mp1": "/mnt/shared,mp=/shared",
    "unused0": "local-lvm:vm-200-disk-2",
    "net0": LXC_NET0_EXAMPLE,
    "net1": "name=eth1,bridge=vmbr1,hwaddr=BC:24:11:9A:00:02,ip=dhcp,type=veth",
}


def test_lxc_guest_from_config_without_runtime_view_uses_static_addresses():
    listing = {
        "vmid": 200,
        "name": "dns01",
        "status": "stopped",
        "type": "lxc",
        "cpus": 2,
        "maxmem": 1073741824,
    }
    guest = parse.lxc_guest_from_api(cluster="lab-a", node="pve2", listing=listing, config=LXC_CONFIG)
    assert (guest.kind, guest.name, guest.vcpus, guest.memory_mb, guest.onboot, guest.ostype) == (
        "lxc",
        "dns01",
        2.0,
        1024,
        False,
        "debian",
    )
    assert [(d.name, d.mountpoint, d.size_bytes) for d in guest.disks] == [
        ("rootfs", "/", 8 * G),
        ("mp0", "/srv/data", 50 * G),
        ("mp1", "/shared", None),
    ]
    assert [(n.name, n.mac, n.guest_name) for n in guest.nics] == [
        ("net0", "BC:24:11:9A:00:01", "eth0"),
        ("net1", "BC:24:11:9A:00:02", "eth1"),
    ]
    assert [(ip.address, ip.nic, ip.source) for ip in guest.ips] == [("10.30.0.53/24", "net0", "lxc-config")]


def test_lxc_guest_runtime_addresses_win_for_the_nics_they_cover():
    listing = {"vmid": 200, "status": "running", "type": "lxc"}
    runtime = [
        {"name": "eth1", "hwaddr": "bc:24:11:9a:00:02", "inet": "10.40.0.77/24"},
    ]
    guest = parse.lxc_guest_from_api(
        cluster="c", node="n", listing=listing, config=LXC_CONFIG, interfaces=runtime
    )
    assert sorted((ip.address, ip.nic, ip.source) for ip in guest.ips) == [
        ("10.30.0.53/24", "net0", "lxc-config"),
        ("10.40.0.77/24", "net1", "lxc-interfaces"),
    ]


def test_paused_vm_status_from_qmpstatus():
    listing = {"vmid": 1, "status": "running", "qmpstatus": "paused"}
    assert parse.qemu_guest_from_api(cluster="c", node="n", listing=listing, config={}).status == "paused"


# ---------------------------------------------------------------------------------- cluster and nodes

CLUSTER_STATUS = [
    {"type": "cluster", "id": "cluster", "name": "lab-a", "nodes": 3, "quorate": 1, "version": 7},
    {
        "type": "node",
        "id": "node/pve1",
        "name": "pve1",
        "nodeid": 1,
        "ip": "10.20.0.11",
        "online": 1,
        "local": 1,
        "level": "c",
    },
]


def test_cluster_status_names_the_cluster():
    cluster, nodes = parse.cluster_from_api(
        endpoint="ep", status_rows=CLUSTER_STATUS, version={"version": "9.1.2"}
    )
    assert (cluster.name, cluster.standalone, cluster.quorate, cluster.version, cluster.endpoint) == (
        "lab-a",
        False,
        True,
        "9.1.2",
        "ep",
    )
    assert [n["name"] for n in nodes] == ["pve1"]


def test_standalone_node_names_the_cluster_after_itself():
    rows = [{"type": "node", "id": "node/solo", "name": "solo", "online": 1, "local": 1, "ip": "10.9.0.5"}]
    cluster, nodes = parse.cluster_from_api(endpoint="solo.example", status_rows=rows)
    assert (cluster.name, cluster.standalone) == ("solo", True)
    assert len(nodes) == 1


def test_non_quorate_cluster():
    rows = [{**CLUSTER_STATUS[0], "quorate": 0}, CLUSTER_STATUS[1]]
    assert parse.cluster_from_api(endpoint="e", status_rows=rows)[0].quorate is False


def test_cluster_status_without_any_row_cannot_name_a_cluster():
    with pytest.raises(ValueError):
        parse.cluster_from_api(endpoint="e", status_rows=[])


NODE_STATUS = {
    "cpu": 0.05,
    "loadavg": ["0.12", "0.30", "0.25"],
    "uptime": 100000,
    "pveversion": "pve-manager/9.1.2/c2a4b9e1",
    "kversion": "Linux 6.14.8-2-pve",
    "cpuinfo": {
        "model": "AMD EPYC 7302P 16-Core Processor",
        "cores": 16,
        "cpus": 32,
        "sockets": 1,
        "mhz": "3000.000",
    },
    "memory": {"total": 137438953472, "used": 1, "free": 2, "available": 3},
    "swap": {"total": 0, "used": 0, "free": 0},
    "rootfs": {"total": 1, "used": 1, "free": 0, "avail": 0},
    "current-kernel": {"sysname": "Linux", "release": "6.14.8-2-pve", "version": "#1", "machine": "x86_64"},
    "boot-info": {"mode": "efi", "secureboot": 0},
}
NODE_NETWORK = [
    {
        "iface": "vmbr0",
        "type": "bridge",
        "method": "static",
        "address": "10.20.0.11",
        "netmask": "255.255.255.0",
        "cidr": "10.20.0.11/24",
        "gateway": "10.20.0.1",
        "bridge_ports": "bond0",
        "bridge_vlan_aware": 1,
        "active": 1,
        "autostart": 1,
        "families": ["inet"],
    },
    {"iface": "vmbr0.20", "type": "vlan", "address": "10.20.20.11", "netmask": "24", "active": 1},
    {"iface": "eno2", "type": "eth", "method": "manual"},
]


def test_node_from_status_network_and_membership():
    node = parse.node_from_api(
        cluster="lab-a",
        name="pve1",
        online=True,
        membership=CLUSTER_STATUS[1],
        status=NODE_STATUS,
        network=NODE_NETWORK,
    )
    assert (node.ip, node.cpu_model, node.cpus, node.memory_bytes, node.pve_version) == (
        "10.20.0.11",
        "AMD EPYC 7302P 16-Core Processor",
        32,
        137438953472,
        "9.1.2",
    )
    assert [(i.name, i.type, i.cidr, i.active, i.vlan_id) for i in node.interfaces] == [
        ("eno2", "eth", None, False, None),
        ("vmbr0", "bridge", "10.20.0.11/24", True, None),
        ("vmbr0.20", "vlan", "10.20.20.11/24", True, 20),
    ]


def test_node_with_unreadable_status_keeps_what_is_known():
    node = parse.node_from_api(
        cluster="lab-a", name="pve3", online=False, membership=None, status=None, network=None
    )
    assert (node.name, node.online, node.cpus, node.interfaces) == ("pve3", False, None, ())
