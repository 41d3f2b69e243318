"""The paper's Figure 3: forms (a), (b), (c) compute the same function from mapped weights."""
import pytest
import torch

from resnext_det.checkpoint import convert_block_form
from resnext_det.modeling import build_resnext, parse_template
from resnext_det.modeling.blocks import (
    BLOCK_FORMS,
    ConcatPathsBottleneck,
    GroupedBottleneck,
    SummedPathsBottleneck,
)
from resnext_det.utils.testing import max_rel_error, randomize_norms_

FEATURES = ["res2", "res3", "res4", "res5"]


def _net(form, dtype, **kwargs):
    net = build_resnext(parse_template("X50_4x3d"), block_form=form, norm="BN",
                        out_features=FEATURES, **kwargs)
    return net.to(dtype).eval()


OTHER_FORMS = [f for f in BLOCK_FORMS if f != "c"]  # c: the grouped form the others map from


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
@pytest.mark.parametrize("kwargs", [{}, {"stride_in_1x1": True}, {"res5_dilation": 2}])
def test_forms_compute_the_same_function(dtype, tol, kwargs):
    grouped = randomize_norms_(_net("c", dtype, **kwargs))
    x = torch.rand(2, 3, 64, 64, dtype=dtype, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = grouped(x)
        for form in OTHER_FORMS:
            other = _net(form, dtype, **kwargs)
            other.load_state_dict(convert_block_form(grouped.state_dict(), form), strict=True)
            assert max_rel_error(other(x), ref) < tol, form


def test_form_mapping_round_trips_exactly():
    sd = randomize_norms_(_net("c", torch.float32)).state_dict()
    for form in OTHER_FORMS:
        back = convert_block_form(convert_block_form(sd, form), "c")
        assert back.keys() == sd.keys()
        assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_forms_have_the_structure_of_figure_3():
    kwargs = dict(cardinality=4, bottleneck_width=3, norm="BN")
    a = SummedPathsBottleneck(16, 32, **kwargs)
    b = ConcatPathsBottleneck(16, 32, **kwargs)
    c = GroupedBottleneck(16, 32, **kwargs)
    assert len(a.paths) == len(b.paths) == 4
    assert a.paths[0].conv3.out_channels == 32 and b.paths[0].conv3 is None
    assert b.conv3.in_channels == 12 and c.conv2.groups == 4
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(a) == count(b) == count(c)


@pytest.mark.parametrize("form", list(BLOCK_FORMS))
def test_zero_init_last_norm_makes_blocks_identity(form):
    net = build_resnext(parse_template("X50_2x4d"), block_form=form, norm="BN",
                        out_features=["res2"], zero_init_last=True).eval()
    block = net.res2[1]  # no projection: y = relu(x + 0)
    x = torch.rand(1, 256, 8, 8)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize("form", OTHER_FORMS)
@pytest.mark.parametrize("kind, head_norm", [("FPN", ""), ("FPN", "GN"), ("C4", "")])
def test_a_detectors_own_checkpoint_loads_whole_in_forms_a_b(tmp_path, form, kind, head_norm):
    """A box head of NUM_CONV >= 3 (conv1..conv4: it has a conv2 and a conv3) was taken for a
    ResNeXt block and split into paths: its convolutions kept their random start (b, a with
    GN) or the load raised an IndexError (a). C4's res5 blocks (in roi_heads) are blocks."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from resnext_det import add_resnext_config
    from resnext_det.checkpoint import ResNeXtCheckpointer

    cfg = add_resnext_config(get_cfg())
    zoo = {"FPN": "faster_rcnn_R_50_FPN_1x", "C4": "faster_rcnn_R_50_C4_1x"}[kind]
    cfg.merge_from_file(model_zoo.get_config_file(f"COCO-Detection/{zoo}.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNEXT.TEMPLATE",
                         "X50_2x4d", "MODEL.RESNEXT.BLOCK_FORM", form])
    if kind == "FPN":
        cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_resnext_fpn_backbone",
                             "MODEL.ROI_BOX_HEAD.NUM_CONV", 4, "MODEL.ROI_BOX_HEAD.NUM_FC", 1,
                             "MODEL.ROI_BOX_HEAD.NORM", head_norm])
    else:
        cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_resnext_backbone",
                             "MODEL.ROI_HEADS.NAME", "ResNeXtRes5ROIHeads"])
    torch.manual_seed(0)
    trained = build_model(cfg)
    randomize_norms_(trained)
    ResNeXtCheckpointer(trained, str(tmp_path)).save("model_final")
    torch.manual_seed(1)
    fresh = build_model(cfg)
    checkpointer = ResNeXtCheckpointer(fresh, str(tmp_path), block_form=form)
    checkpointer.load(str(tmp_path / "model_final.pth"))
    assert not checkpointer.last_incompatible.missing_keys
    expected = trained.state_dict()
    assert [k for k, v in fresh.state_dict().items() if not torch.equal(v, expected[k])] == []
