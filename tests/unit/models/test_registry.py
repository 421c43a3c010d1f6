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

# Pair models on person crops given by index (they need a crop bank attached first).
CROP_CASES = {"siamese_crops": dict(crop_size=(16, 8), layers=(1, 1), width_mult=0.125, feat_dim=8)}

torch.set_num_threads(1)

def _inputs(kind, b=3):
    if kind == "pair_image":
        return (torch.rand(b, 1, 8, 8), torch.rand(b, 1, 8, 8))
    if kind == "pair_vector":
        return (torch.randn(b, 7), torch.randn(b, 7))
    return (torch.rand(b, 1, 8, 8),)


def test_every_registered_model_has_a_case():
    assert set(CASES) | set(OTHER_CASES) | set(CROP_CASES) == set(list_models()) == set(MODELS)


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


def _crop_bank(n=6, size=(16, 8)):
    return torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8)


@pytest.mark.parametrize("pair_dim", [0, 4])
def test_crop_pairs_by_index_train_and_encode_each_person_once(pair_dim):
    torch.manual_seed(0)
    model = create_model("siamese_crops", pair_dim=pair_dim, **CROP_CASES["siamese_crops"]).set_crops(_crop_bank())
    ia, ib = torch.tensor([0, 1, 2, 0]), torch.tensor([3, 3, 4, 5])
    extra = (torch.randn(4, pair_dim),) if pair_dim else ()
    seen = []
    model.encoder.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    out = model(ia, ib, *extra)
    assert out.shape == (4,) and seen == [6], "six distinct people: six crops encoded, not eight"
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():   # deterministic in eval (no flip), and the same person pair gives the same output
        a, b = model(ia, ib, *extra), model(ia, ib, *extra)
    torch.testing.assert_close(a, b)


def test_crop_bank_is_neither_in_the_checkpoint_nor_synced_by_ddp_and_moves_with_the_model():
    model = create_model("siamese_crops", **CROP_CASES["siamese_crops"]).set_crops(_crop_bank())
    assert "crops" not in model.state_dict() and model._ddp_params_and_buffers_to_ignore == ["crops"]
    again = create_model_from_spec(model.spec)
    again.load_state_dict(model.state_dict())                       # weights only; the bank is attached anew
    with pytest.raises(WorkbookError, match="no crops attached"):
        again(torch.tensor([0]), torch.tensor([1]))
    assert again.set_crops(_crop_bank()).crops.dtype == torch.uint8
    assert model.to("cpu").crops.device.type == "cpu"


def test_crop_model_refuses_wrong_banks_and_inputs():
    model = create_model("siamese_crops", **CROP_CASES["siamese_crops"])
    with pytest.raises(WorkbookError, match="crop_size"):
        model.set_crops(_crop_bank(size=(32, 16)))
    with pytest.raises(WorkbookError, match="uint8"):
        model.set_crops(torch.rand(4, 3, 16, 8))
    model.set_crops(_crop_bank(n=3))
    with pytest.raises(WorkbookError, match="rows 0..2"):
        model(torch.tensor([0]), torch.tensor([3]))
    with pytest.raises(WorkbookError, match="index vectors"):
        model(torch.rand(2, 3, 16, 8), torch.rand(2, 3, 16, 8))


def test_crop_model_with_a_timm_backbone_loads_a_local_weight_file(tmp_path):
    import timm

    weights = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet", num_classes=0).state_dict(), weights)
    model = create_model("siamese_crops", crop_size=(32, 16), backbone="test_resnet", weights_file=str(weights),
                         feat_dim=8, pair_dim=2)
    ref = torch.load(weights, weights_only=True)
    key = next(iter(ref))
    torch.testing.assert_close(model.encoder.backbone.state_dict()[key], ref[key])
    model.set_crops(_crop_bank(n=4, size=(32, 16)))
    assert model(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.randn(2, 2)).shape == (2,)


def test_strided_stem_quarters_the_positions():
    from helpers.models.encoders import ResNetEncoder

    enc = ResNetEncoder(3, (1,), width_mult=0.125, feat_dim=8, stem_stride=2)
    assert enc.stem(torch.rand(1, 3, 64, 32)).shape[-2:] == (32, 16)
    with pytest.raises(WorkbookError, match="stem_stride"):
        ResNetEncoder(3, (1,), stem_stride=3)
