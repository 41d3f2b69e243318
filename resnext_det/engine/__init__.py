"""Training and evaluation on detectron2's engine."""
from .checks import check_datasets, check_weights
from .setup import device_fallback, setup_cfg
from .train import evaluate, main, run, train
from .trainer import Trainer
from .weights import build_checkpointer, config_from_weights
