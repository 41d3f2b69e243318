"""ROIAlign as a sparse product (resnext_det.modeling.roi_align): torchvision's values and
gradients, and detectron2's ROIPooler's over FPN levels."""
import pytest
import torch
import torchvision
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes

from resnext_det.modeling.roi_align import SparseROIPooler, roi_align, use_roi_align

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}  # of the largest magnitude


def _close(got, expected, dtype=torch.float32):
    """Equal up to float rounding: sums of many taps, added in another order."""
    return (got - expected).abs().max() <= TOLERANCE[dtype] * max(1.0, expected.abs().max())


def _rois(n, height, width, scale, generator):
    """Boxes of every kind on (height, width) features at `scale`: random ones, ones reaching
    past each border (samples below -1 and above the size), tiny, empty, inverted and huge."""
    h, w = height / scale, width / scale
    extent = torch.tensor([w, h])
    corner = torch.rand(40, 2, generator=generator) * extent * 1.4 - 0.2 * extent
    side = torch.rand(40, 2, generator=generator) ** 3 * torch.tensor([w, h]) * 1.5
    boxes = torch.cat([torch.cat([corner, corner + side], 1), torch.tensor([
        [-12.0, -12.0, w / 2, h / 2],  # starts past -1 in feature pixels
        [w / 2, h / 2, w + 15, h + 15],  # ends past the size
        [-30.0, -30.0, -9.0, -9.0],  # wholly outside: zeros
        [w - 1.0, h - 1.0, w + 40, h + 40],  # clamped at size - 1
        [3.0, 4.0, 3.0, 4.0],  # empty
        [5.0, 5.0, 5.2, 5.1],  # tiny
        [9.0, 9.0, 2.0, 3.0],  # inverted
        [-200.0, -150.0, w * 5, h * 4],  # huge: many samples per bin
        [0.0, 0.0, w, h],  # the whole map
    ])])
    batch = torch.randint(0, n, (boxes.shape[0], 1), generator=generator).float()
    return torch.cat([batch, boxes], 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_equals_torchvision_values_and_gradients(dtype, aligned, sampling_ratio):
    g = torch.Generator().manual_seed(0)
    scale, out_size = 0.25, (7, 5)
    x = torch.randn(2, 3, 11, 13, generator=g, dtype=dtype, requires_grad=True)
    rois = _rois(2, 11, 13, scale, g).to(dtype)
    expected = torchvision.ops.roi_align(x, rois, out_size, scale, sampling_ratio, aligned)
    got = roi_align(x, rois, out_size, scale, sampling_ratio, aligned)
    grad = torch.randn(expected.shape, generator=g, dtype=dtype)
    expected_grad, = torch.autograd.grad(expected, x, grad)
    got_grad, = torch.autograd.grad(got, x, grad)
    assert got.shape == expected.shape and got.dtype == dtype and got.is_contiguous()
    assert expected.abs().max() > 1 and expected_grad.abs().max() > 1  # not a trivial case
    assert _close(got, expected, dtype) and _close(got_grad, expected_grad, dtype)


def _fpn(generator):
    """4 levels (strides 4..32) of a 2-image batch of 64x96 images, and 32 boxes on the
    first image, 8 for each level (detectron2's rule: sides < 112, 112-224, 224-448, > 448
    px), many past the image's borders; the second image has none."""
    feats = [torch.randn(2, 4, 64 // s, 96 // s, generator=generator, requires_grad=True)
             for s in (4, 8, 16, 32)]
    low = torch.tensor([2.0, 115.0, 230.0, 460.0]).repeat_interleave(8).unsqueeze(1)
    wh = low * (1 + 0.9 * torch.rand(32, 2, generator=generator))
    xy = torch.rand(32, 2, generator=generator) * torch.tensor([96.0, 64.0])
    return feats, [Boxes(torch.cat([xy - wh / 2, xy + wh / 2], 1)), Boxes(torch.zeros(0, 4))]


@pytest.mark.parametrize("pooler_type", ["ROIAlignV2", "ROIAlign"])
def test_sparse_pooler_equals_detectron2_pooler(pooler_type):
    g = torch.Generator().manual_seed(1)
    feats, boxes = _fpn(g)
    theirs = ROIPooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 0, pooler_type)
    ours = ROIPooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 0, pooler_type)
    assert use_roi_align(ours, "sparse") == 1 and type(ours) is SparseROIPooler
    expected, got = theirs(feats, boxes), ours(feats, boxes)
    grad = torch.randn(expected.shape, generator=g)
    expected_grads = torch.autograd.grad(expected, feats, grad)
    got_grads = torch.autograd.grad(got, feats, grad)
    assert got.shape == expected.shape == (32, 4, 7, 7)
    assert _close(got, expected)
    for level, (a, b) in enumerate(zip(got_grads, expected_grads)):
        assert b.abs().max() > 0.1, f"level {level} pooled nothing: the boxes do not test it"
        assert _close(a, b)


