"""Pair models: every registered model's forward/backward shapes, fusion weights, attention blocks."""
import pytest
import torch

from helpers.core.errors import WorkbookError
from helpers.models.pair import transfer_weights
from helpers.models.registry import (count_parameters, create_model, create_model_from_spec, list_models,
                                     MODELS)


# Small kwargs per registered model, and the inputs it takes.
IMAGE = dict(in_channels=1, width_mult=0.125, feat_dim=16)

CASES = {
    "siamese_resnet": (dict(IMAGE, layers=(1, 1)), "pair_image"),
    "siamese_fpn": (dict(IMAGE, layers=(1, 1, 1)), "pair_image"),
    "stage1_fusion_cbam": (IMAGE, "pair_image"),
    "stage2_se_resnet": (IMAGE, "pair_image"),
    "siamese_mlp": (dict(in_features=7, hidden=(12,), feat_dim=8), "pair_vector"),
    "resnet": (dict(IMAGE, layers=(1,)), "single_image"),
}

# Models that are not pair models: small kwargs and the inputs they take.
OTHER_CASES = {
    "transformer3d": (dict(feat_dim=8, kp_dim=6, out_dim=8, d_model=16, nhead=2, num_layers=1, dim_feedforward=32),
                      lambda: (torch.randn(2, 3, 8), torch.randn(2, 3, 3, 2)), (2, 8)),
    "timm_multitask": (dict(backbone="resnet18", tasks=[{"name": "digit", "kind": "multiclass", "num_classes": 10},
                                                        {"name": "ink", "kind": "regression"}], img_size=32),
                       lambda: (torch.rand(2, 3, 32, 32),), (2, 11)),
}

torch.set_num_threads(1)

def _inputs(kind, b=3):
    if kind == "pair_image":
        return (torch.rand(b, 1, 8, 8), torch.rand(b, 1, 8, 8))
    if kind == "pair_vector":
        return (torch.randn(b, 7), torch.randn(b, 7))
    return (torch.rand(b, 1, 8, 8),)


def test_every_registered_model_has_a_case():
    assert set(CASES) | set(OTHER_CASES) == set(list_models()) == set(MODELS)


@pytest.mark.parametrize("name", sorted(OTHER_CASES))
def test_other_registered_models_build_by_name_and_rebuild_from_their_spec(name):
    kwargs, inputs, shape = OTHER_CASES[name]
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    with torch.no_grad():
        assert tuple(model(*inputs()).shape) == shape
    import json
    spec = json.loads(json.dumps(model.spec))          # plain JSON types: a checkpoint can store it
    again = create_model_from_spec(spec)
    assert count_parameters(again) == count_parameters(model)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("num_classes", [1, 5])
def test_forward_backward_shapes(name, num_classes):
    kwargs, kind = CASES[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, **kwargs)
    out = model(*_inputs(kind))
    assert out.shape == ((3,) if num_classes == 1 else (3, num_classes))
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        assert model(*_inputs(kind, 1)).shape[0] == 1
    assert model.spec["name"] == name
    assert count_parameters(model) > 0


@pytest.mark.parametrize("opts", [dict(bottleneck=True), dict(attention="se"), dict(attention="cbam"),
                                  dict(fusion="concat"), dict(pair_dim=4), dict(width_mult=0.25, layers=(3, 3, 3))])
def test_resnet_options(opts):
    torch.manual_seed(0)
    kw = dict(IMAGE, layers=(1, 1))
    kw.update(opts)
    model = create_model("siamese_resnet", **kw)
    args = _inputs("pair_image", 4) + ((torch.randn(4, 4),) if "pair_dim" in opts else ())
    assert model(*args).shape == (4,)


def test_mlp_with_pair_features_needs_them():
    m = create_model("siamese_mlp", in_features=5, pair_dim=3, hidden=(8,), feat_dim=8)
    assert m(torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 3)).shape == (4,)
    with pytest.raises(WorkbookError, match="pair"):
        m(torch.randn(4, 5), torch.randn(4, 5))


def test_registry_errors_and_spec_roundtrip():
    with pytest.raises(WorkbookError, match="not registered"):
        create_model("nope")
    with pytest.raises(WorkbookError):
        create_model("siamese_resnet", attention="eca")
    with pytest.raises(WorkbookError):
        create_model("siamese_resnet", colour="red")
    m = create_model("siamese_resnet", **dict(IMAGE, layers=(1, 1)))
    m2 = create_model_from_spec(m.spec)
    assert [p.shape for p in m.parameters()] == [p.shape for p in m2.parameters()]


def test_transfer_weights_where_shapes_allow():
    torch.manual_seed(0)
    s1 = create_model("stage1_fusion_cbam", **IMAGE)
    s2 = create_model("stage2_se_resnet", **IMAGE)
    info = transfer_weights(s2, s1.state_dict())
    assert info["copied"] > 0 and info["copied"] + info["missing"] == info["total"]
    torch.testing.assert_close(s2.encoder.stem[0].weight, s1.encoder.stem[0].weight)

def test_a_name_registered_twice_is_an_error():
    from helpers.models.registry import register_model

    with pytest.raises(WorkbookError, match="already registered"):
        register_model("siamese_resnet")(lambda **kw: None)
