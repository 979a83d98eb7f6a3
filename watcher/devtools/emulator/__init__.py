"""A Function Compute emulator for the demo, the tests and the benchmark (loopback only)."""

from watcher.devtools.emulator.app import EmulatorApp
from watcher.devtools.emulator.clock import ManualClock, RealClock
from watcher.devtools.emulator.scenario import Scenario, ScenarioError, load_scenario
from watcher.devtools.emulator.server import Emulator

__all__ = [
    "Emulator",
    "EmulatorApp",
    "ManualClock",
    "RealClock",
    "Scenario",
    "ScenarioError",
    "load_scenario",
]
