"""Training and evaluation on detectron2's engine."""
from .checks import check_datasets, check_weights
from .lazy import main as lazy_main
from .lazy import setup_lazy
from .setup import device_fallback, output_folder, setup_cfg, task_of
from .train import evaluate, main, run, train
from .trainer import Trainer
from .weights import build_checkpointer, config_from_weights
