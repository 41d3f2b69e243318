"""The public ImageNet ResNet / ResNeXt weight files, with what each one expects, as data.

timm's habit (timm/models/resnet.py `default_cfgs`): every pretrained file carries its
input convention, licence and origin. Each `WeightsEntry` below says, for one file as
its publisher names it, which converter source reads it, the template the shapes give,
the channel order, pixel mean / std (detectron2's 0-255 convention), where the stride
sits, the licence and the published ImageNet-1k top-1. Every value comes from the
publisher's own code or docs, cited in the comment above its group; a value we could not
confirm is None and the entry's notes say so. Nothing here downloads: `url` is for
reference.

Files are found by base name (`lookup`). torchvision's, timm's and (by the same torch
model_zoo convention) Cadene's releases are named `<name>-<hex>.pth`, where <hex> is the
start of the file's sha256 (torch.hub's HASH_REGEX / check_hash); `verify` checks it.
Detectron and detectron2 both publish an `X-101-32x8d.pkl` (and MSRA `R-50.pkl`,
`R-101.pkl`) with different contents: Detectron's fold BN into an affine map and its
configs use std 1; detectron2 re-converted them without fusing BN. The file's layout
(the caffe2 source's `variant`), not its name, tells them apart.
"""
import os
from dataclasses import dataclass
from typing import Optional, Tuple

from torch.hub import HASH_REGEX  # "bfd8deac" of resnet18-bfd8deac.pth: a sha256 prefix

from ..modeling.templates import parse_template
from .errors import ConversionError
from .sources.base import CAFFE2_BGR, IMAGENET_BGR, IMAGENET_RGB

METADATA_KEYS = ("input_format", "pixel_mean", "pixel_std", "stride_in_1x1")


@dataclass(frozen=True)
class WeightsEntry:
    """One published weights file and the conventions its weights were trained with.

    Attributes:
        name: "<publisher>/<model>[.<tag>]", e.g. "torchvision/resnext50_32x4d.IMAGENET1K_V1".
        publisher: who publishes the file (a repository or site).
        file_name: the file's name as published (what `lookup` matches).
        hash_prefix: leading hex digits of the file's sha256 where the name carries them.
        source_format: the resnext_det.checkpoint.sources name that converts it.
        variant: layout variant within the format ("detectron" / "detectron2" for Caffe2).
        template: "R50", "X101_32x8d", ... (what the tensor shapes give).
        input_format, pixel_mean, pixel_std: INPUT.FORMAT, MODEL.PIXEL_MEAN / PIXEL_STD.
        stride_in_1x1: MODEL.RESNETS.STRIDE_IN_1X1 the blocks need.
        license: the licence the publisher states for the weights (None: none stated).
        top1: published ImageNet-1k top-1 %, one 224 crop unless the notes say otherwise.
        url: where the publisher serves it (reference only).
        notes: sources of the facts, caveats, unconfirmed values.
    """

    name: str
    publisher: str
    file_name: str
    hash_prefix: Optional[str]
    source_format: str
    variant: Optional[str]
    template: str
    input_format: Optional[str]
    pixel_mean: Optional[Tuple[float, float, float]]
    pixel_std: Optional[Tuple[float, float, float]]
    stride_in_1x1: Optional[bool]
    license: Optional[str]
    top1: Optional[float]
    url: str
    notes: str = ""


def _hub_hash(file_name):
    match = HASH_REGEX.search(file_name)
    return match.group(1) if match else None


def _entry(name, publisher, url, template, top1, convention, *, source_format, stride_in_1x1,
           license, notes, variant=None, hashed=False):
    """An entry for the file at `url`; `convention` is one of the pixel dicts of sources.base."""
    file_name = url.rsplit("/", 1)[1]
    return WeightsEntry(
        name=name, publisher=publisher, file_name=file_name,
        hash_prefix=_hub_hash(file_name) if hashed else None, source_format=source_format,
        variant=variant, template=template, input_format=convention["input_format"],
        pixel_mean=tuple(convention["pixel_mean"]), pixel_std=tuple(convention["pixel_std"]),
        stride_in_1x1=stride_in_1x1, license=license, top1=top1, url=url, notes=notes)


