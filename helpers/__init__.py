"""helpers: the logic behind the pairwise-relation workbook's notebooks.

Importing the package has no side effects. Layers, lowest first (a module imports only from its own
layer's package or the ones below): core <- data, models <- training, evaluation <- stages <- workbook.
See CONTRIBUTING.md for one line per module.
"""
from helpers.core.env import VERSION as __version__  # noqa: F401 (the package version)


def start(stem: str, namespace: dict):
    """Begin a notebook: validate its parameters, resolve folders, seed RNGs. See helpers.workbook.notebook."""
    # Deferred: importing the notebook context pulls in numpy, yaml and torch, which `import helpers`
    # (done by every worker process and CLI call) should not pay for.
    from helpers.workbook.notebook import start as _start

    return _start(stem, namespace)
