"""A Function Compute emulator for the demo, the tests and the benchmark (loopback only)."""

from watcher.devtools.emulator.app import Emulator, EmulatorApp, ManualClock, RealClock
from watcher.devtools.emulator.scenario import Scenario, ScenarioError, load_scenario

__all__ = [
    "Emulator",
    "EmulatorApp",
    "ManualClock",
    "RealClock",
    "Scenario",
    "ScenarioError",
    "load_scenario",
]