# pytorch/vision torchvision/models/resnet.py: `*_Weights` url and meta["_metrics"]
# ["ImageNet-1K"]["acc@1"]; Bottleneck: "places the stride for downsampling at 3x3
# convolution (self.conv2)"; transforms/_presets.py ImageClassification: RGB in [0, 1],
# mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225). README "Pre-trained Model
# License": the weights may carry terms derived from their training data; no licence is
# stated for them (the code is BSD-3-Clause).
_TV = "https://download.pytorch.org/models/"
_TV_NOTES = ("torchvision/models/resnet.py; no weights licence stated (README 'Pre-trained "
             "Model License'); evaluated at resize {} -> center crop 224")


def _torchvision(arch, version, file_name, template, top1):
    resize = 256 if version == "V1" and arch != "resnext101_64x4d" else 232
    recipe = "" if resize == 256 else "; TorchVision's new training recipe"
    return _entry(f"torchvision/{arch}.IMAGENET1K_{version}", "pytorch/vision", _TV + file_name,
                  template, top1, IMAGENET_RGB, source_format="torchvision",
                  stride_in_1x1=False, license=None, hashed=True,
                  notes=_TV_NOTES.format(resize) + recipe)


TORCHVISION = (
    _torchvision("resnet50", "V1", "resnet50-0676ba61.pth", "R50", 76.130),
    _torchvision("resnet50", "V2", "resnet50-11ad3fa6.pth", "R50", 80.858),
    _torchvision("resnet101", "V1", "resnet101-63fe2227.pth", "R101", 77.374),
    _torchvision("resnet101", "V2", "resnet101-cd907fc2.pth", "R101", 81.886),
    _torchvision("resnet152", "V1", "resnet152-394f9c45.pth", "R152", 78.312),
    _torchvision("resnet152", "V2", "resnet152-f82ba261.pth", "R152", 82.284),
    _torchvision("resnext50_32x4d", "V1", "resnext50_32x4d-7cdf4587.pth", "X50_32x4d", 77.618),
    _torchvision("resnext50_32x4d", "V2", "resnext50_32x4d-1a0047aa.pth", "X50_32x4d", 81.198),
    _torchvision("resnext101_32x8d", "V1", "resnext101_32x8d-8ba56ff5.pth", "X101_32x8d", 79.312),
    _torchvision("resnext101_32x8d", "V2", "resnext101_32x8d-110c445d.pth", "X101_32x8d", 82.834),
    # torchvision's only resnext101_64x4d weights (IMAGENET1K_V1), trained with the new recipe
    _torchvision("resnext101_64x4d", "V1", "resnext101_64x4d-173b62eb.pth", "X101_64x4d",
                 83.246),
)

# huggingface/pytorch-image-models timm/models/resnet.py default_cfgs (url; _cfg:
# IMAGENET_DEFAULT_MEAN/STD, 'license': 'apache-2.0'); Bottleneck puts the stride in
# conv2 (the 3x3); clean_checkpoint.py names files '<name>-<sha256[:8]>.pth'. top-1 from
# results/results-imagenet.csv, the row at img_size 224 (bicubic; crop_pct in the notes).
_HF = "https://github.com/huggingface/pytorch-image-models/releases/download/"
_RW = "https://github.com/rwightman/pytorch-image-models/releases/download/"


def _timm(name, url, template, top1, crop_pct, extra=""):
    notes = f"timm results-imagenet.csv at 224, crop_pct {crop_pct}, bicubic{extra}"
    return _entry(f"timm/{name}", "huggingface/pytorch-image-models", url, template, top1,
                  IMAGENET_RGB, source_format="torchvision", stride_in_1x1=False,
                  license="apache-2.0", hashed=True, notes=notes)


