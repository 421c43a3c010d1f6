"""Models, built by name through the registry (`helpers.models.registry.create_model`).

Importing this package registers the built-in models: the pair models (`pair`), the timm
multi-task backbones (`multitask`) and the 3D transformer (`transformer3d`).
"""
from helpers.models import multitask, pair, transformer3d  # noqa: F401 (registers the built-in models)
