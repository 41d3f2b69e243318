"""README.md's examples, run as a user would copy them."""
import pathlib
import re

import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_block_after(heading):
    """The first ```python block of README.md after the line `heading`."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_use_it_in_a_detectron2_project_builds_detectron2s_x101_fpn():
    """The "Use it in a detectron2 project" block builds a Faster R-CNN FPN whose parameters
    have the names and shapes of detectron2's own X101-32x8d FPN model (model zoo config,
    detectron2's build_resnet_fpn_backbone)."""
    scope = {}
    exec(compile(_python_block_after("## Use it in a detectron2 project"), str(README), "exec"),
         scope)
    ours = {name: tuple(p.shape) for name, p in scope["model"].state_dict().items()}
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    theirs = {name: tuple(p.shape) for name, p in build_model(cfg).state_dict().items()}
    assert ours == theirs
