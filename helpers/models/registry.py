"""The model registry: every model is built by name, so a parameter file can pick it.

```python
model = create_model("siamese_resnet", in_channels=1, layers=[2, 2, 2], attention="cbam")
list_models()                      # the registered names
create_model_from_spec(model.spec) # the same architecture again, e.g. from a checkpoint
```
Every model carries ``model.spec = {"name": ..., "kwargs": ...}`` in plain JSON types, so a
checkpoint can store it and rebuild the model without pickling any object.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from torch import nn

from helpers.core.errors import WorkbookError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable:
    """Decorator: register a builder under ``name``; a name registered twice is an error."""
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS and MODELS[name] is not fn:
            raise WorkbookError(f"model name {name!r} is already registered (by {MODELS[name].__module__}."
                                f"{MODELS[name].__qualname__}); pick another name")
        MODELS[name] = fn
        return fn
    return deco


def list_models() -> list[str]:
    return sorted(MODELS)


def _plain(value: Any) -> Any:
    """Builder arguments as JSON types (tuples -> lists, dataclasses -> dicts) for ``model.spec``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; ``model.spec`` records name and kwargs for checkpoints."""
    if name not in MODELS:
        raise WorkbookError(f"model {name!r} is not registered; expected one of {list_models()}")
    try:
        model = MODELS[name](**kwargs)
    except TypeError as e:
        raise WorkbookError(f"model {name!r}: bad arguments {sorted(kwargs)} ({e})") from None
    model.spec = {"name": name, "kwargs": _plain(kwargs)}
    return model


def create_model_from_spec(spec: dict | None) -> nn.Module:
    if not isinstance(spec, dict) or "name" not in spec:
        raise WorkbookError(f"model spec {spec!r}; expected {{'name': ..., 'kwargs': {{...}}}} from a checkpoint")
    return create_model(spec["name"], **spec.get("kwargs", {}))


def count_parameters(model: nn.Module, trainable_only: bool = False, prefix: str = "") -> int:
    """Parameters of ``model`` (only trainable ones, only those whose name starts with ``prefix``)."""
    return sum(p.numel() for n, p in model.named_parameters()
               if (p.requires_grad or not trainable_only) and n.startswith(prefix))
