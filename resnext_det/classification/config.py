"""The classification config: detectron2's CfgNode, the paper's ImageNet recipe by default
but for MODEL.RESNEXT.ZERO_INIT_RESIDUAL (True here; the paper's configs set False).

The model is described with the detection keys (MODEL.RESNETS.*, MODEL.RESNEXT.*,
MODEL.PIXEL_MEAN/STD, INPUT.FORMAT), so the network a pretraining config builds is the
backbone the same keys build in a detection config, and its checkpoint starts that
detector. The paper's recipe (Sec 4): SGD, momentum 0.9, weight decay 1e-4, lr 0.1 for
256 images per iteration, divided by 10 three times; 224x224 random-resized crops with
flips; test at 256 -> center 224; top-1 and top-5 error.
"""
from detectron2.config import CfgNode as CN

from ..config.defaults import resnext_defaults


def _model():
    model = CN()
    # "imagenet" -> stem (7x7/2 conv, 3x3/2 max pool) and res2..res5 of TEMPLATE, exactly
    # the detection backbone; "cifar" -> ResNeXt-29 (3x3 stem, 3 stages of 3 blocks),
    # MODEL.RESNEXT.TEMPLATE "X29_<C>x<d>d".
    model.ARCH = "imagenet"
    model.NUM_CLASSES = 0  # classifier outputs; 0 -> the number of classes of the data
    model.DEVICE = "cuda"  # "cuda" or "cpu"; "cuda" without CUDA falls back to "cpu" (noted)
    # Weights to start from: "" -> random init; a checkpoint of ours or any file that
    # resnext_det.checkpoint.convert_weights reads (torchvision, timm, pycls, ...).
    model.WEIGHTS = ""
    # detectron2's convention: 0-255 pixels in INPUT.FORMAT order, x' = (x - mean) / std.
    # torchvision's statistics times 255, as configs/Base-ResNeXt.yaml: features transfer.
    model.PIXEL_MEAN = [123.675, 116.280, 103.530]
    model.PIXEL_STD = [58.395, 57.120, 57.375]
    r = model.RESNETS = CN()  # detectron2's keys, as in detection; read when TEMPLATE is ""
    r.DEPTH = 50  # 50, 101, 152 ("imagenet"); ignored for "cifar" (always 29)
    r.NUM_GROUPS = 1  # cardinality C: 1 -> ResNet; > 1 -> ResNeXt
    r.WIDTH_PER_GROUP = 64  # bottleneck width d of the first stage
    # True -> stride in the first 1x1 (MSRA); False -> in the 3x3 (fb.resnet.torch, the
    # paper, torchvision). Must match the detection config that loads the weights.
    r.STRIDE_IN_1X1 = False
    # "BN" (per process), "SyncBN" (torch's, CUDA only), "naiveSyncBN" (detectron2's,
    # also on CPUs with gloo), "GN" (32 groups). "FrozenBN" cannot train from scratch.
    r.NORM = "BN"
    r.STEM_OUT_CHANNELS = 64  # stem conv outputs (64 in ResNet/ResNeXt)
    r.RES2_OUT_CHANNELS = 256  # res2 outputs, doubled per stage ("imagenet" only)
    r.DEFORM_ON_PER_STAGE = [False, False, False, False]  # deformable 3x3 per stage res2..res5
    r.DEFORM_MODULATED = False  # True: v2 (a learned mask per sample)
    r.DEFORM_NUM_GROUPS = 1  # offset groups of the deformable 3x3
    model.RESNEXT = resnext_defaults()
    # Goyal et al. 2017: each block starts as the identity; part of our default recipe, not
    # the paper's (configs/cls/Base-ImageNet.yaml sets False: every norm starts at 1).
    model.RESNEXT.ZERO_INIT_RESIDUAL = True
    return model


def _data():
    data = CN()
    # "folder" -> ROOT/<split>/<class>/<image>, classes = sorted folder names (ImageNet's
    # layout); "cifar10" / "cifar100" -> the python release under ROOT (cifar-10-batches-py/
    # or cifar-100-python/, or ROOT is that folder).
    data.NAME = "folder"
    data.ROOT = "datasets/imagenet"
    data.TRAIN_SPLIT = "train"  # folder under ROOT (folder); CIFAR: always its train set
    data.VAL_SPLIT = "val"  # folder under ROOT (folder); CIFAR: always its test set
    # Image file endings the folder dataset reads (case-insensitive); others are ignored.
    data.EXTENSIONS = [".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp"]
    # A corrupt or truncated image: "skip" -> log its path once; training uses the next
    # image, validation leaves it out of the metrics; "error" -> stop naming its path.
    data.ON_BAD_IMAGE = "skip"
    data.NUM_WORKERS = 4  # data loader processes per training process (0: in-process)
    return data