TIMM = (
    _timm("resnet50.a1_in1k", _RW + "v0.1-rsb-weights/resnet50_a1_0-14fe96d1.pth", "R50",
          80.382, 0.95),
    _timm("resnet50.a1h_in1k", _HF + "v0.1-rsb-weights/resnet50_a1h2_176-001a1197.pth", "R50",
          80.654, 1.0, "; trained at 176 px"),
    _timm("resnet50.a2_in1k", _HF + "v0.1-rsb-weights/resnet50_a2_0-a2746f79.pth", "R50",
          79.828, 0.95),
    _timm("resnet50.a3_in1k", _HF + "v0.1-rsb-weights/resnet50_a3_0-59cae1ef.pth", "R50",
          78.052, 0.95, "; trained at 160 px"),
    _timm("resnet50.ram_in1k", _HF + "v0.1-weights/resnet50_ram-a26f946b.pth", "R50",
          79.034, 0.875),
    _timm("resnet50.ra_in1k", _HF + "v0.1-weights/resnet50_ra-85ebb6e5.pth", "R50",
          78.820, 0.875),
    _timm("resnext50_32x4d.a1h_in1k", _RW + "v0.1-rsb-weights/resnext50_32x4d_a1h-0146ab0a.pth",
          "X50_32x4d", 81.140, 0.95),
    _timm("resnext50_32x4d.a1_in1k", _HF + "v0.1-rsb-weights/resnext50_32x4d_a1_0-b5a91a1d.pth",
          "X50_32x4d", 80.526, 0.95),
    _timm("resnext50_32x4d.a2_in1k", _HF + "v0.1-rsb-weights/resnext50_32x4d_a2_0-efc76add.pth",
          "X50_32x4d", 80.444, 0.95),
    _timm("resnext50_32x4d.a3_in1k", _HF + "v0.1-rsb-weights/resnext50_32x4d_a3_0-3e450271.pth",
          "X50_32x4d", 79.258, 0.95, "; trained at 160 px"),
    _timm("resnext50_32x4d.ra_in1k", _HF + "v0.1-weights/resnext50_32x4d_ra-d733960d.pth",
          "X50_32x4d", 79.800, 0.875),
    _timm("resnext101_64x4d.c1_in1k", _RW + "v0.1-tpu-weights/resnext101_64x4d_c-0d0e0cc0.pth",
          "X101_64x4d", 82.446, 0.95),
)

# facebookresearch/pycls MODEL_ZOO.md (urls, "error (top-1)") and dev/model_error.json
# (top1_err, used here as 100 - top1_err); configs/dds_baselines/*: MODEL.TYPE anynet,
# res_bottleneck_block, whose pycls/models/anynet.py BottleneckTransform strides the 3x3.
# The 2020 pycls/datasets/imagenet.py reads BGR with cv2 and normalizes by the ImageNet
# mean / SD in BGR order. Test: resize 256, center 224. Repository licence MIT; MODEL_ZOO.md
# states none for the weights.
_PYCLS = "https://dl.fbaipublicfiles.com/pycls/dds_baselines/"
_PYCLS_NOTES = ("pycls MODEL_ZOO.md / dev/model_error.json (top-1 = 100 - {err}); no weights "
                "licence stated (repository: MIT)")


def _pycls(model_id, stem, template, top1_err):
    url = f"{_PYCLS}{model_id}/{stem}_dds_8gpu.pyth"
    return _entry(f"pycls/{stem}", "facebookresearch/pycls", url, template,
                  round(100 - top1_err, 3), IMAGENET_BGR, source_format="pycls",
                  stride_in_1x1=False, license=None, notes=_PYCLS_NOTES.format(err=top1_err))


PYCLS = (
    _pycls(161235311, "R-50-1x64d", "R50", 23.19),
    _pycls(161167170, "R-101-1x64d", "R101", 21.414),
    _pycls(161167411, "X-50-32x4d", "X50_32x4d", 21.884),
    _pycls(161167590, "X-101-32x4d", "X101_32x4d", 20.664),
)