def test_no_boxes_and_other_pooler_types_are_detectron2s():
    g = torch.Generator().manual_seed(2)
    feats, _ = _fpn(g)
    empty = [Boxes(torch.zeros(0, 4)), Boxes(torch.zeros(0, 4))]
    ours = ROIPooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 0, "ROIAlignV2")
    use_roi_align(ours, "sparse")
    assert ours(feats, empty).shape == (0, 4, 7, 7)
    pool = ROIPooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 0, "ROIPool")  # not a ROIAlign
    boxes = _fpn(g)[1]
    expected = pool(feats, boxes)
    use_roi_align(pool, "sparse")
    assert torch.equal(pool(feats, boxes), expected)


def test_sparse_pooler_is_detectron2s_while_fx_tracing():
    """Under torch.fx.symbolic_trace the sparse product is off (ROIPooler's forward runs)."""
    feats, boxes = _fpn(torch.Generator().manual_seed(3))
    pool = ROIPooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), 0, "ROIAlignV2")
    use_roi_align(pool, "sparse")
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(pool._sparse_applies(feats, boxes))
            return x

    torch.fx.symbolic_trace(Probe())
    assert seen == [False] and pool._sparse_applies(feats, boxes)


def test_use_roi_align_swaps_only_the_class():
    model = torch.nn.Sequential(ROIPooler(7, (1 / 4, 1 / 8), 0, "ROIAlignV2"),
                                torch.nn.Linear(2, 2))
    keys = list(model.state_dict())
    assert use_roi_align(model, "sparse") == 1 and type(model[0]) is SparseROIPooler
    assert list(model.state_dict()) == keys
    assert use_roi_align(model, "torchvision") == 1 and type(model[0]) is ROIPooler
    with pytest.raises(ValueError, match=r"'fast'.*'torchvision', 'sparse'"):
        use_roi_align(model, "fast")


def test_config_key_sets_the_trainers_poolers():
    """MODEL.RESNEXT.ROI_ALIGN reaches the model Trainer.build_model returns; a bad value is
    a ConfigError naming the key and the values that work, at start-up and in build_model."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    from resnext_det.config import ConfigError, add_resnext_config
    from resnext_det.config.checks import check_resnext_keys
    from resnext_det.engine import Trainer

    cfg = add_resnext_config(get_cfg())
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18,
                         "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.RESNETS.STEM_OUT_CHANNELS", 8,
                         "MODEL.FPN.OUT_CHANNELS", 8, "MODEL.ROI_BOX_HEAD.FC_DIM", 8])
    assert type(Trainer.build_model(cfg).roi_heads.box_pooler) is ROIPooler  # the default
    cfg.MODEL.RESNEXT.ROI_ALIGN = "sparse"
    assert type(Trainer.build_model(cfg).roi_heads.box_pooler) is SparseROIPooler
    cfg.MODEL.RESNEXT.ROI_ALIGN = "fast"
    for check in (check_resnext_keys, Trainer.build_model):  # at start, and where it is read
        with pytest.raises(ConfigError, match=r"MODEL.RESNEXT.ROI_ALIGN='fast' is not valid: "
                                              r"expected one of \['torchvision', 'sparse'\]"):
            check(cfg)
