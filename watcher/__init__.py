"""fc-watcher: watch Function Compute async invocations and alert on their transitions."""

__version__ = "0.1.0"
