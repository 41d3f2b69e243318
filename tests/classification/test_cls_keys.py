"""Key sweep: tools/pretrain_cls.py's training against a plain PyTorch loop written from
what classification/config.py says each key means.

The reference takes only peers: torchvision's ImageFolder / CIFAR10 and transforms,
detectron2's TrainingSampler (the data order ours documents), torch.optim.SGD and
F.cross_entropy, the lr in closed form from the key comments. It starts from our
initial weights (only the training may differ) and trains the network build_cls_model
builds. For each key moved off the base setting, ours must match it (weights, lr of each
iteration, each iteration's loss), and the key must change the reference's own result.
"""
import hashlib
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data.samplers import TrainingSampler
from PIL import Image
from torchvision import datasets
from torchvision import transforms as T

from resnext_det.classification import ClsTrainer, build_cls_model, get_cls_cfg, main
from tests.helpers import training_records

from .helpers import cls_args

CLASSES = [f"c{k}" for k in range(6)]  # 6 classes: top-5 differs from top-1
BATCH = 3  # 18 training images: 6 iterations per epoch


def _picture(rng, label, size):
    """Noise with a class-dependent bright stripe; (w, h) = size."""
    pixels = rng.integers(0, 150, (size[1], size[0], 3), dtype=np.uint8)
    pixels[label * size[1] // 6:(label + 1) * size[1] // 6, :, label % 3] += 100
    return pixels


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """train: 3 per class (some not square); val: 2 per class, 20x14 and 14x22."""
    root, rng = tmp_path_factory.mktemp("keys"), np.random.default_rng(0)
    for split, sizes in (("train", [(16, 16), (20, 16), (16, 18)]), ("val", [(20, 14), (14, 22)])):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i, size in enumerate(sizes):
                Image.fromarray(_picture(rng, label, size)).save(root / split / name / f"{i}.png")
    return root


def base_opts(root, out):
    return [str(v) for v in [
        "MODEL.DEVICE", "cpu", "MODEL.RESNEXT.TEMPLATE", "X50_2x2d",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.RES2_OUT_CHANNELS", 16,
        "DATA.ROOT", root, "DATA.NUM_WORKERS", 0, "INPUT.TRAIN_CROP", "none",
        "INPUT.RANDOM_FLIP", False, "INPUT.TRAIN_SIZE", 16, "INPUT.TEST_RESIZE", 16,
        "INPUT.TEST_CROP", 16, "SOLVER.IMS_PER_BATCH", BATCH, "SOLVER.REFERENCE_BATCH", BATCH,
        "SOLVER.MAX_EPOCHS", 1, "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", 1000,
        "TEST.EVAL_PERIOD", 0, "TEST.IMS_PER_BATCH", 5, "LOG_PERIOD", 1, "OUTPUT_DIR", out]]


def cfg_of(opts):
    cfg = get_cls_cfg()
    cfg.merge_from_list(opts)
    return cfg


def run_ours(opts, monkeypatch, resume=False):
    """main() of tools/pretrain_cls.py: {"init", "final" (state dicts), "lr", "loss" (of each
    iteration this run trained, from detectron2's event storage), "eval" (the last
    evaluation)}."""
    seen = {}
    original = ClsTrainer.resume_or_load

    def spy(self, resume=True):
        seen["init"] = {k: v.clone() for k, v in self.net.state_dict().items()}
        original(self, resume)
        seen["trainer"] = self
    with monkeypatch.context() as m:
        m.setattr(ClsTrainer, "resume_or_load", spy)
        result = main(cls_args(opts, resume=resume))
    trainer = seen.pop("trainer")  # a resumed run's storage starts with its checkpoint's last
    history = {k: [v for v, i in trainer.storage.history(k).values() if i >= trainer.start_iter]
               for k in ("lr", "total_loss")}
    return dict(seen, final=trainer.net.state_dict(), lr=history["lr"], loss=history["total_loss"],
                eval=result)


# -- the reference ------------------------------------------------------------------------

def ref_normalize(cfg):
    """0-255 pixels in INPUT.FORMAT order, (x - PIXEL_MEAN) / PIXEL_STD (config.py)."""
    mean, std = (torch.tensor(cfg.MODEL[k], dtype=torch.float32).view(3, 1, 1)
                 for k in ("PIXEL_MEAN", "PIXEL_STD"))
    bgr = cfg.INPUT.FORMAT == "BGR"

    def normalize(x):
        x = x.float()
        return ((x[[2, 1, 0]] if bgr else x) - mean) / std
    return normalize


def ref_train_transform(cfg):
    """INPUT.TRAIN_CROP, RANDOM_FLIP, COLOR_JITTER as config.py describes them, torchvision's."""
    inp = cfg.INPUT
    ops = {"none": [T.Resize((inp.TRAIN_SIZE, inp.TRAIN_SIZE))],
           "random_resized": [T.RandomResizedCrop(inp.TRAIN_SIZE, scale=tuple(inp.SCALE),
                                                  ratio=tuple(inp.RATIO))],
           "pad_crop": [T.RandomCrop(inp.TRAIN_SIZE, padding=inp.PAD)]}[inp.TRAIN_CROP]
    if inp.RANDOM_FLIP:
        ops.append(T.RandomHorizontalFlip(0.5))
    if inp.COLOR_JITTER:
        j = inp.COLOR_JITTER
        ops.append(T.ColorJitter(brightness=j, contrast=j, saturation=j))
    return T.Compose(ops + [T.PILToTensor(), ref_normalize(cfg)])


def ref_test_transform(cfg):
    """Shorter side to TEST_RESIZE, center TEST_CROP crop."""
    return T.Compose([T.Resize(cfg.INPUT.TEST_RESIZE), T.CenterCrop(cfg.INPUT.TEST_CROP),
                      T.PILToTensor(), ref_normalize(cfg)])


def cifar10(root, train, transform):
    """torchvision's CIFAR10 on a generated release: its file list, with our files' md5."""
    folder = Path(root) / datasets.CIFAR10.base_folder

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    class Generated(datasets.CIFAR10):
        train_list = [[name, md5(name)] for name, _ in datasets.CIFAR10.train_list]
        test_list = [[name, md5(name)] for name, _ in datasets.CIFAR10.test_list]
        meta = dict(datasets.CIFAR10.meta, md5=md5(datasets.CIFAR10.meta["filename"]))
    return Generated(root, train=train, transform=transform)


def ref_dataset(cfg, train):
    d = cfg.DATA
    transform = ref_train_transform(cfg) if train else ref_test_transform(cfg)
    if d.NAME == "cifar10":
        return cifar10(d.ROOT, train, transform)
    return datasets.ImageFolder(Path(d.ROOT) / (d.TRAIN_SPLIT if train else d.VAL_SPLIT),
                                transform=transform)


def ref_lr(s, i, epoch_iters):
    """The lr of iteration i (i iterations done: i / epoch_iters epochs of data)."""
    epoch = i / epoch_iters

    def schedule(epoch):
        if s.LR_SCHEDULER == "cosine":  # to 0 at the end
            return 0.5 * (1 + math.cos(math.pi * epoch / s.MAX_EPOCHS))
        return s.GAMMA ** sum(epoch >= e for e in s.STEPS if e < s.MAX_EPOCHS)
    mult = schedule(epoch)
    if epoch < s.WARMUP_EPOCHS:  # linear from WARMUP_FACTOR x the start to the schedule
        start, end = s.WARMUP_FACTOR * schedule(0), schedule(s.WARMUP_EPOCHS)
        mult = start + (end - start) * epoch / s.WARMUP_EPOCHS
    return s.BASE_LR * s.IMS_PER_BATCH / s.REFERENCE_BATCH * mult


def ref_sample(dataset, seed, place, index):
    """Each sample's augmentation from torch's RNG seeded by its place in the stream (the
    scheme engine/resume.py documents)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((seed * 1_000_003 + place) % 2 ** 63)
        return dataset[index]


def ref_iterations(s, images):
    """SOLVER.MAX_ITER, else round(MAX_EPOCHS x images / IMS_PER_BATCH) (config.py)."""
    return s.MAX_ITER or round(s.MAX_EPOCHS * images / s.IMS_PER_BATCH)


def run_reference(cfg, init, decay_all=True):
    """{"final", "lr", "loss"} of the plain loop, from the state dict `init`; decay_all False:
    weight decay on conv / linear weights only (what "norms included" rules out)."""
    s = cfg.SOLVER
    dataset = ref_dataset(cfg, True)
    model = build_cls_model(cfg, len(dataset.classes)).train()
    model.load_state_dict(init)
    if decay_all:
        groups = [{"params": list(model.parameters())}]
    else:
        decayed = [p for p in model.parameters() if p.ndim > 1]
        groups = [{"params": decayed}, {"params": [p for p in model.parameters() if p.ndim <= 1],
                                        "weight_decay": 0.0}]
    optimizer = torch.optim.SGD(groups, lr=0.0, momentum=s.MOMENTUM, nesterov=s.NESTEROV,
                                weight_decay=s.WEIGHT_DECAY)
    epoch_iters = len(dataset) / s.IMS_PER_BATCH
    order = iter(TrainingSampler(len(dataset), shuffle=True, seed=cfg.SEED))
    lrs, losses = [], []
    for i in range(ref_iterations(s, len(dataset))):
        lrs.append(ref_lr(s, i, epoch_iters))
        for group in optimizer.param_groups:
            group["lr"] = lrs[-1]
        samples = [ref_sample(dataset, cfg.SEED, i * s.IMS_PER_BATCH + k, next(order))
                   for k in range(s.IMS_PER_BATCH)]
        images, labels = torch.stack([x for x, _ in samples]), torch.tensor([y for _, y in samples])
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"final": model.state_dict(), "lr": lrs, "loss": losses}


def ref_evaluate(cfg, state):
    """Mean cross-entropy, top-1 / top-5 error (timm's accuracy) on the validation split."""
    from timm.utils import accuracy

    dataset = ref_dataset(cfg, False)
    model = build_cls_model(cfg, len(dataset.classes)).eval()
    model.load_state_dict(state)
    images = torch.stack([x for x, _ in dataset])
    labels = torch.tensor([y for _, y in dataset])
    with torch.no_grad():
        logits = model(images)
    top1, top5 = accuracy(logits, labels, topk=(1, 5))
    return {"loss": float(F.cross_entropy(logits, labels)), "top1_err": 100 - float(top1),
            "top5_err": 100 - float(top5), "images": len(labels)}


def max_diff(a, b):
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a
               if a[k].is_floating_point())



def assert_same_weights(ours, ref):
    assert ours.keys() == ref.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-5, atol=1e-6, msg=key)


