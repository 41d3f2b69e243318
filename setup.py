"""resnext_det: ResNeXt (Xie et al., CVPR 2017) as a first-class detectron2 backbone.

detectron2 itself is not a pip requirement here: it is not on PyPI under its own name.
`tools/setup_env.sh` keeps a detectron2 you already have, or installs one (see there).
"""
from setuptools import find_packages, setup

setup(
    name="resnext_det",
    version="0.1.0",
    description="ResNeXt backbones, weights conversion and Faster R-CNN configs for detectron2",
    python_requires=">=3.9",
    packages=find_packages(include=["resnext_det", "resnext_det.*"]),
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        "fvcore>=0.1.5",
        "pycocotools>=2.0.2",
        "faster-coco-eval>=1.8",  # the default COCOeval (TEST.COCO_EVAL_BACKEND)
        "orjson>=3.9",
        "opencv-python>=4.5",
        "numpy",
    ],
    extras_require={"test": ["pytest>=7.0", "pytest-timeout>=2.1"]},
)
