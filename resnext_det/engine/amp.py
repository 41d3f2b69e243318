"""SOLVER.AMP.ENABLED on CPUs: the forward pass under bfloat16 autocast.

detectron2's AMPTrainer is CUDA's recipe (float16 autocast, a GradScaler, and an assert
that CUDA is present). On CPUs the autocast type is bfloat16, which has float32's
exponent range, so gradients cannot underflow and no GradScaler is needed. Only CPUs with
native bf16 instructions (AVX-512 BF16, AMX) run it faster than float32; elsewhere oneDNN
emulates it: on 1 thread of an AVX2 EPYC, a Faster R-CNN X50_32x4d FPN train iteration
(800x1333, batch 2) took 625 s in bf16 against 45-49 s in float32, ~13x slower, with the
losses within 1.4e-3 of float32's. So it stays an opt-in.
"""
import logging
import time

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer

from ..config.checks import amp_device_type
from ..modeling.roi_align import float32_roi_pooling

logger = logging.getLogger(__name__)


def native_bf16():
    """True when this CPU has bfloat16 instructions (AVX-512 BF16 or AMX)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


class CPUAutocastTrainer(SimpleTrainer):
    """SimpleTrainer whose forward pass (model and losses) runs under CPU autocast, its ROI
    pooling in float32 (modeling.roi_align.float32_roi_pooling: float32 boxes).

    Only the forward: on CPUs autograd runs the backward in the calling thread, so an
    autocast around the whole step would reach the backward ops too, which torch's AMP
    guide advises against. Backward, metrics and optimizer step are SimpleTrainer's, in
    its order.
    """

    def __init__(self, model, data_loader, optimizer, *, precision=torch.bfloat16, **kwargs):
        """
        Args:
            model, data_loader, optimizer, kwargs: as SimpleTrainer's.
            precision (torch.dtype): the autocast type (bfloat16; float16 also works on
                recent CPUs).
        """
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.precision = precision

    def run_step(self):
        assert self.model.training, "[CPUAutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with float32_roi_pooling(self.model), torch.autocast("cpu", dtype=self.precision):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(loss.float() for loss in loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


class CUDAAutocastTrainer(AMPTrainer):
    """detectron2's AMPTrainer (float16 autocast, GradScaler), its ROI pooling in float32
    (modeling.roi_align.float32_roi_pooling): float16 boxes would move corners by up to
    0.25 px at 512-1024 px and 0.5 px at 1024-2048."""

    def run_step(self):
        with float32_roi_pooling(self.model):
            super().run_step()


def build_step_trainer(cfg, model, data_loader, optimizer):
    """The loop that runs one iteration, as SOLVER.AMP.ENABLED and MODEL.DEVICE select.

    AMP off: SimpleTrainer (float32). On CUDA: CUDAAutocastTrainer, detectron2's AMPTrainer
    (float16 with a GradScaler). On the CPU: CPUAutocastTrainer (bfloat16, no scaler).
    Both pool the ROIs in float32.

    Args:
        cfg (CfgNode): SOLVER.AMP.ENABLED and MODEL.DEVICE are read.
        model, data_loader, optimizer: as SimpleTrainer takes them.

    Returns:
        SimpleTrainer: or its subclass.
    """
    device_type = amp_device_type(cfg)
    if device_type is None:
        return SimpleTrainer(model, data_loader, optimizer)
    if device_type == "cuda":
        return CUDAAutocastTrainer(model, data_loader, optimizer)
    if not native_bf16():
        logger.warning("SOLVER.AMP.ENABLED on a CPU without bfloat16 instructions (AVX-512 "
                       "BF16 / AMX): bfloat16 is emulated and slower than float32 here.")
    return CPUAutocastTrainer(model, data_loader, optimizer)
