"""Classification pretraining whose checkpoints start resnext_det detectors.

get_cls_cfg() is the config (the paper's ImageNet recipe), ClsTrainer the loop,
tools/pretrain_cls.py the command. ImageNet-style folders and CIFAR-10/100 pickles;
ResNeXt ImageNet templates (the detection backbones) and ResNeXt-29 for CIFAR.
"""
from .cifar_resnext import CifarTemplate, build_cifar_resnext, parse_cifar_template
from .config import get_cls_cfg
from .data import BadImageError, CifarDataset, DatasetError, FolderDataset, build_dataset
from .main import launch_cls, main, setup_cls_cfg
from .model import build_cls_model
from .trainer import ClsTrainer, evaluate_only

__all__ = [
    "CifarTemplate", "build_cifar_resnext", "parse_cifar_template", "get_cls_cfg",
    "BadImageError", "CifarDataset", "DatasetError", "FolderDataset", "build_dataset",
    "launch_cls", "main", "setup_cls_cfg", "build_cls_model", "ClsTrainer", "evaluate_only",
]
