"""A provider simulator for tests, the demo and benchmarks: real HTTP on loopback,
both dialects, all four actions, orders that progress over time, switchable faults."""

from syncd.simulator.provider import Call, Fault, SimOrder, SimPackage, SimulatedProvider
from syncd.simulator.server import SimulatorServer

__all__ = ["Call", "Fault", "SimOrder", "SimPackage", "SimulatedProvider", "SimulatorServer"]