# Caffe2. facebookresearch/Detectron MODEL_ZOO.md ("ImageNet Pretrained Models"; licence:
# CC BY-SA 3.0 for all models there) and configs/12_2017_baselines/*.yaml (STRIDE_1X1:
# False "for C2 or Torch models"; True, the default, for MSRA). Detectron has no pixel std
# ("std has been absorbed into its conv1 weights, so the std needs to be set 1":
# detectron2/config/defaults.py; detectron2/checkpoint/catalog.py: "all models here uses
# PIXEL_STD=[1,1,1]", "fused BN into an affine layer"). Mean: detectron2's default
# [103.53, 116.28, 123.675] BGR (Detectron itself used [102.9801, 115.9465, 122.7717]).
# facebookresearch/detectron2 MODEL_ZOO.md: R-50.pkl, R-101.pkl (MSRA) and
# X-101-32x8d.pkl (FAIR) re-converted, "we do not fuse BatchNorm into an affine layer";
# configs/COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml sets PIXEL_STD [57.375,
# 57.120, 58.395] and STRIDE_IN_1X1 False ("this is a C2 model"); licence CC BY-SA 3.0.
# MSRA top-1: KaimingHe/deep-residual-networks README, 1-crop error (resize 256, center
# 224) of the original Caffe models: ResNet-50 24.7%, ResNet-101 23.6%.
_D1 = "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/"
_D2 = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/"
_MSRA_TOP1 = ("top-1 of MSRA's original Caffe model (KaimingHe/deep-residual-networks, 1-crop "
              "error {}%); the converted copy was not re-evaluated by its publisher")
_NO_TOP1 = "no ImageNet-1k top-1 published for this file"


def _caffe2(name, url, template, top1, convention, stride_in_1x1, variant, notes):
    publisher = "facebookresearch/" + ("detectron2" if variant == "detectron2" else "Detectron")
    return _entry(name, publisher, url, template, top1, convention, source_format="caffe2",
                  stride_in_1x1=stride_in_1x1, license="CC-BY-SA-3.0", variant=variant, notes=notes)


CAFFE2 = (
    _caffe2("detectron/MSRA/R-50", _D1 + "MSRA/R-50.pkl", "R50", 75.3, CAFFE2_BGR, True,
            "detectron", "BN folded into an affine map; " + _MSRA_TOP1.format(24.7)),
    _caffe2("detectron/MSRA/R-101", _D1 + "MSRA/R-101.pkl", "R101", 76.4, CAFFE2_BGR, True,
            "detectron", "BN folded into an affine map; " + _MSRA_TOP1.format(23.6)),
    _caffe2("detectron/FAIR/X-101-32x8d", _D1 + "20171220/X-101-32x8d.pkl", "X101_32x8d", None,
            CAFFE2_BGR, False, "detectron",
            "trained with Caffe2 at FB; BN folded into an affine map; " + _NO_TOP1),
    _caffe2("detectron/FBResNeXt/X-101-64x4d", _D1 + "FBResNeXt/X-101-64x4d.pkl", "X101_64x4d",
            79.6, CAFFE2_BGR, False, "detectron",
            "converted copy of FB's Torch7 ResNeXt-101 64x4d; top-1 of that Torch7 model "
            "(facebookresearch/ResNeXt README, error 20.4%), not of this copy"),
    _caffe2("detectron/FAIR/X-152-32x8d-IN5k", _D1 + "25093814/X-152-32x8d-IN5k.pkl",
            "X152_32x8d", None, CAFFE2_BGR, False, "detectron",
            "trained on ImageNet-5k (5000 classes) with Caffe2 at FB; " + _NO_TOP1),
    _caffe2("detectron2/MSRA/R-50", _D2 + "MSRA/R-50.pkl", "R50", 75.3, CAFFE2_BGR, True,
            "detectron2", "BN not fused; " + _MSRA_TOP1.format(24.7)),
    _caffe2("detectron2/MSRA/R-101", _D2 + "MSRA/R-101.pkl", "R101", 76.4, CAFFE2_BGR, True,
            "detectron2", "BN not fused; " + _MSRA_TOP1.format(23.6)),
    _caffe2("detectron2/FAIR/X-101-32x8d", _D2 + "FAIR/X-101-32x8d.pkl", "X101_32x8d", None,
            IMAGENET_BGR, False, "detectron2",
            "trained with Caffe2 at FB, re-converted by detectron2 (BN not fused); " + _NO_TOP1),
)

