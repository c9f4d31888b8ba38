"""The operator's layer: the ``llmaas`` command, ``llmaas up`` and its supervisor, the admin API's
client. It starts and calls the services; the shared core (the rest of ``llmaas``) imports none of
them, and no service imports this (``make lint`` checks both with import-linter)."""
