"""A provider simulator for tests, the demo and benchmarks: real HTTP on loopback,
both dialects, all four actions (and refill and cancel in the ``key`` dialect), orders that
progress over time, switchable faults, an optional per-minute limit on calls."""

from syncd.simulator.faults import Fault
from syncd.simulator.provider import Call, SimulatedProvider
from syncd.simulator.server import SimulatorServer
from syncd.simulator.world import SimOrder, SimPackage, SimRefill

__all__ = [
    "Call",
    "Fault",
    "SimOrder",
    "SimPackage",
    "SimRefill",
    "SimulatedProvider",
    "SimulatorServer",
]