# detectron2 MODEL_ZOO.md "R-50.pkl (torchvision)": torchvision's ResNet-50 already in
# detectron2's naming (read by our resnext_det source); the config it needs is stated in
# detectron2/tools/convert-torchvision-to-d2.py (RGB, torchvision mean/std x 255, stride
# in the 3x3). Licence CC BY-SA 3.0 (MODEL_ZOO.md).
DETECTRON2_NAMING = (
    _entry("detectron2/torchvision/R-50", "facebookresearch/detectron2",
           _D2 + "torchvision/R-50.pkl", "R50", None, IMAGENET_RGB, source_format="resnext_det",
           stride_in_1x1=False, license="CC-BY-SA-3.0",
           notes="torchvision's ResNet-50 converted by detectron2 (which torchvision file is not "
                 "stated; the script's usage example converts resnet50-19c8e357.pth); "
                 + _NO_TOP1),
)

# Torch7. facebookresearch/ResNeXt README ("Single-crop (224x224) validation error rate";
# "ImageNet pretrained models are licensed under CC BY-NC 4.0"), datasets/imagenet.lua
# (image.load: RGB in [0, 1]; meanstd 0.485/0.456/0.406, 0.229/0.224/0.225),
# models/resnext.lua (stride in the 3x3). facebook/fb.resnet.torch pretrained/README.md
# ("ImageNet 1-crop error rates (224x224)"), models/resnet.lua (stride in the 3x3),
# datasets/imagenet.lua (as above); no licence stated for those models (the LICENSE, BSD,
# covers "fb.resnet.torch software").
_RX = "https://dl.fbaipublicfiles.com/resnext/imagenet_models/"
_FB = "https://d2j0dndfm35trm.cloudfront.net/"


def _torch7(name, publisher, url, template, top1_err, license, notes=""):
    return _entry(name, publisher, url, template, round(100 - top1_err, 3), IMAGENET_RGB,
                  source_format="torch7", stride_in_1x1=False, license=license,
                  notes=f"top-1 = 100 - published error {top1_err}%" + notes)


def _resnext_t7(stem, template, top1_err):
    return _torch7(f"ResNeXt-torch/{stem}", "facebookresearch/ResNeXt", f"{_RX}{stem}.t7",
                   template, top1_err, "CC-BY-NC-4.0")


def _fb_t7(stem, template, top1_err, notes=""):
    return _torch7(f"fb.resnet.torch/{stem}", "facebook/fb.resnet.torch", f"{_FB}{stem}.t7",
                   template, top1_err, None, notes + "; no weights licence stated")


TORCH7 = (
    _resnext_t7("resnext_50_32x4d", "X50_32x4d", 22.2),
    _resnext_t7("resnext_101_32x4d", "X101_32x4d", 21.2),
    _resnext_t7("resnext_101_64x4d", "X101_64x4d", 20.4),
    _fb_t7("resnet-50", "R50", 24.01, "; pretrained/README.md: this model has 'a batch "
           "normalization layer after the addition', which our blocks do not have"),
    _fb_t7("resnet-101", "R101", 22.44),
    _fb_t7("resnet-152", "R152", 22.16),
)

# Cadene/pretrained-models.pytorch pretrainedmodels/models/resnext.py pretrained_settings
# (url, input_space RGB, input_range [0, 1], ImageNet mean/std), resnext_features/*.py
# (stride in the grouped 3x3), README "Accuracy on validation set" ("Our porting" rows).
# The files are ports of facebookresearch/ResNeXt's Torch7 models (README: "Automatic
# porting of ResNeXt"). Hash: torch.utils.model_zoo.load_url (torch <= 1.0, which this
# code called) required `filename-<sha256>.ext` and checked the prefix.
_CADENE = "http://data.lip6.fr/cadene/pretrainedmodels/"
_CADENE_NOTES = ("Cadene's port of facebookresearch/ResNeXt's Torch7 model, top-1 as Cadene "
                 "measured it; no licence stated (the Torch7 originals are CC BY-NC 4.0)")


def _cadene(arch, file_name, template, top1):
    return _entry(f"pretrainedmodels/{arch}", "Cadene/pretrained-models.pytorch",
                  _CADENE + file_name, template, top1, IMAGENET_RGB,
                  source_format="pretrainedmodels", stride_in_1x1=False, license=None,
                  hashed=True, notes=_CADENE_NOTES)


PRETRAINEDMODELS = (
    _cadene("resnext101_32x4d", "resnext101_32x4d-29e315fa.pth", "X101_32x4d", 78.188),
    _cadene("resnext101_64x4d", "resnext101_64x4d-e77a0586.pth", "X101_64x4d", 78.956),
)