def _input():
    inp = CN()
    inp.FORMAT = "RGB"  # channel order fed to the model: "RGB" or "BGR"
    # Training crop: "random_resized" -> Inception-style crop of SCALE area and RATIO
    # aspect, resized to TRAIN_SIZE (ImageNet); "pad_crop" -> pad by PAD, random
    # TRAIN_SIZE crop (CIFAR); "none" -> resize to TRAIN_SIZE.
    inp.TRAIN_CROP = "random_resized"
    inp.TRAIN_SIZE = 224
    inp.SCALE = (0.08, 1.0)  # random_resized: fraction of the image area kept
    inp.RATIO = (3.0 / 4.0, 4.0 / 3.0)  # random_resized: aspect ratio range
    inp.PAD = 4  # pad_crop: zero padding on each side, px
    inp.RANDOM_FLIP = True  # horizontal flip with p = 0.5 (False for digits and text)
    inp.COLOR_JITTER = 0.0  # brightness/contrast/saturation strength; 0 -> none (fb: 0.4)
    inp.TEST_RESIZE = 256  # test: shorter side resized to this, then ...
    inp.TEST_CROP = 224  # ... a center crop of this size (the paper's 224 single crop)
    return inp


def _solver():
    s = CN()
    s.IMS_PER_BATCH = 256  # images per iteration over all processes
    # lr = BASE_LR * IMS_PER_BATCH / REFERENCE_BATCH (linear scaling, Goyal et al.):
    # the paper's 0.1 per 256 images on ImageNet; 0.1 per 128 on CIFAR.
    s.BASE_LR = 0.1
    s.REFERENCE_BATCH = 256
    s.MOMENTUM = 0.9
    s.NESTEROV = True  # the authors' train.lua: optim.sgd with nesterov = true, dampening 0
    s.WEIGHT_DECAY = 1e-4  # on every weight, norms included (fb.resnet.torch)
    # Epochs of training data, round(epochs * images / IMS_PER_BATCH) iterations (ImageNet:
    # 1281167 / 256 = 5004.6 per epoch). The paper divides lr by 10 three times, at STEPS.
    # The lr of iteration i is the schedule's at i * IMS_PER_BATCH / images epochs done.
    s.MAX_EPOCHS = 100
    s.MAX_ITER = 0  # 0 -> MAX_EPOCHS; N -> stop after N <= MAX_EPOCHS' iterations (same schedule)
    s.LR_SCHEDULER = "step"  # "step": lr * GAMMA at each of STEPS; "cosine": to 0 at the end
    s.STEPS = (30, 60, 90)  # epochs ("step"); steps at or past MAX_EPOCHS are dropped
    s.GAMMA = 0.1
    s.WARMUP_EPOCHS = 0.0  # linear warmup from WARMUP_FACTOR * lr (Goyal: 5); <= MAX_EPOCHS
    s.WARMUP_FACTOR = 0.1
    s.CHECKPOINT_PERIOD = 5000  # resumable checkpoint every N iterations; 0 -> every epoch
    # Periodic checkpoints of this run kept on disk (older ones are deleted after a newer
    # one is complete); 0 -> keep all. model_final.* is always kept.
    s.MAX_TO_KEEP = 5
    s.AMP = CN({"ENABLED": False})  # mixed precision: float16 on CUDA, bfloat16 on CPUs (amp.py)
    return s


def get_cls_cfg():
    """A fresh classification config: the paper's ImageNet recipe, zero-initialized residuals."""
    cfg = CN()
    cfg.MODEL, cfg.DATA, cfg.INPUT, cfg.SOLVER = _model(), _data(), _input(), _solver()
    cfg.TEST = CN()
    cfg.TEST.IMS_PER_BATCH = 256  # images per evaluation batch over all processes
    cfg.TEST.EVAL_PERIOD = 1  # evaluate every this many epochs (and at the end); 0: end only
    cfg.LOG_PERIOD = 20  # log progress (loss, lr, images/s, ETA) and metrics every N iterations
    cfg.SEED = 0  # data order and init; each process seeds SEED + rank. < 0 -> random
    cfg.CUDNN_BENCHMARK = True  # fixed input sizes: let cuDNN pick its fastest kernels
    cfg.OUTPUT_DIR = "output/cls"
    cfg.VERSION = 2  # detectron2's config version; its merge_from_file checks it
    return cfg
