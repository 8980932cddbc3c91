"""A provider simulator for tests, the demo and benchmarks: real HTTP on loopback,
both dialects, all four actions (and refill and cancel in the ``key`` dialect), orders that
progress over time, switchable faults, an optional per-minute request limit."""

from syncd.simulator.provider import (
    Call,
    Fault,
    SimOrder,
    SimPackage,
    SimRefill,
    SimulatedProvider,
)
from syncd.simulator.server import SimulatorServer

__all__ = [
    "Call",
    "Fault",
    "SimOrder",
    "SimPackage",
    "SimRefill",
    "SimulatedProvider",
    "SimulatorServer",
]
