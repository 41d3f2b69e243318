"""Config keys that resnext_det adds to detectron2's.

Everything detectron2 already names is read from its own keys (MODEL.RESNETS.DEPTH,
NUM_GROUPS, WIDTH_PER_GROUP, STRIDE_IN_1X1, NORM, RES5_DILATION, OUT_FEATURES,
STEM_OUT_CHANNELS, RES2_OUT_CHANNELS; MODEL.BACKBONE.FREEZE_AT). Only what is new lives
under MODEL.RESNEXT.
"""
from detectron2.config import CfgNode as CN


def resnext_defaults():
    """The MODEL.RESNEXT node with its default values, each key commented."""
    node = CN()
    # Named template "R50", "X50_32x4d", "X101_64x4d", ... = (depth, cardinality C,
    # bottleneck width d of res2). "" -> use MODEL.RESNETS.DEPTH / NUM_GROUPS /
    # WIDTH_PER_GROUP. A template that disagrees with a RESNETS key the user changed
    # from detectron2's default is an error.
    node.TEMPLATE = ""
    # The paper's Figure 3 forms of the aggregated block, all computing the same function:
    # "a" -> C branches of 1x1(d), 3x3(d), 1x1, summed (slow; for teaching and checks);
    # "b" -> C branches of 1x1(d), 3x3(d), concatenated, one 1x1 (slow; likewise);
    # "c" -> 1x1, grouped 3x3 (groups=C), 1x1: the fast form, and detectron2's layout.
    node.BLOCK_FORM = "c"
    # True -> the last norm of each residual block starts with scale 0, so every block
    # starts as the identity (Goyal et al. 2017, Sec 5.1); for training from scratch.
    # Needs a trainable norm (BN, SyncBN, GN).
    node.ZERO_INIT_RESIDUAL = False
    # True -> before the model is built, tools/train_net.py sets the template, stride
    # placement, INPUT.FORMAT and PIXEL_MEAN/STD from the metadata that travels with
    # MODEL.WEIGHTS (converting a foreign file first), logging each change. False -> the
    # config is kept and each disagreement with the weights is logged as a warning.
    node.CONFIG_FROM_WEIGHTS = False
    # Evaluation in tools/train_net.py (and the EvalHook during training) runs on a copy
    # made by resnext_det.modeling.optimize_for_inference:
    # "" -> the model as trained; "fold" -> frozen norms folded into the convolutions;
    # "fold+nhwc" -> folded and channels_last (fastest on CPUs from batch ~2 and on GPUs).
    # Both pool the ROIs with the sparse ROIAlign on CPUs (ROI_ALIGN "sparse", below;
    # at 800x1216 the FPN X50 copy 1.17x faster with it, at the digits' 128 px 0.89x:
    # benchmarks/roi_align.py --model). Outputs are equal up to float rounding
    # (tests/modeling/test_inference.py).
    node.FAST_INFERENCE = "fold+nhwc"
    # The number type of evaluation and prediction (tools/train_net.py, the EvalHook,
    # tools/predict.py; resnext_det.engine.precision): "float32"; "bfloat16" -> the
    # forward under torch.autocast, outputs (boxes, scores, masks) returned in float32;
    # "float16" -> likewise, CUDA only. Contract: box AP within 0.3 of float32's
    # (benchmarks/ap_contract.py). Fast only with native support (GPUs; CPUs with AVX-512
    # BF16 / AMX): emulated elsewhere. Exported files stay float32.
    node.INFERENCE_DTYPE = "float32"
    # Training (resnext_det.engine.Trainer) computes the same function and gradients, faster:
    # "" -> as detectron2; "fold" -> each FrozenBN computed inside its convolution (weight
    # W * s, the shift as bias, from W each step: resnext_det.modeling.train_fold);
    # "fold+nhwc" -> folded and channels_last; "auto" -> the one measured faster on
    # MODEL.DEVICE (train_fold.auto_training_mode, logged). Parameter names and checkpoints
    # are detectron2's in every mode. NHWC pays on AVX-512 CPUs only: on AVX2 oneDNN's NHWC
    # weight gradient of a 3x3 convolution is several times slower than its NCHW one (the
    # FPN / RPN convolutions at stride 4), so "auto" picks "fold+nhwc" with AVX-512 and
    # "fold" elsewhere (CUDA not yet timed). The speed-ups, per CPU: README, MODEL.RESNEXT
    # table (benchmarks/bench.py --only train).
    node.FAST_TRAINING = "auto"
    # The ROIAlign of the training model's ROI heads' poolers (the FAST_INFERENCE copy
    # pools "sparse" on CPUs whatever this says; resnext_det.modeling.roi_align.use_roi_align):
    # "torchvision" -> detectron2's ROIPooler (torchvision's kernel per FPN level);
    # "sparse" -> on the CPU, all levels as one sparse matrix product and its transpose for
    # the gradient: same values and gradients (float rounding), faster forward + backward
    # (README, MODEL.RESNEXT table; benchmarks/roi_align.py).
    node.ROI_ALIGN = "torchvision"
    # Loading MODEL.WEIGHTS. False -> every ResNeXt key the model has must come from the
    # file with its shape, and every ResNeXt key of the file must fit the model; anything
    # else is an error naming the keys. True -> such keys are skipped and listed in the log
    # (detection heads, FPN and RPN may always differ: they are logged, as detectron2 does).
    node.WEIGHTS_ALLOW_PARTIAL = False
    # False -> pickled weights (.pkl, legacy .pth) are read with a restricted unpickler that
    # admits only what weights hold (dicts, lists, numbers, strings, numpy arrays), and
    # torch files with torch.load(weights_only=True): a file that needs more is an error.
    # True -> such files are unpickled in full, which runs any code they carry; only for
    # files you trust (a warning is logged).
    node.WEIGHTS_TRUST_PICKLE = False
    return node