def assert_logged(out, ref):
    """metrics.json: each iteration's lr, and total_loss as detectron2's JSONWriter writes it,
    the median of the last 20 iterations' losses."""
    records = training_records(out)
    assert [r["iteration"] for r in records] == list(range(len(ref["lr"])))
    assert [r["lr"] for r in records] == pytest.approx(ref["lr"], rel=1e-12)
    medians = [float(np.median(ref["loss"][max(0, i - 19):i + 1])) for i in range(len(records))]
    assert [r["total_loss"] for r in records] == pytest.approx(medians, rel=1e-5)


def assert_same_evaluation(ours, ref):
    assert ours["images"] == ref["images"]
    assert ours["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    for key in ("top1_err", "top5_err"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-4), key


# KEY VALUE overrides of base_opts (1 epoch of 6 iterations, lr 0.1, no step, no warmup)
CASES = {
    "BASE_LR": ("SOLVER.BASE_LR", 0.05),
    "REFERENCE_BATCH": ("SOLVER.REFERENCE_BATCH", 6),  # linear scaling: lr 0.05
    "IMS_PER_BATCH": ("SOLVER.IMS_PER_BATCH", 6),  # lr 0.2, 3 iterations per epoch
    "MOMENTUM": ("SOLVER.MOMENTUM", 0.5),
    "NESTEROV": ("SOLVER.NESTEROV", False),
    "WEIGHT_DECAY": ("SOLVER.WEIGHT_DECAY", 0.05),
    "cosine": ("SOLVER.LR_SCHEDULER", "cosine"),
    "STEPS": ("SOLVER.MAX_EPOCHS", 2, "SOLVER.STEPS", "(0.5, 1.5)"),
    "GAMMA": ("SOLVER.MAX_EPOCHS", 2, "SOLVER.STEPS", "(0.5, 1.5)", "SOLVER.GAMMA", 0.5),
    # 18 / 4 = 4.5 iterations per epoch, 14 in 3 epochs: the step at epoch 2 is at
    # iteration 9 (2.0 epochs done), not at 10 (2/3 of 14)
    "STEPS_4.5_per_epoch": ("SOLVER.IMS_PER_BATCH", 4, "SOLVER.REFERENCE_BATCH", 4,
                            "SOLVER.MAX_EPOCHS", 3, "SOLVER.STEPS", "(1, 2)"),
    "cosine_warmup_4.5_per_epoch": ("SOLVER.IMS_PER_BATCH", 4, "SOLVER.REFERENCE_BATCH", 4,
                                    "SOLVER.MAX_EPOCHS", 3, "SOLVER.LR_SCHEDULER", "cosine",
                                    "SOLVER.WARMUP_EPOCHS", 1.0),
    "WARMUP": ("SOLVER.WARMUP_EPOCHS", 0.5, "SOLVER.WARMUP_FACTOR", 0.2),
    "WARMUP_whole_run": ("SOLVER.WARMUP_EPOCHS", 1.0, "SOLVER.WARMUP_FACTOR", 0.2),
    "WARMUP_then_cosine": ("SOLVER.WARMUP_EPOCHS", 0.5, "SOLVER.LR_SCHEDULER", "cosine"),
    "MAX_ITER": ("SOLVER.MAX_EPOCHS", 2, "SOLVER.MAX_ITER", 4, "SOLVER.LR_SCHEDULER", "cosine"),
    "PIXEL_MEAN_STD": ("MODEL.PIXEL_MEAN", "[100.0, 110.0, 120.0]",
                       "MODEL.PIXEL_STD", "[30.0, 40.0, 50.0]"),
    "BGR": ("INPUT.FORMAT", "BGR"),
    "TRAIN_SIZE": ("INPUT.TRAIN_SIZE", 12),
    "TEST_RESIZE_CROP": ("INPUT.TEST_RESIZE", 18, "INPUT.TEST_CROP", 12),
    "SEED": ("SEED", 1),
    "random_resized_flip": ("INPUT.TRAIN_CROP", "random_resized", "INPUT.RANDOM_FLIP", True),
    "SCALE_RATIO": ("INPUT.TRAIN_CROP", "random_resized", "INPUT.SCALE", "(0.2, 0.6)",
                    "INPUT.RATIO", "(0.5, 2.0)"),
    "pad_crop_jitter": ("INPUT.TRAIN_CROP", "pad_crop", "INPUT.PAD", 2, "INPUT.COLOR_JITTER", 0.4),
    # the reference loads in-process: 2 workers must change nothing, augmentations included
    "NUM_WORKERS": ("DATA.NUM_WORKERS", 2, "INPUT.TRAIN_CROP", "random_resized",
                    "INPUT.RANDOM_FLIP", True),
    # evaluations in between (loader workers, eval mode) must not change the training
    "EVAL_PERIOD": ("SOLVER.MAX_EPOCHS", 2, "TEST.EVAL_PERIOD", 1, "DATA.NUM_WORKERS", 1),
}
NEUTRAL = ("NUM_WORKERS", "EVAL_PERIOD")  # keys that must not change the result


def _differs(a, b):
    return (a["lr"] != pytest.approx(b["lr"]) or len(a["loss"]) != len(b["loss"])
            or max_diff(a["final"], b["final"]) > 1e-4)


@pytest.mark.parametrize("case", list(CASES))
def test_key_trains_as_the_reference(root, tmp_path, monkeypatch, case):
    opts = base_opts(root, tmp_path) + [str(v) for v in CASES[case]]
    ours = run_ours(opts, monkeypatch)
    cfg = cfg_of(opts)
    ref = run_reference(cfg, ours["init"])
    assert ours["lr"] == pytest.approx(ref["lr"], rel=1e-12)
    assert ours["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert_same_weights(ours["final"], ref["final"])
    assert_logged(tmp_path, ref)
    evaluation = ref_evaluate(cfg, ours["final"])
    assert_same_evaluation(ours["eval"], evaluation)
    if case in NEUTRAL:
        return
    # the case proves something: without the key, the reference trains or evaluates otherwise
    base_cfg = cfg_of(base_opts(root, tmp_path))
    base = run_reference(base_cfg, ours["init"])
    assert _differs(ref, base) or ref_evaluate(base_cfg, ours["final"])["loss"] != \
        pytest.approx(evaluation["loss"], rel=1e-4)
    if case == "WEIGHT_DECAY":  # on norms and biases too: decaying only weights differs
        assert max_diff(run_reference(cfg, ours["init"], decay_all=False)["final"],
                        ref["final"]) > 1e-4


def write_cifar10(root, per_batch=4, test=10, seed=0):
    """ROOT/cifar-10-batches-py as the python release lays it out: data_batch_1..5 and
    test_batch ({"data": uint8 (N, 3072), the R, G, B planes; "labels": N ints}), batches.meta
    (pickled by Python 3: str keys, which both readers take)."""
    rng, folder = np.random.default_rng(seed), Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, count in zip(names, [per_batch] * 5 + [test]):
        batch = {"batch_label": name, "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, count)],
                 "filenames": [f"{name}_{i}.png" for i in range(count)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"k{i}" for i in range(10)], "num_vis": 3072,
                     "num_cases_per_batch": per_batch}, f)
    return Path(root)


@pytest.mark.parametrize("arch", ["imagenet", "cifar"])
def test_cifar10_trains_as_the_reference(tmp_path, monkeypatch, arch):
    """DATA.NAME cifar10 (the python release, generated) against torchvision's CIFAR10 reader;
    "cifar": ResNeXt-29 with the CIFAR augmentation (pad 4, random 32 crop, flip)."""
    model = {"imagenet": ("INPUT.TEST_RESIZE", 32, "INPUT.TEST_CROP", 28),
             "cifar": ("MODEL.ARCH", "cifar", "MODEL.RESNEXT.TEMPLATE", "X29_2x4d",
                       "INPUT.TRAIN_CROP", "pad_crop", "INPUT.TRAIN_SIZE", 32,
                       "INPUT.RANDOM_FLIP", True, "INPUT.TEST_RESIZE", 32, "INPUT.TEST_CROP", 32)}
    opts = base_opts(write_cifar10(tmp_path / "cifar"), tmp_path / "out") + [str(v) for v in (
        "DATA.NAME", "cifar10", "SOLVER.IMS_PER_BATCH", 4, "SOLVER.REFERENCE_BATCH", 4,
        *model[arch])]
    ours = run_ours(opts, monkeypatch)
    cfg = cfg_of(opts)
    ref = run_reference(cfg, ours["init"])
    assert len(ref["lr"]) == 5 and ours["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert_same_weights(ours["final"], ref["final"])
    assert_same_evaluation(ours["eval"], ref_evaluate(cfg, ours["final"]))


def test_resume_mid_epoch_trains_as_the_uninterrupted_reference(root, tmp_path, monkeypatch):
    """Killed at iteration 4 of 12 (checkpoint after 2, random crops and flips, warmup and
    cosine, a loader worker), resumed: the reference's 12 iterations, weights and lr."""
    opts = base_opts(root, tmp_path) + [str(v) for v in (
        "SOLVER.MAX_EPOCHS", 2, "SOLVER.CHECKPOINT_PERIOD", 3, "INPUT.TRAIN_CROP",
        "random_resized", "INPUT.RANDOM_FLIP", True, "SOLVER.LR_SCHEDULER", "cosine",
        "SOLVER.WARMUP_EPOCHS", 0.5, "DATA.NUM_WORKERS", 1)]
    step, start = ClsTrainer.run_step, {}

    def killed(self):
        start.setdefault("init", {k: v.clone() for k, v in self.net.state_dict().items()})
        if self.iter == 4:
            raise KeyboardInterrupt
        return step(self)
    with monkeypatch.context() as m:
        m.setattr(ClsTrainer, "run_step", killed)
        with pytest.raises(KeyboardInterrupt):
            main(cls_args(opts))
    resumed = run_ours(opts, monkeypatch, resume=True)
    ref = run_reference(cfg_of(opts), start["init"])
    assert len(ref["lr"]) == 12 and resumed["lr"] == pytest.approx(ref["lr"][3:], rel=1e-12)
    assert resumed["loss"] == pytest.approx(ref["loss"][3:], rel=1e-5)
    assert_same_weights(resumed["final"], ref["final"])
    assert_logged(tmp_path, ref)  # its medians go on from the checkpoint's last 20 iterations


@pytest.mark.parametrize("zero_init", [True, False])
def test_zero_init_residual_zeroes_what_torchvision_zeroes(root, tmp_path, zero_init):
    """MODEL.RESNEXT.ZERO_INIT_RESIDUAL: the norm before each block's add starts at 0, every
    other at 1, as torchvision's resnext50_32x4d(zero_init_residual=...) (same 16 blocks)."""
    import torchvision

    cfg = cfg_of(base_opts(root, tmp_path) + ["MODEL.RESNEXT.ZERO_INIT_RESIDUAL", str(zero_init)])
    ours = {k: v for k, v in build_cls_model(cfg, 6).state_dict().items()
            if k.endswith("norm.weight")}
    theirs = {k: v for k, v in torchvision.models.resnext50_32x4d(
        zero_init_residual=zero_init).state_dict().items()
        if re.search(r"(bn\d|downsample\.1)\.weight$", k)}

    def zeroed(norms, last):  # [(stage, block)] whose last norm is 0; all others are at 1
        assert all(bool((v == 1).all()) for v in norms.values() if not v.eq(0).all())
        return sorted(tuple(int(n) for n in re.findall(r"\d+", k)[:2]) for k, v in norms.items()
                      if v.eq(0).all() and last in k)
    assert len(ours) == len(theirs) == 53
    ours_zero = [(stage - 1, block) for stage, block in zeroed(ours, "conv3.")]  # res2: layer1
    assert ours_zero == zeroed(theirs, "bn3") and len(ours_zero) == (16 if zero_init else 0)

def test_seed_sets_the_initialization(root, tmp_path, monkeypatch):
    """SEED: "data order and init" (the order is test_key_trains_as_the_reference[SEED])."""
    inits = [run_ours(base_opts(root, tmp_path / f"run{k}") + ["SEED", str(seed),
                                                               "SOLVER.MAX_ITER", "1"],
                      monkeypatch)["init"] for k, seed in enumerate((0, 1, 0))]
    assert max_diff(inits[0], inits[2]) == 0 and max_diff(inits[0], inits[1]) > 1e-3


def test_random_flips_are_fair_and_differ_between_epochs(root, tmp_path):
    """INPUT.RANDOM_FLIP over 400 places of the training stream: about half flipped (within
    4 sigma of a fair coin), and one image is not flipped alike in all its epochs."""
    from resnext_det.classification.transforms import build_train_transform
    from resnext_det.data.classification import build_dataset
    from resnext_det.engine.resume import PlaceSeededDataset, ResumableSampler

    cfg = cfg_of(base_opts(root, tmp_path) + ["INPUT.RANDOM_FLIP", "True"])
    plain = ref_dataset(cfg_of(base_opts(root, tmp_path)), True)
    dataset = build_dataset(cfg, True, build_train_transform(cfg))
    stream = PlaceSeededDataset(dataset, ResumableSampler(len(dataset), 0))
    index = 1  # a 20x16 picture, not mirror-symmetric
    image = plain[index][0]
    flips = []
    for place in range(400):
        x = stream[place, index][0]
        assert torch.equal(x, image) or torch.equal(x, image.flip(-1))
        flips.append(not torch.equal(x, image))
    assert abs(sum(flips) - 200) <= 4 * math.sqrt(400 * 0.25)


def test_max_iter_past_the_epochs_is_an_error(root, tmp_path):
    """SOLVER.MAX_ITER 10 with 6 iterations in MAX_EPOCHS 1 trained 6 without a word."""
    from resnext_det.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"SOLVER.MAX_ITER=10 is not valid: expected 0 or at "
                       r"most 6, the iterations of SOLVER.MAX_EPOCHS=1 \(18 images / 3 per "
                       r"batch\).*raise SOLVER.MAX_EPOCHS"):
        main(cls_args(base_opts(root, tmp_path) + ["SOLVER.MAX_ITER", "10"]))


def test_warmup_past_the_epochs_is_an_error(root, tmp_path):
    """SOLVER.WARMUP_EPOCHS 2 of MAX_EPOCHS 1 ramped over the 1 epoch, twice as steep."""
    from resnext_det.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"SOLVER.WARMUP_EPOCHS=2.0 is not valid: expected at "
                       r"most SOLVER.MAX_EPOCHS=1"):
        main(cls_args(base_opts(root, tmp_path) + ["SOLVER.WARMUP_EPOCHS", "2.0"]))


