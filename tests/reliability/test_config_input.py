"""Bad config files and overrides, as typed by a user: one `error:` line, exit status 2."""
from pathlib import Path

import pytest

from tests.helpers import load_tool

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/demo/faster_rcnn_X50_digits.yaml")


def _error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        load_tool("train_net").run(list(argv))
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["--config-file", "nope.yaml"], "--config-file 'nope.yaml': no such file"),
    (["--config-file", str(ROOT / "README.md")], "README.md'"),
    (["--config-file", CONFIG, "MODEL.NOPE", "1"], "Non-existent key: MODEL.NOPE"),
    (["--config-file", CONFIG, "SOLVER.MAX_ITER", "abc"], "for config key: SOLVER.MAX_ITER"),
    (["--config-file", CONFIG, "SOLVER.MAX_ITER"], "Override list has odd length"),
    (["--config-file", CONFIG, "MODEL.RESNEXT.TEMPLATE", "X50_3x"],
     "MODEL.RESNEXT.TEMPLATE='X50_3x' is not valid"),
    (["--config-file", CONFIG, "TEST.COCO_EVAL_BACKEND", "fast"],
     "TEST.COCO_EVAL_BACKEND='fast' is not valid"),
    # detectron2: a FloatingPointError after training began, a shape error, a ValueError
    (["--config-file", CONFIG, "MODEL.PIXEL_STD", "[0.0, 1.0, 1.0]"],
     "MODEL.PIXEL_STD=[0.0, 1.0, 1.0] is not valid: expected 3 finite numbers > 0"),
    (["--config-file", CONFIG, "MODEL.PIXEL_MEAN", "[1.0, 1.0]"],
     "MODEL.PIXEL_MEAN=[1.0, 1.0] is not valid: expected 3 finite numbers, one per channel"),
    (["--config-file", CONFIG, "DATALOADER.NUM_WORKERS", "-1"],
     "DATALOADER.NUM_WORKERS=-1 is not valid: expected a whole number >= 0"),
    # torch: a bare RuntimeError; detectron2: a KeyError; numpy: a ValueError per process
    (["--config-file", CONFIG, "MODEL.RESNETS.STEM_OUT_CHANNELS", "0"],
     "MODEL.RESNETS.STEM_OUT_CHANNELS=0 is not valid: expected a whole number >= 1"),
    (["--config-file", CONFIG, "MODEL.ROI_HEADS.NAME", "StandardRoiHeads"],
     "MODEL.ROI_HEADS.NAME='StandardRoiHeads' is not valid: expected one of ['CascadeROIHeads'"),
    (["--config-file", CONFIG, "MODEL.BACKBONE.NAME", "build_resnext_fpn"],
     "MODEL.BACKBONE.NAME='build_resnext_fpn' is not valid: expected one of"),
    (["--config-file", CONFIG, "MODEL.MASK_ON", "True", "MODEL.ROI_MASK_HEAD.NAME", "Mask"],
     "MODEL.ROI_MASK_HEAD.NAME='Mask' is not valid: expected one of ['MaskRCNNConvUpsampleHead'"),
    (["--config-file", CONFIG, "SEED", "5000000000"],
     "SEED=5000000000 is not valid: expected a whole number <= 4294967295"),
    # detectron2's asserts while the model is built (a C4 head on FPN's features, a box head
    # of no layer), torch's RuntimeError at the first iteration (FPN), or a box predictor of
    # biases only, trained without a word (FC_DIM 0)
    (["--config-file", CONFIG, "MODEL.ROI_HEADS.NAME", "Res5ROIHeads"],
     "MODEL.ROI_HEADS.IN_FEATURES=['p2', 'p3', 'p4', 'p5'] is not valid: expected one feature "
     "with MODEL.ROI_HEADS.NAME 'Res5ROIHeads'"),
    (["--config-file", CONFIG, "MODEL.FPN.OUT_CHANNELS", "0"],
     "MODEL.FPN.OUT_CHANNELS=0 is not valid: expected a whole number >= 1"),
    (["--config-file", CONFIG, "MODEL.ROI_BOX_HEAD.FC_DIM", "0"],
     "MODEL.ROI_BOX_HEAD.FC_DIM=0 is not valid: expected a whole number >= 1"),
    (["--config-file", CONFIG, "MODEL.ROI_BOX_HEAD.NUM_FC", "0"],
     "MODEL.ROI_BOX_HEAD.NUM_FC=0 is not valid: expected at least 1 with "
     "MODEL.ROI_BOX_HEAD.NUM_CONV 0"),
    # yacs turns no int into a float: its message named the key, the fix said "existing keys"
    (["--config-file", CONFIG, "SOLVER.MOMENTUM", "0"],
     "SOLVER.MOMENTUM holds a decimal number: write 0 as 0.0."),
    # detectron2's evaluator: an AssertionError at the first evaluation, after the training
    (["--config-file", CONFIG, "MODEL.KEYPOINT_ON", "True", "TEST.KEYPOINT_OKS_SIGMAS",
      "[0.1, 0.2]"], "TEST.KEYPOINT_OKS_SIGMAS=[0.1, 0.2] is not valid: expected 17 "
     "(MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS) finite numbers > 0, one per keypoint"),
    (["--config-file", CONFIG, "TEST.KEYPOINT_OKS_SIGMAS", "[0.1, 0.0]"],
     "TEST.KEYPOINT_OKS_SIGMAS=[0.1, 0.0] is not valid: expected finite numbers > 0"),
    # detectron2's GeneralizedRCNNWithTTA: an AssertionError once the training is done
    (["--config-file", CONFIG, "TEST.AUG.ENABLED", "True", "MODEL.KEYPOINT_ON", "True"],
     "TEST.AUG.ENABLED=True is not valid: expected False with MODEL.KEYPOINT_ON (keypoints)"),
    (["--config-file", str(ROOT / "configs/retinanet_X101_32x4d_FPN_1x.yaml"),
      "TEST.AUG.ENABLED", "True"], "TEST.AUG.ENABLED=True is not valid: expected False with "
     "MODEL.META_ARCHITECTURE 'RetinaNet' (it takes GeneralizedRCNN and PanopticFPN)"),
    (["--config-file", CONFIG, "TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(0, 800)"],
     "TEST.AUG.MIN_SIZES=(0, 800) is not valid: expected a list of short-side sizes >= 1"),
    # detectron2's verify_results: a KeyError once the training is done
    (["--config-file", CONFIG, "TEST.EXPECTED_RESULTS", "[['segm', 'AP', 30.0, 1.0]]"],
     "TEST.EXPECTED_RESULTS=[['segm', 'AP', 30.0, 1.0]] is not valid: expected [[task, metric, "
     "value, tolerance >= 0], ...] with a task of ['bbox']"),
    (["--config-file", CONFIG, "DATASETS.TEST", "('digits_val', 'digits_train')",
      "TEST.EXPECTED_RESULTS", "[['bbox', 'AP', 30.0, 1.0]]"], "is not valid: expected [] with "
     "DATASETS.TEST ['digits_val', 'digits_train']"),
])
def test_bad_config_input_is_one_line(argv, expected, capsys, tmp_path):
    error = _error(capsys, *argv, "OUTPUT_DIR", str(tmp_path / "out"))
    assert expected in error
    assert not (tmp_path / "out").exists()  # stopped before writing anything


