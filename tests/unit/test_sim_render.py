"""Contract tests: every rendered endpoint against the PVE facts in notes §1 (keys, types, quirks, errors),
and the oracle against what a careful client can read from those payloads."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import pytest

from proxbox.sim import dump, generate
from proxbox.sim.render import ClusterView
from proxbox.sim.render_guest import PveError

NIC_RE = re.compile(
    r"^(virtio|e1000|e1000e|vmxnet3|rtl8139)=BC:24:11(:[0-9A-F]{2}){3},bridge=vmbr0(,[a-z_]+=[^,]+)*$"
)
LXC_NET_RE = re.compile(r"^name=eth\d,bridge=vmbr0(,[a-z0-9_]+=[^,]+)*,type=veth$")


@pytest.fixture(scope="module")
def world():
    return generate(seed=1, clusters=2, nodes=3, guests=120, standalone=1, offline=["lab-b/pve-b3"])


@pytest.fixture(scope="module")
def view(world):
    return ClusterView(world, world.clusters[0], world.epoch)


def _no_bools(value: Any, path: str = "") -> None:
    """PVE sends booleans as 0/1 integers."""
    if isinstance(value, bool):
        raise AssertionError(f"JSON boolean at {path}")
    if isinstance(value, dict):
        for k, v in value.items():
            _no_bools(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_bools(v, f"{path}[{i}]")


def _guests(view, kind=None, **flags):
    out = [g for g in view.cluster.guests.values() if kind in (None, g.kind)]
    return [g for g in out if all(getattr(g, k) == v for k, v in flags.items())]


# ------------------------------------------------------------------------------------------- cluster


def test_version_has_version_release_repoid(view):
    assert view.version() == {"version": "9.1.2", "release": "9.1", "repoid": "c2a4b9e1"}


def test_cluster_status_has_one_cluster_row_then_node_rows(view):
    rows = view.cluster_status()
    assert rows[0] == {
        "type": "cluster",
        "id": "cluster",
        "name": "lab-a",
        "nodes": 3,
        "quorate": 1,
        "version": rows[0]["version"],
    }
    assert isinstance(rows[0]["version"], int)
    nodes = rows[1:]
    assert [r["id"] for r in nodes] == ["node/pve-a1", "node/pve-a2", "node/pve-a3"]
    for r in nodes:
        assert set(r) == {"type", "id", "name", "nodeid", "ip", "online", "local", "level"}
        assert r["online"] in (0, 1) and r["local"] in (0, 1)
    assert [r["local"] for r in nodes] == [1, 0, 0]


def test_standalone_cluster_status_has_no_cluster_row(world):
    v = ClusterView(world, world.cluster("pve-s1"), world.epoch)
    rows = v.cluster_status()
    assert [r["type"] for r in rows] == ["node"]
    assert rows[0]["name"] == "pve-s1" and rows[0]["nodeid"] == 0


def test_resources_vm_entries_follow_the_documented_shape(view):
    rows = view.resources({"type": "vm"})
    assert {r["type"] for r in rows} == {"qemu", "lxc"}
    assert len(rows) == 120
    for r in rows:
        assert r["id"] == f"{r['type']}/{r['vmid']}"
        assert isinstance(r["vmid"], int) and isinstance(r["maxmem"], int) and isinstance(r["maxcpu"], int)
        assert r["status"] in ("running", "stopped")
        assert r["template"] in (0, 1)
        if "tags" in r:
            assert re.fullmatch(r"[a-z0-9-]+(;[a-z0-9-]+)*", r["tags"])
    _no_bools(rows)


def test_resources_without_filter_also_lists_nodes_storage_and_pools(view):
    types = {r["type"] for r in view.resources({})}
    assert {"qemu", "lxc", "node", "storage"} <= types
    storage = [r for r in view.resources({"type": "storage"})]
    assert all(r["id"] == f"storage/{r['node']}/{r['storage']}" for r in storage)
    assert all(set(r) >= {"plugintype", "content", "shared", "status"} for r in storage)


def test_resources_rejects_unknown_type_with_400_errors(view):
    with pytest.raises(PveError) as exc:
        view.resources({"type": "bogus"})
    assert exc.value.status == 400 and "type" in exc.value.errors


def test_offline_node_shows_offline_and_its_guests_unknown(world):
    v = ClusterView(world, world.cluster("lab-b"), world.epoch)
    nodes = {r["node"]: r for r in v.resources({"type": "node"})}
    assert nodes["pve-b3"]["status"] == "offline"
    assert {r["status"] for r in v.resources({"type": "vm"}) if r["node"] == "pve-b3"} == {"unknown"}
    assert {r["node"]: r["status"] for r in v.nodes()}["pve-b3"] == "offline"
    assert [r["online"] for r in v.cluster_status() if r["type"] == "node"] == [1, 1, 0]
    with pytest.raises(PveError) as exc:
        v.node_status("pve-b3")
    assert (exc.value.status, exc.value.empty_body, exc.value.message) == (595, True, "No route to host")


def test_unknown_node_is_a_hostname_lookup_failure(view):
    with pytest.raises(PveError) as exc:
        view.qemu_list("pve-x9", {})
    assert exc.value.status == 500 and exc.value.message.startswith("hostname lookup 'pve-x9' failed")


def test_backup_jobs_carry_prune_backups_as_object_and_legacy_nodes_as_string(world, view):
    jobs = view.backup_jobs()
    assert jobs and all(j["type"] == "vzdump" and isinstance(j["prune-backups"], dict) for j in jobs)
    assert all(("all" in j) != ("vmid" in j) for j in jobs)
    assert view.backup_job(jobs[0]["id"]) == jobs[0]
    legacy = ClusterView(world, world.cluster("pve-s1"), world.epoch).backup_jobs()
    assert all(isinstance(j["prune-backups"], str) for j in legacy)


# --------------------------------------------------------------------------------------------- nodes


def test_node_status_numbers_as_strings_where_pve_does(view):
    s = view.node_status("pve-a1")
    assert len(s["loadavg"]) == 3 and all(isinstance(x, str) for x in s["loadavg"])
    assert isinstance(s["cpuinfo"]["mhz"], str)
    assert s["cpuinfo"]["cpus"] == s["cpuinfo"]["sockets"] * s["cpuinfo"]["cores"] * 2
    assert re.fullmatch(r"pve-manager/9\.1\.2/[0-9a-f]{8}", s["pveversion"])
    assert set(s["memory"]) >= {"total", "used", "free"} and set(s["rootfs"]) >= {"total", "used", "free"}
    assert s["boot-info"]["mode"] in ("efi", "legacy-bios")
    assert s["current-kernel"]["sysname"] == "Linux"


def test_nodes_differ_in_hardware_data(view):
    statuses = [json.dumps(view.node_status(n.name), sort_keys=True) for n in view.cluster.nodes]
    assert len(set(statuses)) == len(statuses)


def test_node_network_is_bond_under_vlan_aware_bridge_without_macs(view):
    ifaces = {i["iface"]: i for i in view.node_network("pve-a1", {})}
    assert ifaces["bond0"]["type"] == "bond" and len(ifaces["bond0"]["slaves"].split()) == 2
    vmbr0 = ifaces["vmbr0"]
    assert vmbr0["bridge_ports"] == "bond0" and vmbr0["bridge_vlan_aware"] == 1
    assert vmbr0["cidr"] == vmbr0["address"] + "/24"
    assert not any(k in i for i in ifaces.values() for k in ("mac", "hwaddr", "hardware-address"))
    assert [i["iface"] for i in view.node_network("pve-a1", {"type": "bridge"})] == ["vmbr0"]
    with pytest.raises(PveError) as exc:
        view.node_network("pve-a1", {"type": "nope"})
    assert exc.value.status == 400


# --------------------------------------------------------------------------------------------- qemu


def test_qemu_list_and_status_shapes(view):
    for node in view.cluster.nodes:
        for r in view.qemu_list(node.name, {}):
            assert isinstance(r["vmid"], int) and r["status"] in ("running", "stopped")
            assert ("pid" in r) == (r["status"] == "running")
            _no_bools(r)
    tpl = _guests(view, "qemu", template=True)
    assert tpl
    entry = next(r for r in view.qemu_list(tpl[0].node, {}) if r["vmid"] == tpl[0].vmid)
    assert entry["template"] == 1
    g = _guests(view, "qemu", status="running")[0]
    st = view.guest_status(g.node, "qemu", g.vmid)
    assert st["qmpstatus"] == "running" and st["ha"]["managed"] in (0, 1)


def test_qemu_config_is_flat_with_pve_property_strings(view):
    for g in _guests(view, "qemu"):
        conf = view.guest_config(g.node, "qemu", g.vmid, {})
        assert isinstance(conf["memory"], str) and isinstance(conf["cores"], int)
        assert re.fullmatch(r"[0-9a-f]{40}", conf["digest"])
        assert conf["boot"].startswith("order=")
        for key, value in conf.items():
            if re.fullmatch(r"net\d+", key):
                assert NIC_RE.match(value), value
            if re.fullmatch(r"(scsi|virtio|sata|ide)\d+|efidisk0|tpmstate0", key):
                volume = value.split(",")[0]
                assert volume == "none" or ":" in volume
                if "media=cdrom" not in value:
                    assert re.search(r"(^|,)size=\d+[KMGT]($|,)", value), value
            if key.startswith("unused"):
                assert "," not in value
            if key.startswith("ipconfig"):
                assert re.fullmatch(r"(ip=[^,]+)?(,?gw=[^,]+)?(,?ip6=[^,]+)?(,gw6=[^,]+)?", value), value
        _no_bools(conf)


def test_qemu_config_of_a_missing_or_moved_guest_says_config_missing(view):
    g = _guests(view, "qemu")[0]
    other = next(n.name for n in view.cluster.nodes if n.name != g.node)
    with pytest.raises(PveError) as exc:
        view.guest_config(other, "qemu", g.vmid, {})
    assert exc.value.status == 500
    assert exc.value.message == f"Configuration file 'nodes/{other}/qemu-server/{g.vmid}.conf' does not exist"
    with pytest.raises(PveError) as exc:
        view.guest_config(g.node, "lxc", g.vmid, {})
    assert "lxc/" in exc.value.message


def test_vmid_that_is_not_an_integer_is_a_400_with_errors():
    from proxbox.sim.render import vmid_param

    with pytest.raises(PveError) as exc:
        vmid_param("abc")
    assert exc.value.status == 400 and "vmid" in exc.value.errors


def test_agent_errors_come_in_qemu_servers_order(view):
    def message(g):
        with pytest.raises(PveError) as exc:
            view.agent(g.node, g.vmid, "network-get-interfaces")
        assert exc.value.status == 500
        return exc.value.message

    none = [g for g in _guests(view, "qemu") if g.agent_config in (None, "0")]
    stopped = [g for g in _guests(view, "qemu", status="stopped") if g.agent_config not in (None, "0")]
    silent = [
        g
        for g in _guests(view, "qemu", status="running", agent="silent")
        if g.agent_config not in (None, "0")
    ]
    assert none and stopped and silent
    assert {message(g) for g in none} == {"No QEMU guest agent configured"}
    assert {message(g) for g in stopped} == {f"VM {g.vmid} is not running" for g in stopped}
    assert {message(g) for g in silent} == {"QEMU guest agent is not running"}


def test_agent_interfaces_have_lower_case_macs_loopback_and_link_local_noise(view):
    answering = [
        g
        for g in _guests(view, "qemu", status="running", agent="answering")
        if g.agent_config not in (None, "0")
    ]
    linux = next(g for g in answering if not g.ostype.startswith("win"))
    result = view.agent(linux.node, linux.vmid, "network-get-interfaces")["result"]
    assert result[0]["name"] == "lo"
    addrs = {a["ip-address"] for a in result[0]["ip-addresses"]}
    assert addrs == {"127.0.0.1", "::1"}
    for iface, nic in zip(result[1:], linux.nics, strict=False):
        assert iface["hardware-address"] == nic.mac.lower()
        assert any(a["ip-address"].startswith("fe80::") for a in iface["ip-addresses"])
    windows = [g for g in answering if g.ostype.startswith("win")]
    if windows:
        wres = view.agent(windows[0].node, windows[0].vmid, "network-get-interfaces")["result"]
        assert wres[0]["name"] == "Ethernet" and "hardware-address" not in wres[-1]
    noisy = [g for g in answering if g.noise]
    if noisy:
        names = [
            i["name"] for i in view.agent(noisy[0].node, noisy[0].vmid, "network-get-interfaces")["result"]
        ]
        assert "docker0" in names


def test_agent_osinfo_has_the_documented_fields(view):
    g = next(
        g
        for g in _guests(view, "qemu", status="running", agent="answering")
        if g.agent_config not in (None, "0")
    )
    info = view.agent(g.node, g.vmid, "get-osinfo")["result"]
    assert set(info) >= {"id", "name", "pretty-name", "version", "version-id", "kernel-release", "machine"}


def test_snapshot_list_ends_with_the_current_pseudo_entry(view):
    g = next(g for g in view.cluster.guests.values() if g.snapshots)
    snaps = view.snapshots(g.node, g.kind, g.vmid)
    assert snaps[-1]["name"] == "current" and snaps[-1]["description"] == "You are here!"
    assert snaps[-1]["parent"] == g.snapshots[-1].name
    assert [s["name"] for s in snaps[:-1]] == [s.name for s in g.snapshots]
    conf = view.snapshot_config(g.node, g.kind, g.vmid, g.snapshots[0].name)
    assert conf["snaptime"] == g.snapshots[0].snaptime


# ---------------------------------------------------------------------------------------------- lxc


def test_lxc_config_memory_is_an_integer_and_nets_are_property_strings(view):
    for g in _guests(view, "lxc"):
        conf = view.guest_config(g.node, "lxc", g.vmid, {})
        assert isinstance(conf["memory"], int) and conf["hostname"] == g.name
        assert re.match(r"^[a-z-]+:vm-\d+-disk-0,size=\d+G$", conf["rootfs"])
        for key, value in conf.items():
            if re.fullmatch(r"net\d+", key):
                assert LXC_NET_RE.match(value), value
                assert re.search(r"hwaddr=BC:24:11(:[0-9A-F]{2}){3}", value)
            if re.fullmatch(r"mp\d+", key):
                assert ",mp=/" in value


def test_lxc_interfaces_pve9_shape_legacy_shape_and_null_when_stopped(world, view):
    running = _guests(view, "lxc", status="running")[0]
    ifaces = view.lxc_interfaces(running.node, running.vmid)
    assert ifaces[0]["name"] == "lo"
    eth0 = ifaces[1]
    assert eth0["hwaddr"] == eth0["hardware-address"] == running.nics[0].mac.lower()
    assert {a["ip-address-type"] for a in eth0["ip-addresses"]} <= {"inet", "inet6"}
    stopped = _guests(view, "lxc", status="stopped")[0]
    assert view.lxc_interfaces(stopped.node, stopped.vmid) is None
    legacy = ClusterView(world, world.cluster("pve-s1"), world.epoch)
    g = next(g for g in legacy.cluster.guests.values() if g.kind == "lxc" and g.running)
    assert all(set(i) <= {"name", "hwaddr", "inet", "inet6"} for i in legacy.lxc_interfaces(g.node, g.vmid))


def test_lxc_list_shape(view):
    rows = view.lxc_list("pve-a1")
    assert rows and all(r["type"] == "lxc" and isinstance(r["vmid"], int) for r in rows)
    assert all(set(r) >= {"maxswap", "maxdisk", "maxmem", "cpus", "status"} for r in rows)


# ----------------------------------------------------------------------------------- storage, tasks


def test_node_storage_and_content_filters(world):
    c = world.cluster("lab-a")
    v = ClusterView(world, c, world.epoch)
    rows = v.node_storage("pve-a1", {})
    assert {"local", "local-lvm"} <= {r["storage"] for r in rows}
    assert all(
        set(r) >= {"type", "content", "active", "enabled", "shared", "total", "used", "avail"} for r in rows
    )
    backup_only = v.node_storage("pve-a1", {"content": "backup"})
    assert all("backup" in r["content"] for r in backup_only)
    b = c.backups[0]
    vols = v.storage_content(b.node, b.storage, {"content": "backup", "vmid": str(b.vmid)})
    assert vols and all(x["content"] == "backup" and x["vmid"] == b.vmid for x in vols)
    assert all(set(x) >= {"volid", "subtype", "format", "size", "ctime"} for x in vols)
    images = v.storage_content("pve-a1", "local-lvm", {"content": "images"})
    assert images and all(x["volid"].startswith("local-lvm:") for x in images)


def test_tasks_have_upids_and_a_total(view):
    g = next(g for g in view.cluster.guests.values() if g.running)
    listed = view.node_tasks(g.node, {"limit": "5"})
    assert len(listed.data) <= 5 and listed.total >= len(listed.data)
    t = listed.data[0]
    assert re.fullmatch(
        rf"UPID:{g.node}:[0-9A-F]{{8}}:[0-9A-F]{{8}}:[0-9A-F]{{8}}:\w+:\d*:root@pam:", t["upid"]
    )
    assert view.task_status(g.node, t["upid"])["exitstatus"] == "OK"
    assert view.task_log(g.node, t["upid"]).data[-1]["t"] == "TASK OK"


# -------------------------------------------------------------------------------------------- oracle


def _client_ips(view: ClusterView, g) -> dict[str, set[str]]:
    """A careful client's reading: agent (matched by MAC), else cloud-init / LXC interfaces / LXC config."""

    def usable(addr: str) -> bool:
        ip = ipaddress.ip_interface(addr).ip
        return not (ip.is_loopback or ip.is_link_local)

    conf = view.guest_config(g.node, g.kind, g.vmid, {})
    nets = {k: v for k, v in conf.items() if re.fullmatch(r"net\d+", k)}
    macs = {}
    for key, value in nets.items():
        m = re.search(r"(?:=|hwaddr=)(BC:24:11(?::[0-9A-F]{2}){3})", value)
        macs[m.group(1).lower()] = key
    out: dict[str, set[str]] = {k: set() for k in nets}
    if g.kind == "qemu":
        try:
            for iface in view.agent(g.node, g.vmid, "network-get-interfaces")["result"]:
                key = macs.get(iface.get("hardware-address", ""))
                for a in iface.get("ip-addresses", []):
                    addr = f"{a['ip-address']}/{a['prefix']}"
                    if key and usable(addr):
                        out[key].add(addr)
            return out
        except PveError:
            pass
        for key in nets:
            ipc = conf.get(f"ipconfig{key[3:]}", "")
            for part in ipc.split(","):
                name, _, value = part.partition("=")
                if name in ("ip", "ip6") and "/" in value:
                    out[key].add(value)
        return out
    ifaces = view.lxc_interfaces(g.node, g.vmid)
    if ifaces is not None:
        for iface in ifaces:
            key = macs.get(iface["hwaddr"])
            addrs = [f"{a['ip-address']}/{a['prefix']}" for a in iface.get("ip-addresses", [])] or [
                iface[k] for k in ("inet", "inet6") if k in iface
            ]
            for addr in addrs:
                if key and usable(addr):
                    out[key].add(addr)
        return out
    for key, value in nets.items():
        for part in value.split(","):
            name, _, val = part.partition("=")
            if name in ("ip", "ip6") and "/" in val:
                out[key].add(val)
    return out