def test_model_final_pkl_gives_a_detector_the_classifier_trunk(root, tmp_path, monkeypatch):
    """model_final.pkl of a BGR run with its own mean / std, as a detector's MODEL.WEIGHTS
    (detectron2's build_model, our checkpointer, CONFIG_FROM_WEIGHTS): the detector's own
    preprocessing and backbone on a picture = the classifier's input and trunk, res2..res5."""
    from detectron2.modeling import build_model

    from resnext_det.engine import build_checkpointer, setup_cfg
    from tests.helpers import load_tool

    opts = base_opts(root, tmp_path / "cls") + [
        "INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", "[100.0, 110.0, 120.0]",
        "MODEL.PIXEL_STD", "[30.0, 40.0, 50.0]", "MODEL.RESNEXT.ZERO_INIT_RESIDUAL", "False"]
    classifier = build_cls_model(cfg_of(opts), len(CLASSES)).eval()
    classifier.load_state_dict(run_ours(opts, monkeypatch)["final"])
    demo = Path(__file__).resolve().parents[2] / "configs/demo/faster_rcnn_X50_digits.yaml"
    det_cfg = setup_cfg(load_tool("demo").demo_args(str(demo), [
        "MODEL.RESNEXT.TEMPLATE", "X50_2x2d", "MODEL.RESNETS.STEM_OUT_CHANNELS", "8",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "16", "MODEL.FPN.OUT_CHANNELS", "16",
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(tmp_path / "cls" / "model_final.pkl"),
        "OUTPUT_DIR", str(tmp_path / "det"), "MODEL.RESNEXT.CONFIG_FROM_WEIGHTS", "True"]),
        task="train")
    assert det_cfg.INPUT.FORMAT == "BGR"
    detector = build_model(det_cfg).eval()
    build_checkpointer(det_cfg, detector).load(det_cfg.MODEL.WEIGHTS)

    rgb = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        x, trunk = classifier.stem(ref_normalize(cfg_of(opts))(rgb.permute(2, 0, 1))[None]), {}
        for name, stage in zip(classifier.stage_names, classifier.stages):
            x = trunk[name] = stage(x)
        bgr = rgb.flip(-1).permute(2, 0, 1)  # a detector's input in its INPUT.FORMAT
        features = detector.backbone.bottom_up(detector.preprocess_image([{"image": bgr}]).tensor)
    assert list(trunk) == ["res2", "res3", "res4", "res5"]
    for name, value in trunk.items():
        torch.testing.assert_close(features[name], value, rtol=1e-5, atol=1e-5, msg=name)
