"""Model providers. Built-ins register through the ``trellis.providers`` entry point group,
exactly as third-party packages do (see ``registry.py``)."""
