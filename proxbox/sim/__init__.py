"""The Proxmox VE simulator: a deterministic world served over HTTPS with PVE's exact API shapes.

Public API::

    from proxbox.sim import generate, SimServer, SimThread
    world = generate(seed=1, clusters=2, nodes=3, guests=50, standalone=1)
    async with SimServer(world, control=True) as sim: ...

See docs/simulator.md.
"""

from proxbox.sim.auth import Credentials
from proxbox.sim.generate import Profile, generate
from proxbox.sim.model import EPOCH, World
from proxbox.sim.oracle import dump
from proxbox.sim.server import Endpoint, SimServer, SimThread

__all__ = [
    "EPOCH",
    "Credentials",
    "Endpoint",
    "Profile",
    "SimServer",
    "SimThread",
    "World",
    "dump",
    "generate",
]
