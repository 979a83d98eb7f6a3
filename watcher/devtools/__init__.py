"""Tools around the watcher: the FC emulator, the demo and the benchmark."""
