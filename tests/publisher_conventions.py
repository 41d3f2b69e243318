"""The input convention a cataloged file was trained with, read from its publisher's own
installed code, never from resnext_det's constants (sources/base.py IMAGENET_RGB, ...).

    published_convention(entry) -> {input_format, pixel_mean, pixel_std, stride_in_1x1}

in detectron2's convention (0-255 pixels in INPUT.FORMAT order). Per publisher:
  torchvision        its weights enum's transforms() (x 255, RGB) and its Bottleneck;
  timm               get_pretrained_cfg's mean / std (x 255), ImageDataset's default
                     input_img_mode, the Bottleneck of the model timm builds;
  pycls              pycls/datasets/imagenet.py _MEAN / _SD (BGR order, x 255: it reads
                     with cv2.imread) and anynet's ResBottleneckBlock (dds_baselines);
  Torch7 / Cadene    pretrainedmodels' pretrained_settings (input_space, input_range, mean,
                     std) of its ports of those Torch7 files (resnext: facebookresearch/ResNeXt;
                     fbresnet152: fb.resnet.torch) and the ports' module trees;
  Caffe2, detectron2 the model zoo config that loads the file (get_cfg() merged with it);
  Caffe2, Detectron  detectron2's ModelCatalog, which names the file and states its
                     stride ("MSRA models have STRIDE_IN_1X1=True") and PIXEL_STD [1,1,1],
                     with get_cfg()'s (Caffe2) channel order and mean.
"""
import inspect

import torch

KEYS = ("input_format", "pixel_mean", "pixel_std", "stride_in_1x1")


def _convention(input_format, mean, std, stride_in_1x1, scale=1.0):
    return dict(input_format=input_format, pixel_mean=[scale * float(v) for v in mean],
                pixel_std=[scale * float(v) for v in std], stride_in_1x1=bool(stride_in_1x1))


def _stride_in_1x1(first_1x1, the_3x3):
    """Which of a downsampling block's two convolutions strides (exactly one must)."""
    strides = (tuple(first_1x1.stride), tuple(the_3x3.stride))
    assert sorted(strides) == [(1, 1), (2, 2)], strides
    return strides[0] == (2, 2)


def _torchvision(arch, file_name):
    from torchvision.models import get_model, get_model_weights

    weights = [w for w in get_model_weights(arch) if w.url.endswith("/" + file_name)]
    assert len(weights) == 1, file_name
    transforms = weights[0].transforms()
    with torch.device("meta"):
        block = get_model(arch).layer2[0]  # res3's first block: it downsamples
    return _convention("RGB", transforms.mean, transforms.std,
                       _stride_in_1x1(block.conv1, block.conv2), scale=255)


def _timm(name):
    import timm
    from timm.data import ImageDataset

    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    mode = inspect.signature(ImageDataset.__init__).parameters["input_img_mode"].default
    with torch.device("meta"):
        block = timm.create_model(name.split(".")[0], pretrained=False).layer2[0]
    return _convention(mode, cfg["mean"], cfg["std"], _stride_in_1x1(block.conv1, block.conv2),
                       scale=255)


def _pycls():
    from pycls.datasets import imagenet
    from pycls.models.anynet import ResBottleneckBlock

    assert "cv2.imread" in inspect.getsource(imagenet.ImageNet.__getitem__)  # BGR, 0-255
    block = ResBottleneckBlock(64, 256, stride=2, bm=0.25, gw=4)  # the dds_baselines' block
    return _convention("BGR", imagenet._MEAN, imagenet._SD, _stride_in_1x1(block.f.a, block.f.b),
                       scale=255)


def _cadene(settings, block):
    """A pretrainedmodels `pretrained_settings[arch]["imagenet"]` and the port's first
    downsampling block's (first 1x1, 3x3) convolutions."""
    low, high = settings["input_range"]
    assert low == 0
    return _convention(settings["input_space"], settings["mean"], settings["std"],
                       _stride_in_1x1(*block), scale=255 / high)


