"""Board profiles as data: one YAML file per board, loaded by ``edge.board``.

This package holds no code; it exists so the profiles ship inside the wheel that the images
install, and are found with ``importlib.resources``.
"""
