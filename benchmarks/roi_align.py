"""ROIAlign on the CPU: detectron2's ROIPooler (torchvision's kernel per level) vs ours
(resnext_det.modeling.roi_align.SparseROIPooler: all levels in one sparse product).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/roi_align.py [--repeats 10]

Two sizes: the digits demo's (8 images of 128x128, FPN p2-p5 with 64 channels, 128 ROIs
per image, boxes 4-128 px) and COCO FPN's (2 images of 800x1333, 256 channels, 512 ROIs
per image, boxes 16-800 px); 7x7 bins, POOLER_SAMPLING_RATIO 0, ROIAlignV2, as
detectron2's FPN box head. Forward alone (inference) and forward + backward (training),
the contenders' repeats interleaved; outputs and gradients are checked first.
"""
import argparse
import math

import torch
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes
from timing import median_times

from resnext_det.modeling.roi_align import use_roi_align

SIZES = {  # images, (H, W), channels, ROIs per image, box sides (px)
    "demo": dict(images=8, image=(128, 128), channels=64, rois=128, sides=(4, 128)),
    "COCO FPN": dict(images=2, image=(800, 1333), channels=256, rois=512, sides=(16, 800)),
}
SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def inputs(images, image, channels, rois, sides, seed=0):
    """Random FPN features (p2-p5) and random boxes with log-uniform sides inside the image."""
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(images, channels, math.ceil(image[0] * s), math.ceil(image[1] * s),
                         generator=g) for s in SCALES]
    boxes = []
    for _ in range(images):
        side = torch.exp(torch.empty(rois, 2).uniform_(*map(math.log, sides), generator=g))
        side = torch.minimum(side, torch.tensor([image[1], image[0]], dtype=torch.float32))
        corner = torch.rand(rois, 2, generator=g) * (torch.tensor([image[1], image[0]]) - side)
        boxes.append(Boxes(torch.cat([corner, corner + side], 1)))
    return feats, boxes


def poolers():
    ours = ROIPooler((7, 7), SCALES, 0, "ROIAlignV2")
    use_roi_align(ours, "sparse")  # a SparseROIPooler, as MODEL.RESNEXT.ROI_ALIGN "sparse"
    return {"detectron2 ROIPooler (torchvision)": ROIPooler((7, 7), SCALES, 0, "ROIAlignV2"),
            "ours SparseROIPooler": ours}


def forward_backward(pooler, feats, boxes, grad):
    feats = [f.detach().requires_grad_() for f in feats]
    out = pooler(feats, boxes)
    out.backward(grad)
    return out, [f.grad for f in feats]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"threads {torch.get_num_threads()}")
    for name, size in SIZES.items():
        feats, boxes = inputs(**size)
        contenders = poolers()
        ref, ours = contenders.values()
        grad = torch.randn(sum(len(b) for b in boxes), size["channels"], 7, 7)
        (out_a, grads_a), (out_b, grads_b) = (forward_backward(p, feats, boxes, grad)
                                              for p in (ref, ours))
        err = max([(out_a - out_b).abs().max().item()]
                  + [(a - b).abs().max().item() for a, b in zip(grads_a, grads_b)])
        assert err < 1e-4, f"{name}: ours differs from torchvision by {err}"
        with torch.no_grad():
            fwd = median_times({k: (lambda p=p: p(feats, boxes)) for k, p in contenders.items()},
                               1, args.repeats, "cpu")
        train = median_times({k: (lambda p=p: forward_backward(p, feats, boxes, grad))
                              for k, p in contenders.items()}, 1, args.repeats, "cpu")
        (fa, fb), (ta, tb) = fwd.values(), train.values()
        print(f"{name}: max abs diff {err:.1e}; "
              f"forward {fa * 1e3:.1f} -> {fb * 1e3:.1f} ms "
              f"({fa / fb:.2f}x); forward+backward {ta * 1e3:.1f} -> {tb * 1e3:.1f} ms "
              f"({ta / tb:.2f}x)",
              flush=True)


if __name__ == "__main__":
    main()
