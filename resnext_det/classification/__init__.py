"""Classification pretraining whose checkpoints start resnext_det detectors.

get_cls_cfg() is the config (the paper's ImageNet recipe), ClsTrainer detectron2's
DefaultTrainer for it, tools/pretrain_cls.py the command. The models are in modeling/
(the ImageNet templates = the detection backbones, ResNeXt-29 in modeling/cifar.py), the
datasets in data/classification.py (ImageNet-style folders, CIFAR-10/100), exact resume
in engine/resume.py.
"""
from .config import get_cls_cfg
from .main import main, setup_cls_cfg
from .model import ClsModel, build_cls_model
from .trainer import ClsTrainer, evaluate_only

__all__ = ["get_cls_cfg", "main", "setup_cls_cfg", "ClsModel", "build_cls_model", "ClsTrainer",
           "evaluate_only"]
