"""``fc-watcher bench``: the watcher against a bare aiohttp floor and the official SDK."""
