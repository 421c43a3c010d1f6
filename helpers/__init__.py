"""helpers: the logic behind the pairwise-relation workbook's notebooks.

Importing the package has no side effects; submodules are imported where they are used.
"""
__version__ = "0.1.0"


def start(stem: str, namespace: dict):
    """Begin a notebook: validate its parameters, resolve folders, seed RNGs. See helpers.notebook."""
    from .notebook import start as _start

    return _start(stem, namespace)