def _cadene_resnext(arch):
    from pretrainedmodels.models import resnext, resnext_features

    features = getattr(resnext_features, f"{arch}_features")
    main = features[5][0][0][0]  # res3's first block: ConcatTable -> the residual branch
    convs = [m for m in main.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (1, 1)]
    return _cadene(resnext.pretrained_settings[arch]["imagenet"], convs[:2])


def _torch7_resnext():
    """facebookresearch/ResNeXt's Torch7 files: every Cadene port of them states the same."""
    from pretrainedmodels.models import resnext

    found = [_cadene_resnext(arch) for arch in resnext.pretrained_settings]
    assert found and all(f == found[0] for f in found), found
    return found[0]


def _torch7_fb_resnet():
    """fb.resnet.torch's files: Cadene's fbresnet152 is the port of its resnet-152.t7."""
    from pretrainedmodels.models import fbresnet

    block = fbresnet.Bottleneck(256, 128, stride=2)
    return _cadene(fbresnet.pretrained_settings["fbresnet152"]["imagenet"],
                   (block.conv1, block.conv2))


# detectron2 model zoo configs that load detectron2's re-converted ImageNet files
_D2_ZOO = {"detectron2/MSRA/R-50": "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
           "detectron2/MSRA/R-101": "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
           "detectron2/FAIR/X-101-32x8d": "COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml"}


def _from_d2_config(cfg):
    return _convention(cfg.INPUT.FORMAT, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD,
                       cfg.MODEL.RESNETS.STRIDE_IN_1X1)


def _detectron2_zoo(entry):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(_D2_ZOO[entry.name]))
    prefix = "https://dl.fbaipublicfiles.com/detectron2/"
    assert cfg.MODEL.WEIGHTS == "detectron2://" + entry.url[len(prefix):], cfg.MODEL.WEIGHTS
    return _from_d2_config(cfg)


def _detectron_catalog(entry):
    from detectron2.checkpoint.catalog import ModelCatalog
    from detectron2.config import get_cfg

    names = [name for name in ModelCatalog.C2_IMAGENET_MODELS
             if ModelCatalog.get("ImageNetPretrained/" + name) == entry.url]
    assert len(names) == 1, (entry.url, names)
    source = inspect.getsource(ModelCatalog)
    assert "MSRA models have STRIDE_IN_1X1=True. False otherwise." in source
    assert "all models here uses PIXEL_STD=[1,1,1]" in source
    cfg = get_cfg()  # detectron2's defaults: the Caffe2 convention (BGR, its mean)
    return _convention(cfg.INPUT.FORMAT, cfg.MODEL.PIXEL_MEAN, [1, 1, 1],
                       names[0].startswith("MSRA/"))


def published_convention(entry):
    """{input_format, pixel_mean, pixel_std, stride_in_1x1} of a catalog entry, from its
    publisher's installed code."""
    kind, _, rest = entry.name.partition("/")
    if kind == "torchvision":
        return _torchvision(rest.split(".")[0], entry.file_name)
    if kind == "timm":
        return _timm(rest)
    if kind == "pycls":
        return _pycls()
    if kind == "ResNeXt-torch":
        return _torch7_resnext()
    if kind == "fb.resnet.torch":
        return _torch7_fb_resnet()
    if kind == "pretrainedmodels":
        return _cadene_resnext(rest)
    if kind == "detectron2" and rest.startswith("torchvision/"):
        # detectron2 MODEL_ZOO.md: torchvision's ResNet-50 in detectron2's naming
        return _torchvision("resnet50", "resnet50-0676ba61.pth")
    if kind == "detectron2":
        return _detectron2_zoo(entry)
    if kind == "detectron":
        return _detectron_catalog(entry)
    raise KeyError(f"no publisher source for {entry.name}")


def same_convention(got, expected):
    """Equal conventions, pixel statistics to float rounding (e.g. 0.485 * 255)."""
    import pytest

    return ({k: got[k] for k in ("input_format", "stride_in_1x1")}
            == {k: expected[k] for k in ("input_format", "stride_in_1x1")}
            and list(got["pixel_mean"]) == pytest.approx(expected["pixel_mean"])
            and list(got["pixel_std"]) == pytest.approx(expected["pixel_std"]))
