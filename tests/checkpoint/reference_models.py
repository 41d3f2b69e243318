"""Independent reference models of the conversion tests, each built once per test session.

The oracles are other people's code run for real: pretrainedmodels' ResNeXt-101 (the
Torch7 release in PyTorch) and torchvision's ResNet-50, with random weights and random
BN statistics; their own forward gives the expected res2..res5 and logits. Torch trees
in the Lua layouts (fb.resnet.torch, resnext.lua 'resnext_B') are built from torch
modules whose forward is the function itself, for t7_writer.to_t7 to serialize.
"""
import copy
import functools

import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from ckpt_helpers import FEATURES, load_ours
from resnext_det import parse_template
from resnext_det.modeling import build_resnext
from resnext_det.utils.testing import randomize_norms_
from t7_writer import CAddTable, ConcatTable, JoinTable

PM_TEMPLATES = {"resnext101_32x4d": "X101_32x4d", "resnext101_64x4d": "X101_64x4d"}
STAGE_INDICES = (4, 5, 6, 7)  # res2..res5 in the Torch7 tree and in pretrainedmodels' features


def _image(size, seed=0):
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _reinitialized(module, seed=0):
    """`module` with seeded weights: every conv / linear / BN reset, then random BN stats."""
    torch.manual_seed(seed)
    for m in module.modules():
        if hasattr(m, "reset_parameters") and not list(m.children()):
            m.reset_parameters()
    return randomize_norms_(module, seed).eval()


def sequential_outputs(sequential, x):
    """({res2..res5: output of modules 4..7}, last output) of a Torch7-ordered Sequential."""
    outputs = {}
    for i, module in enumerate(sequential):
        x = module(x)
        if i in STAGE_INDICES:
            outputs[FEATURES[STAGE_INDICES.index(i)]] = x
    return outputs, x


@functools.lru_cache(maxsize=None)
def pretrainedmodels_resnext(name):
    """(model, image, {res2..res5, linear: its outputs}) of pretrainedmodels' `name`.

    pretrained=None: random weights. Its `features` is a module-level nn.Sequential that
    every instance shares, so it is deep-copied before being changed. The classifier
    averages a fixed 7x7 window: the image is 224x224.
    """
    from pretrainedmodels.models import resnext

    model = getattr(resnext, name)(num_classes=1000, pretrained=None)
    model.features = copy.deepcopy(model.features)
    model = _reinitialized(model)
    image = _image(224)
    with torch.no_grad():
        outputs, res5 = sequential_outputs(model.features, image)
        outputs["linear"] = model.logits(res5)
    return model, image, outputs


def release_tree(model):
    """The Torch7 release's top-level nn.Sequential around pretrainedmodels' modules:
    features [0..7], avg pool [8], View [9], Linear [10] (facebookresearch/ResNeXt
    models/resnext.lua builds the same top level)."""
    return nn.Sequential(*model.features, model.avg_pool, nn.Flatten(), model.last_linear)


@functools.lru_cache(maxsize=None)
def torchvision_resnet50():
    """(model, image, outputs) of torchvision's resnet50 (random weights and BN statistics)."""
    model = _reinitialized(torchvision.models.resnet50())
    image = _image(64)
    layers = IntermediateLayerGetter(model, {f"layer{k}": f"res{k + 1}" for k in range(1, 5)})
    with torch.no_grad():
        outputs = dict(layers(image), linear=model(image))
    return model, image, outputs


def _fb_block(block):
    """fb.resnet.torch's bottleneck around torchvision's Bottleneck modules (same function):
    Sequential{ConcatTable{Sequential{1x1, BN, ReLU, 3x3, BN, ReLU, 1x1, BN}, shortcut},
    CAddTable, ReLU}."""
    main = nn.Sequential(block.conv1, block.bn1, nn.ReLU(), block.conv2, block.bn2, nn.ReLU(),
                         block.conv3, block.bn3)
    shortcut = block.downsample if block.downsample is not None else nn.Identity()
    return nn.Sequential(ConcatTable(main, shortcut), CAddTable(), nn.ReLU())


def fb_resnet_tree(model):
    """fb.resnet.torch models/resnet.lua's ImageNet nn.Sequential, sharing `model`'s modules."""
    stages = [nn.Sequential(*map(_fb_block, layer))
              for layer in (model.layer1, model.layer2, model.layer3, model.layer4)]
    return nn.Sequential(model.conv1, model.bn1, nn.ReLU(), model.maxpool, *stages,
                         nn.AvgPool2d(7, 1), nn.Flatten(), model.fc)


def _conv_bn(c_in, c_out, kernel=1, stride=1, groups=1):
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out)]


def _form_b_block(c_in, n, cardinality, width, stride):
    """resnext.lua resnext_bottleneck_B(n, stride): C paths of width D, JoinTable, 1x1, BN."""
    paths = [nn.Sequential(*_conv_bn(c_in, width), nn.ReLU(), *_conv_bn(width, width, 3, stride),
                           nn.ReLU()) for _ in range(cardinality)]
    main = nn.Sequential(ConcatTable(*paths), JoinTable(), *_conv_bn(width * cardinality, n * 4))
    shortcut = (nn.Sequential(*_conv_bn(c_in, n * 4, 1, stride)) if c_in != n * 4
                else nn.Identity())
    return nn.Sequential(ConcatTable(main, shortcut), CAddTable(), nn.ReLU())


@functools.lru_cache(maxsize=None)
def form_b_resnext50(cardinality=2, base_width=4, num_classes=10):
    """(tree, image, outputs) of resnext.lua's ImageNet 'resnext_B', depth 50.

    Stage k has blocks of n = 64 * 2**k: C paths of width D = n * baseWidth / 64, output 4n.
    """
    torch.manual_seed(0)
    stages, c_in = [], 64
    for k, count in enumerate((3, 4, 6, 3)):
        n = 64 * 2**k
        stages.append(nn.Sequential(*[
            _form_b_block(c_in if j == 0 else n * 4, n, cardinality, n * base_width // 64,
                          2 if j == 0 and k > 0 else 1) for j in range(count)]))
        c_in = n * 4
    tree = nn.Sequential(*_conv_bn(3, 64, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1), *stages,
                         nn.AvgPool2d(2, 1), nn.Flatten(), nn.Linear(2048, num_classes))
    tree = randomize_norms_(tree).eval()
    image = _image(64)  # res5 is 2x2: the 2x2 average pool is the global one
    with torch.no_grad():
        outputs, logits = sequential_outputs(tree, image)
    outputs["linear"] = logits
    return tree, image, outputs


def ours_outputs(template, weights, image, *, stride_in_1x1, num_classes):
    """{res2..res5, linear} of our model loaded with converted `weights`."""
    net = build_resnext(parse_template(template), num_classes=num_classes,
                        out_features=FEATURES + ["linear"], stride_in_1x1=stride_in_1x1)
    with torch.no_grad():
        return load_ours(net, weights)(image)
