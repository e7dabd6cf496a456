"""A local stand-in for the Runway API, good enough that the official SDK works against it unchanged.

Public surface: :class:`Simulator` (start/stop, ``url``, inspection), :class:`SimConfig` (every switch),
:class:`Fault` and :func:`parse_fault` (faults on demand), :class:`SimClock` (moving time forward).
"""

from runwatch.simulator.faults import Fault, parse_fault
from runwatch.simulator.server import Simulator
from runwatch.simulator.world import SimClock, SimConfig

__all__ = ["Fault", "SimClock", "SimConfig", "Simulator", "parse_fault"]