def detectron2_node_defaults(cfg):
    """Keys resnext_det adds to detectron2's DATALOADER and TEST nodes."""
    # Annotations whose box has no positive width / height, or lies wholly outside its
    # image: "skip" -> leave them out, logging how many and the first few; "error" -> stop
    # before training, naming them. Boxes partly outside are clipped (detectron2's way).
    cfg.DATALOADER.ON_BAD_BOX = "skip"
    # A training image that cannot be decoded (truncated, not an image): "error" -> stop,
    # naming the file; "skip" -> log its path and train on another image.
    cfg.DATALOADER.ON_BAD_IMAGE = "error"
    # The COCOeval that scores detections: "faster-coco-eval" -> a C++ COCOeval (PyPI
    # faster-coco-eval; pycocotools' numbers within 1e-4, ~10x faster on 100k detections);
    # "pycocotools" -> pycocotools' Python COCOeval, as detectron2 runs it without its _C.
    cfg.TEST.COCO_EVAL_BACKEND = "faster-coco-eval"
    # Images per batch of the evaluation loader (detectron2's is 1). Images of a batch are
    # padded to the largest, so detections can differ slightly from batch 1 when sizes
    # differ; the digits demo (all 128x128) evaluates faster with 8, same AP (README).
    cfg.TEST.IMS_PER_BATCH = 1
    # Keys detectron2's train loader reads for two of its samplers and its get_cfg() lacks
    # (d2go defines them, with these defaults): a YAML file could not set them, and the
    # loader stopped with an AttributeError. RandomSubsetTrainingSampler: the fraction of
    # the training images it samples from, in (0, 1]. WeightedTrainingSampler and
    # WeightedCategoryTrainingSampler: [[dataset name, repeat factor], ...] for every
    # dataset of DATASETS.TRAIN.
    if "RANDOM_SUBSET_RATIO" not in cfg.DATALOADER:
        cfg.DATALOADER.RANDOM_SUBSET_RATIO = 1.0
    if "DATASETS" in cfg and "TRAIN_REPEAT_FACTOR" not in cfg.DATASETS:
        cfg.DATASETS.TRAIN_REPEAT_FACTOR = []


def add_resnext_config(cfg):
    """Add MODEL.RESNEXT, DATALOADER.ON_BAD_BOX / ON_BAD_IMAGE, TEST.COCO_EVAL_BACKEND,
    TEST.IMS_PER_BATCH, and detectron2's sampler keys its get_cfg() lacks
    (DATALOADER.RANDOM_SUBSET_RATIO, DATASETS.TRAIN_REPEAT_FACTOR).

    Changes no existing key; idempotent.

    Args:
        cfg (CfgNode): a detectron2 config (detectron2.config.get_cfg()).
    Returns:
        CfgNode: the same `cfg`, frozen again if it was frozen.
    """
    if "RESNEXT" not in cfg.MODEL:
        was_frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.MODEL.RESNEXT = resnext_defaults()
        if "DATALOADER" in cfg and "TEST" in cfg:
            detectron2_node_defaults(cfg)
        if was_frozen:
            cfg.freeze()
    return cfg