def test_oracle_ips_are_exactly_what_a_careful_client_reads_from_the_api(world):
    oracle = {(c["name"], g["vmid"]): g for c in dump(world)["clusters"] for g in c["guests"]}
    checked = 0
    for c in world.clusters:
        v = ClusterView(world, c, world.epoch)
        for g in c.guests.values():
            if not c.node(g.node).online:
                continue
            expected = {n["name"]: set(n["ips"]) for n in oracle[(c.name, g.vmid)]["nics"]}
            assert _client_ips(v, g) == expected, (c.name, g.vmid)
            checked += 1
    assert checked > 200


def test_oracle_disks_exclude_cdroms_and_unused_volumes(world):
    for c in dump(world)["clusters"]:
        for g in c["guests"]:
            names = {d["name"] for d in g["disks"]}
            assert not any(n.startswith("unused") for n in names)
            guest = world.cluster(c["name"]).guests[g["vmid"]]
            cdroms = {d.key for d in guest.disks if d.media == "cdrom"}
            assert not names & cdroms
            assert all(d["size_bytes"] is None or d["size_bytes"] > 0 for d in g["disks"])


def test_oracle_guest_record_has_what_a_sync_needs(world):
    g = dump(world)["clusters"][0]["guests"][0]
    assert set(g) >= {
        "cluster",
        "vmid",
        "kind",
        "name",
        "node",
        "status",
        "template",
        "tags",
        "vcpus",
        "memory_mb",
        "onboot",
        "disks",
        "nics",
        "ips",
    }
    assert all(set(n) >= {"name", "model", "mac", "bridge", "vlan", "ips"} for n in g["nics"])
    assert all(re.fullmatch(r"BC:24:11(:[0-9A-F]{2}){3}", n["mac"]) for n in g["nics"])