CATALOG = TORCHVISION + TIMM + PYCLS + CAFFE2 + DETECTRON2_NAMING + TORCH7 + PRETRAINEDMODELS
BY_NAME = {entry.name: entry for entry in CATALOG}


def get(name):
    """The entry called `name` ("torchvision/resnet50.IMAGENET1K_V1"); KeyError if none."""
    return BY_NAME[name]


def candidates(path):
    """Every entry whose published file name is the base name of `path`."""
    base = os.path.basename(str(path))
    return [entry for entry in CATALOG if entry.file_name == base]


def lookup(path, source_format=None, variant=None):
    """The entry of the file at `path` (by base name), or None.

    A name held by one entry gives that entry whatever the format (`verify` then checks
    the format). Where several share it (R-50.pkl, X-101-32x8d.pkl), `source_format` and
    then `variant` narrow them down; None if more or fewer than one is left.
    """
    found = candidates(path)
    if len(found) > 1 and source_format is not None:
        found = [e for e in found if e.source_format == source_format]
    if len(found) > 1 and variant is not None:
        found = [e for e in found if e.variant == variant]
    return found[0] if len(found) == 1 else None


def verify(entry, path, sha256, source_format, template, variant=None):
    """Raise ConversionError if the file at `path` is not what `entry` describes.

    Args:
        sha256: the file's sha256 hex digest (may be None only if entry.hash_prefix is None).
        source_format: the detected source's name.
        template: the inferred Template (or its name).
        variant: the file's layout variant, if the source tells one (None: not checked).
    """
    name = os.path.basename(str(path))
    problems = []
    if entry.hash_prefix is not None:
        if sha256 is None:
            raise ValueError(f"verify({entry.name!r}): the file's sha256 is needed")
        if not sha256.lower().startswith(entry.hash_prefix):
            problems.append(f"sha256: catalog {entry.hash_prefix}..., file {sha256}")
    if source_format != entry.source_format:
        problems.append(f"format: catalog {entry.source_format}, file {source_format}")
    found = parse_template(template) if isinstance(template, str) else template
    if found != parse_template(entry.template):
        problems.append(f"template: catalog {entry.template}, file {found.name}")
    if variant is not None and entry.variant is not None and variant != entry.variant:
        problems.append(f"layout variant: catalog {entry.variant}, file {variant}")
    if problems:
        raise ConversionError(
            f"{name} is not the file the weights catalog lists as {entry.name} ({entry.url}): "
            + "; ".join(problems) + ". Download it again, or rename it if it is another file.")


def metadata(entry):
    """{input_format, pixel_mean, pixel_std, stride_in_1x1} of `entry` (None: unknown)."""
    values = {key: getattr(entry, key) for key in METADATA_KEYS}
    for key in ("pixel_mean", "pixel_std"):
        values[key] = None if values[key] is None else list(values[key])
    return values


# --- the table: tools/convert_weights.py --list, tools/weights_table.py (README) ---
COLUMNS = ("name", "file", "format", "template", "input", "std", "stride", "top-1", "license")


def _std(std):
    if std is None:
        return "?"
    return "1" if all(v == 1 for v in std) else "/".join(f"{v:g}" for v in std)


def row(entry):
    """The table cells of one entry, as strings."""
    fmt = entry.source_format + (f" ({entry.variant})" if entry.variant else "")
    stride = {True: "1x1", False: "3x3", None: "?"}[entry.stride_in_1x1]
    top1 = "-" if entry.top1 is None else f"{entry.top1:g}"
    return (entry.name, entry.file_name, fmt, entry.template, entry.input_format or "?",
            _std(entry.pixel_std), stride, top1, entry.license or "not stated")


def table(markdown=False):
    """The catalog as text: aligned columns, or a Markdown table for the README."""
    rows = [row(entry) for entry in CATALOG]
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(f"`{c}`" if i == 1 else c for i, c in enumerate(r)) + " |"
                  for r in rows]
        return "\n".join(lines)
    widths = [max(len(c) for c in col) for col in zip(COLUMNS, *rows)]
    lines = [COLUMNS, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
                     for cells in lines)
