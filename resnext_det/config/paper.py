"""The paper's results we measure ourselves against (Xie et al. 2017)."""

# COCO minival, Faster R-CNN in the ResNet-C4 setup (the paper's Table 8): (AP, AP@0.5).
COCO_C4_AP = {
    "R50": (26.5, 47.6),
    "X50_32x4d": (27.5, 49.7),
    "R101": (29.8, 51.1),
    "X101_32x4d": (30.0, 51.9),
}

# ImageNet-1K top-1 error, 224x224 single crop (Tables 3 and 4).
IMAGENET_TOP1_ERROR = {
    "R50": 23.9,
    "X50_32x4d": 22.2,
    "R101": 22.0,
    "X101_32x4d": 21.2,
    "X101_64x4d": 20.4,
}