# ------------------------------------------------------------------------------------- every route


def _params(world, template):
    c = world.cluster("lab-a")
    qemu = next(
        g
        for g in c.guests.values()
        if g.kind == "qemu" and g.running and g.agent == "answering" and g.agent_config not in (None, "0")
    )
    lxc = (
        next(g for g in c.guests.values() if g.kind == "lxc" and g.snapshots)
        if "snap" in template
        else next(g for g in c.guests.values() if g.kind == "lxc")
    )
    if "qemu" in template and "snapname" in template:
        qemu = next(g for g in c.guests.values() if g.kind == "qemu" and g.snapshots)
    g = lxc if "/lxc/" in template else qemu
    view = ClusterView(world, c, world.epoch)
    task = view.node_tasks(c.backups[0].node, {}).data[0]
    m = {
        "node": g.node if "{vmid}" in template else (task["node"] if "{upid}" in template else "pve-a1"),
        "vmid": str(g.vmid),
        "id": c.backup_jobs[0].id,
        "poolid": c.pools[0].poolid,
        "storage": "local-lvm",
        "upid": task["upid"],
        "snapname": g.snapshots[0].name if g.snapshots else "",
    }
    return view, m


def test_every_route_renders_the_documented_container(world):
    from proxbox.sim.app import ROUTES, encode

    dicts = {
        "/version",
        "/nodes/{node}/status",
        "/nodes/{node}/version",
        "/pools/{poolid}",
        "/cluster/backup/{id}",
        "/nodes/{node}/storage/{storage}/status",
        "/nodes/{node}/tasks/{upid}/status",
    }
    for _method, template, render in ROUTES:
        view, m = _params(world, template)
        payload = render(view, m, {})
        data = getattr(payload, "data", payload)
        if template.endswith(("/config", "/status/current")) or "/agent/" in template or template in dicts:
            assert isinstance(data, dict), template
        else:
            assert isinstance(data, list), template
        assert json.loads(encode(payload))["data"] == json.loads(json.dumps(data)), template
