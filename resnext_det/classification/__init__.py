"""Classification pretraining whose checkpoints start resnext_det detectors.

get_cls_cfg() is the config (the paper's ImageNet recipe), ClsTrainer detectron2's
DefaultTrainer for it, tools/pretrain_cls.py the command. ImageNet-style folders and
CIFAR-10/100; ResNeXt ImageNet templates (the detection backbones) and ResNeXt-29.
"""
from .cifar_resnext import CifarTemplate, build_cifar_resnext, parse_cifar_template
from .config import get_cls_cfg
from .data import BadImageError, CifarDataset, DatasetError, FolderDataset, build_dataset
from .main import main, setup_cls_cfg
from .model import ClsModel, build_cls_model
from .trainer import ClsTrainer, evaluate_only

__all__ = [
    "CifarTemplate", "build_cifar_resnext", "parse_cifar_template", "get_cls_cfg",
    "BadImageError", "CifarDataset", "DatasetError", "FolderDataset", "build_dataset",
    "main", "setup_cls_cfg", "ClsModel", "build_cls_model", "ClsTrainer",
    "evaluate_only",
]