def test_bad_config_files_are_one_line(capsys, tmp_path):
    """A _BASE_ that is not there (yacs: FileNotFoundError), a file that is a YAML list."""
    (tmp_path / "leaf.yaml").write_text('_BASE_: "gone/Base.yaml"\nSOLVER:\n  MAX_ITER: 3\n')
    error = _error(capsys, "--config-file", str(tmp_path / "leaf.yaml"))
    assert "gone/Base.yaml" in error and "_BASE_" in error
    (tmp_path / "list.yaml").write_text("- MODEL\n- SOLVER\n")
    error = _error(capsys, "--config-file", str(tmp_path / "list.yaml"))
    assert "list.yaml': the file is a YAML list, not a mapping" in error, error
    (tmp_path / "empty.yaml").write_text("")
    error = _error(capsys, "--config-file", str(tmp_path / "empty.yaml"))
    assert "empty.yaml': the file is empty. A config file is a YAML mapping" in error, error
    # yacs named neither the empty base nor the file: "argument of type 'NoneType' ..."
    (tmp_path / "on_empty.yaml").write_text('_BASE_: "empty.yaml"\n')
    error = _error(capsys, "--config-file", str(tmp_path / "on_empty.yaml"))
    assert f"on_empty.yaml': its _BASE_ '{tmp_path / 'empty.yaml'}' is empty" in error, error
    assert "NoneType" not in error
    # a _BASE_ chain that loops: yacs recursed until Python's RecursionError
    (tmp_path / "self.yaml").write_text('_BASE_: "self.yaml"\n')
    (tmp_path / "a.yaml").write_text('_BASE_: "b.yaml"\n')
    (tmp_path / "b.yaml").write_text('_BASE_: "a.yaml"\n')
    for name in ("self.yaml", "a.yaml"):
        assert "its _BASE_ chain loops" in _error(capsys, "--config-file", str(tmp_path / name))


