"""``python -m watcher`` runs the ``fc-watcher`` command."""

from watcher.cli import main

raise SystemExit(main())
