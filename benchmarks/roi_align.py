"""ROIAlign on the CPU: detectron2's ROIPooler (torchvision's kernel per level) vs ours
(resnext_det.modeling.roi_align.SparseROIPooler: all levels in one sparse product).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/roi_align.py [--repeats 10]
    .venv/bin/python benchmarks/roi_align.py --model configs/faster_rcnn_X50_32x4d_FPN_1x.yaml \
        --size 800 1216 --repeats 7                         # the whole detector, each pooler

Two sizes: the digits demo's (8 images of 128x128, FPN p2-p5 with 64 channels, 128 ROIs
per image, boxes 4-128 px) and COCO FPN's (2 images of 800x1333, 256 channels, 512 ROIs
per image, boxes 16-800 px); 7x7 bins, POOLER_SAMPLING_RATIO 0, ROIAlignV2, as
detectron2's FPN box head. Forward alone (inference) and forward + backward (training),
the contenders' repeats interleaved; outputs and gradients are checked first.
With --model, the pooler inside a whole detector: the config's model (random weights, one
random image of --size) as MODEL.RESNEXT.FAST_INFERENCE's "fold+nhwc" copy with either
pooler, its detections checked equal first.
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


def model_inference(config_file, size, repeats):
    """Seconds per image of the config's detector, optimize_for_inference's copy with each
    pooler; the two copies' detections are checked to agree first."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from resnext_det.config import add_resnext_config
    from resnext_det.modeling.inference import optimize_for_inference

    torch.manual_seed(0)
    cfg = get_cfg()
    add_resnext_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # random weights: keep detections to compare
    model = build_model(cfg)
    h, w = size
    images = [{"image": torch.randint(0, 256, (3, h, w)).float(), "height": h, "width": w}]
    copies = {roi: optimize_for_inference(model, roi_align=roi)
              for roi in ("torchvision", "sparse")}
    with torch.no_grad():
        a, b = (m(images)[0]["instances"] for m in copies.values())
        err = (a.pred_boxes.tensor - b.pred_boxes.tensor).abs().max().item() if len(a) else 0.0
        assert len(a) == len(b) and err < 1e-2, f"the detections differ ({len(a)}, {len(b)}, {err})"
        times = median_times({k: (lambda m=m: m(images)) for k, m in copies.items()}, 1,
                             repeats, "cpu")
    (ta, tb) = times.values()
    print(f"{config_file} at {h}x{w}, {len(a)} detections (max box diff {err:.1e}): "
          f"torchvision's pooler {ta:.3f} s, sparse {tb:.3f} s ({ta / tb:.2f}x)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--model", help="a detector config: time it whole with each pooler")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1216), metavar=("H", "W"))
    args = parser.parse_args()
    print(f"threads {torch.get_num_threads()}")
    if args.model:
        return model_inference(args.model, args.size, args.repeats)
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
