"""tools/pretrain_then_detect.py: its flags and the detection budget it gives both detectors."""
from tests.helpers import load_tool

tool = load_tool("pretrain_then_detect")


def test_detection_budget_scales_the_demo_schedule():
    opts = dict(zip(*[iter(tool.detection_budget(600))] * 2))
    assert opts["SOLVER.MAX_ITER"] == "600" and opts["SOLVER.STEPS"] == "(440, 540)"
    assert opts["SOLVER.WARMUP_ITERS"] == "100" and opts["TEST.EVAL_PERIOD"] == "0"


def test_flags():
    args = tool.parse(["--cls-epochs", "3", "--det-iters", "50"])
    assert (args.cls_epochs, args.det_iters) == (3, 50)
    assert tool.CLS_CONFIG.endswith("configs/cls/digits_X50_8x4d.yaml")