def test_a_whole_number_for_a_decimal_key_in_a_file_says_how_to_write_it(capsys, tmp_path):
    """yacs refuses `MOMENTUM: 0` where the key holds 0.9 (it turns no int into a float)."""
    (tmp_path / "leaf.yaml").write_text(f'_BASE_: "{CONFIG}"\nSOLVER:\n  MOMENTUM: 0\n')
    error = _error(capsys, "--config-file", str(tmp_path / "leaf.yaml"))
    assert "leaf.yaml': Type mismatch" in error, error
    assert error.endswith("SOLVER.MOMENTUM holds a decimal number: write 0 as 0.0."), error


def test_options_after_the_overrides_are_named(capsys, tmp_path):
    """argparse leaves an option typed after KEY VALUE pairs among them."""
    error = _error(capsys, "--config-file", CONFIG, "OUTPUT_DIR", str(tmp_path), "--resume")
    assert "Override list has odd length" in error and "Options (--resume) go before them" in error


# detectron2 stops on each of these later: a ZeroDivisionError at the first checkpoint, an
# assert in the loader, a ValueError from the scheduler or PIL, a RuntimeError from torch
@pytest.mark.parametrize("opts, expected", [
    (["SOLVER.CHECKPOINT_PERIOD", "0"], "SOLVER.CHECKPOINT_PERIOD=0 is not valid"),
    (["SOLVER.STEPS", "(5, 3)"], "SOLVER.STEPS=[5, 3] is not valid"),
    (["SOLVER.MAX_ITER", "20", "SOLVER.STEPS", "(10, 20)"],  # fvcore: a ValueError traceback
     "SOLVER.STEPS=[10, 20] is not valid: expected iterations below SOLVER.MAX_ITER (20)"),
    (["SOLVER.MAX_ITER", "0"], "SOLVER.MAX_ITER=0 is not valid"),
    (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH=0 is not valid"),
    (["TEST.EVAL_PERIOD", "-1"], "TEST.EVAL_PERIOD=-1 is not valid"),
    (["SOLVER.LR_SCHEDULER_NAME", "WarmupCos"], "SOLVER.LR_SCHEDULER_NAME='WarmupCos'"),
    (["DATALOADER.SAMPLER_TRAIN", "Foo"], "DATALOADER.SAMPLER_TRAIN='Foo' is not valid"),
    # detectron2's loader: an AssertionError (ratio), a KeyError (a dataset without factor)
    (["DATALOADER.SAMPLER_TRAIN", "RandomSubsetTrainingSampler",
      "DATALOADER.RANDOM_SUBSET_RATIO", "0.0"], "DATALOADER.RANDOM_SUBSET_RATIO=0.0 is not valid"),
    (["DATALOADER.SAMPLER_TRAIN", "WeightedTrainingSampler", "DATASETS.TRAIN_REPEAT_FACTOR",
      "[['coco_2017_val', 2.0]]"], "DATASETS.TRAIN_REPEAT_FACTOR=[['coco_2017_val', 2.0]] is not "
     "valid: expected [name, factor] pairs, factors finite numbers > 0, each dataset of "
     "DATASETS.TRAIN ['digits_train'] at most once"),
    # detectron2's loader: a NotImplementedError on a bool, an OverflowError on inf; a name
    # given twice: the last factor, silently (dict)
    *[(["DATALOADER.SAMPLER_TRAIN", "WeightedTrainingSampler", "DATASETS.TRAIN_REPEAT_FACTOR",
        factors], f"DATASETS.TRAIN_REPEAT_FACTOR={shown} is not valid")
      for factors, shown in (("[['digits_train', True]]", "[['digits_train', True]]"),
                             ("[['digits_train', 1e400]]", "[['digits_train', inf]]"),
                             ("[['digits_train', 2.0], ['digits_train', 0.5]]",
                              "[['digits_train', 2.0], ['digits_train', 0.5]]"))],
    (["DATALOADER.SAMPLER_TRAIN", "WeightedTrainingSampler"],  # every factor 1: no weighting
     "DATASETS.TRAIN_REPEAT_FACTOR=[] is not valid: expected at least one [name, factor] pair"),
    # math's domain error; REPEAT_THRESHOLD 0 (detectron2's default): every image once
    (["DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler", "DATALOADER.REPEAT_THRESHOLD",
      "-0.5"], "DATALOADER.REPEAT_THRESHOLD=-0.5 is not valid: expected a finite number > 0"),
    (["DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler"],
     "DATALOADER.REPEAT_THRESHOLD=0.0 is not valid: expected a finite number > 0"),
    (["DATALOADER.SAMPLER_TRAIN", "WeightedCategoryTrainingSampler"],
     "DATALOADER.REPEAT_THRESHOLD=0.0 is not valid"),
    # the subset is drawn from a seed of comm.shared_random_seed: another one at each --resume
    (["DATALOADER.SAMPLER_TRAIN", "RandomSubsetTrainingSampler", "DATALOADER.RANDOM_SUBSET_RATIO",
      "0.5", "SEED", "-1"], "SEED=-1 is not valid: expected a fixed seed >= 0 with "
     "DATALOADER.SAMPLER_TRAIN RandomSubsetTrainingSampler"),
    # detectron2's evaluator asserts the count at the evaluation after the training
    (["MODEL.KEYPOINT_ON", "True", "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", "5"],
     "TEST.KEYPOINT_OKS_SIGMAS=[] is not valid: expected 5 (MODEL.ROI_KEYPOINT_HEAD."
     "NUM_KEYPOINTS) finite numbers > 0, one per keypoint. [] is COCO's sigmas of its 17"),
    (["INPUT.FORMAT", "rgb"], "INPUT.FORMAT='rgb' is not valid"),
    (["MODEL.DEVICE", "gpu"], "MODEL.DEVICE='gpu' is not valid"),
    (["DATASETS.TRAIN", "()"], "DATASETS.TRAIN=[] is not valid"),
    # ResizeShortestEdge's ValueError: MAX_SIZE_TEST at the evaluation after the training
    (["INPUT.MAX_SIZE_TEST", "0"], "INPUT.MAX_SIZE_TEST=0 is not valid: expected a whole number"),
    (["INPUT.MIN_SIZE_TRAIN", "(0,)"], "INPUT.MIN_SIZE_TRAIN=(0,) is not valid"),
    (["INPUT.MIN_SIZE_TEST", "-1"], "INPUT.MIN_SIZE_TEST=-1 is not valid"),
    (["INPUT.CROP.ENABLED", "True", "INPUT.CROP.TYPE", "bogus"],  # was: a bare AssertionError
     "INPUT.CROP.TYPE='bogus' is not valid: expected one of"),
    (["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "bogus"],
     "SOLVER.CLIP_GRADIENTS.CLIP_TYPE='bogus' is not valid"),
    (["MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64]]"],  # was: detectron2's assert at build
     "MODEL.ANCHOR_GENERATOR.SIZES=[[32], [64]] is not valid: expected one list for all "
     "features, or one per feature of MODEL.RPN.IN_FEATURES (5: ['p2', 'p3', 'p4', 'p5', 'p6'])"),
    # torch's optimizer: a bare ValueError; a negative GAMMA trained on, by gradient ascent
    (["SOLVER.BASE_LR", "-0.1"], "SOLVER.BASE_LR=-0.1 is not valid: expected a finite number > 0"),
    (["SOLVER.BASE_LR", "1e400"], "SOLVER.BASE_LR=inf is not valid"),
    (["SOLVER.MOMENTUM", "-1.0"], "SOLVER.MOMENTUM=-1.0 is not valid"),
    (["SOLVER.WEIGHT_DECAY", "-1.0"], "SOLVER.WEIGHT_DECAY=-1.0 is not valid"),
    (["SOLVER.GAMMA", "-1.0"], "SOLVER.GAMMA=-1.0 is not valid: expected a finite number > 0"),
    (["SOLVER.NESTEROV", "True", "SOLVER.MOMENTUM", "0.0"],
     "SOLVER.NESTEROV=True is not valid: expected False with SOLVER.MOMENTUM 0"),
    (["SOLVER.WARMUP_METHOD", "bogus"], "SOLVER.WARMUP_METHOD='bogus' is not valid"),
    (["SOLVER.WARMUP_FACTOR", "-0.5"], "SOLVER.WARMUP_FACTOR=-0.5 is not valid"),  # ascent
    (["SOLVER.LR_SCHEDULER_NAME", "WarmupStepWithFixedGammaLR", "SOLVER.NUM_DECAYS", "0"],
     "SOLVER.NUM_DECAYS=0 is not valid: expected a whole number >= 1"),
    # detectron2's asserts: auto_scale_workers, build_augmentation, Matcher
    (["SOLVER.REFERENCE_WORLD_SIZE", "3"], "SOLVER.REFERENCE_WORLD_SIZE=3 is not valid: expected "
     "0 or a divisor of SOLVER.IMS_PER_BATCH (8)"),
    (["INPUT.MIN_SIZE_TRAIN_SAMPLING", "bogus"], "INPUT.MIN_SIZE_TRAIN_SAMPLING='bogus' is not"),
    (["INPUT.MIN_SIZE_TRAIN_SAMPLING", "range", "INPUT.MIN_SIZE_TRAIN", "(64,)"],
     "INPUT.MIN_SIZE_TRAIN=(64,) is not valid: expected 2 sizes"),
    (["INPUT.RANDOM_FLIP", "bogus"], "INPUT.RANDOM_FLIP='bogus' is not valid"),
    (["MODEL.ROI_HEADS.IOU_THRESHOLDS", "[0.5, 0.3]"],
     "MODEL.ROI_HEADS.IOU_THRESHOLDS=[0.5, 0.3] is not valid: expected increasing IoUs"),
    (["MODEL.RPN.IOU_LABELS", "[0, 1]"], "MODEL.RPN.IOU_LABELS=[0, 1] is not valid: expected 3"),
    (["MODEL.RPN.BATCH_SIZE_PER_IMAGE", "0"],  # was: FloatingPointError, infinite loss
     "MODEL.RPN.BATCH_SIZE_PER_IMAGE=0 is not valid: expected a whole number >= 1"),
])
def test_bad_training_keys_stop_before_training(opts, expected, capsys, tmp_path):
    """Also in a folder of an earlier run (--resume): its config.yaml stays as it was (the
    refused start had replaced it, before its checks ran)."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out/config.yaml").write_text("# the earlier run's config\n")
    error = _error(capsys, "--config-file", CONFIG, "--resume", *opts,
                   "OUTPUT_DIR", str(tmp_path / "out"))
    assert expected in error
    assert not list(tmp_path.rglob("model_*.pth"))
    assert (tmp_path / "out/config.yaml").read_text() == "# the earlier run's config\n"


def test_evaluating_keypoints_without_their_sigmas_is_an_error(capsys, tmp_path):
    """--eval-only of a 5-keypoint model with TEST.KEYPOINT_OKS_SIGMAS [] (COCO's 17): the
    assert of detectron2's evaluator, after the whole inference."""
    error = _error(capsys, "--config-file", CONFIG, "--eval-only", "MODEL.KEYPOINT_ON", "True",
                   "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", "5", "OUTPUT_DIR", str(tmp_path))
    assert "TEST.KEYPOINT_OKS_SIGMAS=[] is not valid: expected 5" in error


@pytest.mark.parametrize("key, value, readers", [
    ("DATALOADER.RANDOM_SUBSET_RATIO", 0.5, "RandomSubsetTrainingSampler"),
    ("DATALOADER.REPEAT_THRESHOLD", 0.001,
     "RepeatFactorTrainingSampler and WeightedCategoryTrainingSampler"),
    ("DATASETS.TRAIN_REPEAT_FACTOR", [["a", 2.0]],
     "WeightedTrainingSampler and WeightedCategoryTrainingSampler"),
])
def test_a_key_of_another_sampler_is_a_warning(key, value, readers):
    """detectron2's loader reads a sampler's keys only for that sampler: with
    TrainingSampler, a subset ratio of 0.5 trained on every image, without a word."""
    from detectron2.data.build import _train_loader_from_config
    from detectron2.data.samplers import TrainingSampler

    from resnext_det.config.checks import check_training_keys
    from tests.helpers import captured, make_cfg

    cfg = make_cfg("DATASETS.TRAIN", "('a',)", key, value)
    built = _train_loader_from_config(cfg, mapper=lambda d: d, dataset=[{}] * 4)["sampler"]
    assert type(built) is TrainingSampler and built._size == 4  # detectron2 ignores the key
    with captured("resnext_det.config.sampler_checks") as log:
        check_training_keys(cfg)
    assert log == [f"{key}={value!r} is read only by {readers}: DATALOADER.SAMPLER_TRAIN "
                   "'TrainingSampler' ignores it. Choose the sampler it is meant for, or leave "
                   "the key out."]
    with captured("resnext_det.config.checks") as log:
        check_training_keys(make_cfg("DATASETS.TRAIN", "('a',)"))  # the defaults: nothing
    assert log == []


# pretraining: torch's bare ValueErrors (optimizer, DataLoader), or training on by ascent
@pytest.mark.parametrize("opts, expected", [
    (["SOLVER.GAMMA", "-0.1"], "SOLVER.GAMMA=-0.1 is not valid: expected a finite number > 0"),
    (["SOLVER.WARMUP_EPOCHS", "1.0", "SOLVER.WARMUP_FACTOR", "-1.0"],
     "SOLVER.WARMUP_FACTOR=-1.0 is not valid: expected a finite number >= 0 and <= 1"),
    (["SOLVER.BASE_LR", "-0.1"], "SOLVER.BASE_LR=-0.1 is not valid"),
    (["SOLVER.WEIGHT_DECAY", "-1e-4"], "SOLVER.WEIGHT_DECAY=-0.0001 is not valid"),
    (["SOLVER.NESTEROV", "True", "SOLVER.MOMENTUM", "0.0"],
     "SOLVER.NESTEROV=True is not valid: expected False with "
     "SOLVER.MOMENTUM 0"),  # torch: a bare ValueError
    (["SOLVER.WARMUP_EPOCHS", "-1.0"], "SOLVER.WARMUP_EPOCHS=-1.0 is not valid"),
    (["SOLVER.MAX_ITER", "-1"], "SOLVER.MAX_ITER=-1 is not valid: expected a whole number >= 0"),
    (["DATA.NUM_WORKERS", "-1"], "DATA.NUM_WORKERS=-1 is not valid: expected a whole number"),
    (["TEST.IMS_PER_BATCH", "0"], "TEST.IMS_PER_BATCH=0 is not valid"),
    (["LOG_PERIOD", "0"], "LOG_PERIOD=0 is not valid"),
])
def test_bad_pretraining_keys_stop_before_training(opts, expected, capsys, tmp_path):
    from tests.classification.helpers import tiny_opts, write_folder

    data = write_folder(tmp_path / "data", per_class=(2, 1), size=8)
    argv = ["--config-file", str(ROOT / "configs/cls/digits_X50_8x4d.yaml"),
            *tiny_opts(data, tmp_path / "out"), *opts]
    with pytest.raises(SystemExit) as exit_:
        load_tool("pretrain_cls").run(argv)
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], errors
    assert not list(tmp_path.rglob("model_*.pth"))


def test_pretraining_batches_split_over_the_processes(monkeypatch):
    """TEST.IMS_PER_BATCH 6 over 4 processes was an error at the first evaluation, after an
    epoch of training."""
    from detectron2.utils import comm

    from resnext_det.classification import get_cls_cfg
    from resnext_det.config.errors import ConfigError
    from resnext_det.config.pretraining_checks import check_pretraining_keys

    cfg = get_cls_cfg()
    cfg.TEST.IMS_PER_BATCH = 6
    monkeypatch.setattr(comm, "get_world_size", lambda: 4)
    with pytest.raises(ConfigError, match=r"TEST.IMS_PER_BATCH=6 is not valid: expected a "
                                          r"multiple of the number of processes \(4\)"):
        check_pretraining_keys(cfg)
    cfg.TEST.IMS_PER_BATCH = 8
    check_pretraining_keys(cfg)


@pytest.mark.parametrize("argv, expected", [
    (["--num-gpus", "-1"], "--num-gpus -1: expected >= 1"),
    (["--num-gpus", "0"], "--num-gpus 0: expected >= 1"),
    (["--machine-rank", "5"], "--machine-rank 5: expected 0..0"),
    (["--num-machines", "0"], "--num-machines 0: expected >= 1"),
    (["--num-gpus", "2", "--dist-url", "bogus"], "--dist-url bogus: expected tcp://HOST:PORT"),
    (["--num-gpus", "2", "--dist-url", "tcp://10.0.0.1"], "--dist-url tcp://10.0.0.1: expected"),
    (["--num-machines", "2", "--dist-url", "auto"], "--dist-url auto: expected across machines"),
])
@pytest.mark.parametrize("tool", ["train_net", "pretrain_cls"])
def test_launch_options_are_checked(tool, argv, expected, capsys, tmp_path):
    """detectron2's launch ran -1 processes as one, and a machine rank past the machines."""
    with pytest.raises(SystemExit) as exit_:
        load_tool(tool).run(["--config-file", CONFIG, *argv, "OUTPUT_DIR", str(tmp_path / "o")])
    assert exit_.value.code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("url", ["tcp://10.0.0.1:29500", "tcp://[fe80::1]:29500",
                                 "tcp://node-0.cluster:1234", "file:///shared/rendezvous", "env://"])
def test_launch_takes_torchs_rendezvous_urls(url):
    from detectron2.engine import default_argument_parser

    from resnext_det.utils.cli import parse_launch_args

    argv = ["--num-machines", "2", "--dist-url", url]
    assert parse_launch_args(default_argument_parser(), argv).dist_url == url


def test_a_folder_as_config_file_is_named_so(capsys, tmp_path):
    assert "a folder, not a file" in _error(capsys, "--config-file", str(tmp_path))
