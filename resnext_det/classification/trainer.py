"""The epoch / iteration loop of classification pretraining, one process or many.

Several processes (detectron2's `launch`, or torchrun) train with DistributedDataParallel:
NCCL on GPUs, gloo on CPUs (device_ids=None). Resuming restores the model, optimizer,
schedule, iteration and every process's RNG, and continues the interrupted epoch at the
batch it had reached, in the same data order (EpochBatchSampler).
"""
import logging
import time

import torch
import torch.nn.functional as F
from detectron2.data.build import worker_init_reset_seed
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..checkpoint.metadata import WeightsMetadata
from ..config.errors import ConfigError
from .checkpoint import (CheckpointFiles, load_checkpoint, load_initial_weights, rng_state,
                         set_rng_state)
from .data import build_dataset, check_same_classes
from .evaluate import all_sum, error_rates, evaluate, topk_correct
from .events import MetricsWriter, Throughput, format_eta
from .model import build_cls_model, template_name
from .sampler import EpochBatchSampler, ShardBatchSampler
from .solver import build_optimizer, build_schedule
from .transforms import build_test_transform, build_train_transform

logger = logging.getLogger(__name__)


def cls_device(cfg):
    if cfg.MODEL.DEVICE == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", comm.get_local_rank())


def per_process(total, key):
    """Images per process of a global batch size, which must split evenly."""
    world = comm.get_world_size()
    if total % world:
        raise ConfigError(key, total, f"a multiple of the number of processes ({world})")
    return total // world


def resolve_num_classes(cfg, dataset):
    """MODEL.NUM_CLASSES, or the data's class count when it is 0; they must agree."""
    found = len(dataset.classes)
    if cfg.MODEL.NUM_CLASSES not in (0, found):
        raise ConfigError("MODEL.NUM_CLASSES", cfg.MODEL.NUM_CLASSES,
                          f"0 or {found}, the number of classes in the data")
    return found


def make_loader(cfg, dataset, batch_sampler, device):
    """Its own generator: making an iterator draws a seed from it, not from the global
    RNG, so a resumed run's augmentations (num_workers 0) continue the interrupted ones."""
    workers = cfg.DATA.NUM_WORKERS
    seed = max(cfg.SEED, 0) * 1000 + comm.get_rank()
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      worker_init_fn=worker_init_reset_seed,
                      generator=torch.Generator().manual_seed(seed))


def val_loader(cfg, dataset, device):
    batch = per_process(cfg.TEST.IMS_PER_BATCH, "TEST.IMS_PER_BATCH")
    sampler = ShardBatchSampler(len(dataset), batch, rank=comm.get_rank(),
                                world_size=comm.get_world_size())
    return make_loader(cfg, dataset, sampler, device)


def weights_metadata(cfg, num_classes, iteration):
    """What a detector loading these weights needs to agree with (None for CIFAR nets)."""
    if cfg.MODEL.ARCH != "imagenet":
        return None
    r = cfg.MODEL.RESNETS
    return WeightsMetadata(
        template=template_name(cfg), source_format="resnext_det", input_format=cfg.INPUT.FORMAT,
        pixel_mean=list(cfg.MODEL.PIXEL_MEAN), pixel_std=list(cfg.MODEL.PIXEL_STD),
        stride_in_1x1=r.STRIDE_IN_1X1, norm=r.NORM, block_form=cfg.MODEL.RESNEXT.BLOCK_FORM,
        num_classes=num_classes,
        notes=(f"tools/pretrain_cls.py on {cfg.DATA.NAME}:{cfg.DATA.ROOT}, iteration {iteration}; "
               f"STEM_OUT_CHANNELS {r.STEM_OUT_CHANNELS}, RES2_OUT_CHANNELS {r.RES2_OUT_CHANNELS}"),
    ).to_dict()


class ClsTrainer:
    """Builds data, model, optimizer and schedule from a config; trains, evaluates, saves."""

    def __init__(self, cfg):
        self.cfg, self.device = cfg, cls_device(cfg)
        self.train_set = build_dataset(cfg, True, build_train_transform(cfg))
        self.val_set = build_dataset(cfg, False, build_test_transform(cfg))
        check_same_classes(self.train_set, self.val_set)
        self.num_classes = resolve_num_classes(cfg, self.train_set)
        self.model = build_cls_model(cfg, self.num_classes).to(self.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.sampler = self._train_sampler()
        self.iters_per_epoch = self.sampler.iters_per_epoch
        self.schedule = build_schedule(cfg, self.iters_per_epoch)
        full = cfg.SOLVER.MAX_EPOCHS * self.iters_per_epoch
        self.max_iter = min(full, cfg.SOLVER.MAX_ITER) if cfg.SOLVER.MAX_ITER > 0 else full
        self.train_loader = make_loader(cfg, self.train_set, self.sampler, self.device)
        self.val_loader = val_loader(cfg, self.val_set, self.device)
        self.files = CheckpointFiles(cfg.OUTPUT_DIR, cfg.SOLVER.MAX_TO_KEEP)
        self.writer = MetricsWriter(cfg.OUTPUT_DIR, comm.is_main_process())
        self.iteration, self.last_eval = 0, None
        self.ddp = self.model
        if comm.get_world_size() > 1:
            ids = None if self.device.type == "cpu" else [self.device.index]
            self.ddp = DistributedDataParallel(self.model, device_ids=ids, broadcast_buffers=False)

    def _train_sampler(self):
        batch = per_process(self.cfg.SOLVER.IMS_PER_BATCH, "SOLVER.IMS_PER_BATCH")
        seed = self.cfg.SEED if self.cfg.SEED >= 0 else comm.shared_random_seed()
        sampler = EpochBatchSampler(len(self.train_set), batch, rank=comm.get_rank(),
                                    world_size=comm.get_world_size(), seed=seed)
        if sampler.iters_per_epoch == 0:
            raise ConfigError("SOLVER.IMS_PER_BATCH", self.cfg.SOLVER.IMS_PER_BATCH,
                              f"at most the {len(self.train_set)} training images",
                              "No process gets one full batch per epoch.")
        return sampler

    # ---- checkpoints ----------------------------------------------------------------
    def checkpoint(self):
        """The resumable state; every process must call it (RNG states are gathered)."""
        rng = comm.all_gather(rng_state())
        ckpt = {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.schedule.state_dict(),
                "iteration": self.iteration, "epoch": self.iteration // self.iters_per_epoch,
                "iters_per_epoch": self.iters_per_epoch, "rng": rng,
                "classes": list(self.train_set.classes), "config": self.cfg.dump()}
        meta = weights_metadata(self.cfg, self.num_classes, self.iteration)
        if meta is not None:  # lets a detector's MODEL.WEIGHTS point at this file too
            ckpt.update({"matching_heuristics": True, "resnext_det": meta})
        return ckpt

    def save(self, name):
        ckpt = self.checkpoint()
        if comm.is_main_process():
            self.files.save(name, ckpt)
        comm.synchronize()

    def save_final(self):
        self.save("model_final.pth")
        meta = weights_metadata(self.cfg, self.num_classes, self.iteration)
        if meta is not None and comm.is_main_process():
            path = self.files.save_weights("model_final.pkl", self.model.state_dict(), meta)
            logger.info(f"Detection weights: {path} (use as MODEL.WEIGHTS of a detector "
                        f"with MODEL.RESNEXT.TEMPLATE {meta['template']!r})")
        comm.synchronize()

    def resume_or_load(self, resume=True):
        """Continue from the last checkpoint (resume) or start from MODEL.WEIGHTS."""
        if comm.is_main_process():
            self.files.remove_stale_temporaries()
        path, ckpt = self.files.last_readable() if resume else (None, None)
        if path is None:
            if self.cfg.MODEL.WEIGHTS:
                load_initial_weights(self.model, self.cfg.MODEL.WEIGHTS,
                                     self.cfg.MODEL.RESNEXT.BLOCK_FORM,
                                     self.cfg.MODEL.RESNEXT.WEIGHTS_TRUST_PICKLE)
            return None
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["scheduler"])
        self.iteration = ckpt["iteration"]
        if ckpt["iters_per_epoch"] != self.iters_per_epoch:
            logger.warning(f"{path} was written with {ckpt['iters_per_epoch']} iterations per "
                           f"epoch, this run has {self.iters_per_epoch} (batch size or number "
                           "of processes changed): epochs are counted anew from the iteration.")
        if len(ckpt["rng"]) == comm.get_world_size():
            set_rng_state(ckpt["rng"][comm.get_rank()])
        logger.info(f"Resumed from {path} at iteration {self.iteration} of {self.max_iter}")
        return path

    # ---- training --------------------------------------------------------------------
    def train(self):
        """Train to max_iter, evaluating per TEST.EVAL_PERIOD; returns the last evaluation."""
        c, s = self.cfg, self.cfg.SOLVER
        logger.info(f"Training {template_name(c)} ({c.MODEL.ARCH}) on {len(self.train_set)} images "
                    f"of {self.num_classes} classes: {self.iters_per_epoch} iterations/epoch of "
                    f"{s.IMS_PER_BATCH} images, {self.max_iter} iterations, "
                    f"lr {self.schedule.lr:g}")
        while self.iteration < self.max_iter:
            epoch, start = divmod(self.iteration, self.iters_per_epoch)
            self._end_epoch(epoch, self._run_epoch(epoch, start))
        if self.last_eval is None or self.last_eval["iteration"] != self.iteration:
            self._evaluate(self.iteration / self.iters_per_epoch)
        self.save_final()
        self.writer.close()
        return self.last_eval

    def _step(self, images, labels):
        lr = self.schedule.apply(self.optimizer, self.iteration)
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device)
        logits = self.ddp(images)
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at iteration {self.iteration} (lr {lr:g}); lower "
                "SOLVER.BASE_LR or add SOLVER.WARMUP_EPOCHS")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return lr, loss.item(), topk_correct(logits.detach(), labels, ks=(1,))[0]

    def _run_epoch(self, epoch, start):
        """Train epoch `epoch` from its batch `start`; returns summed loss, correct, images."""
        self.sampler.set_epoch(epoch, start)
        self.ddp.train()
        sums, began = [0.0, 0, 0], time.perf_counter()
        meter = Throughput(self.cfg.SOLVER.IMS_PER_BATCH)
        for images, labels in self.train_loader:
            lr, loss, correct = self._step(images, labels)
            sums = [sums[0] + loss * len(labels), sums[1] + correct, sums[2] + len(labels)]
            meter.step()
            if self.iteration % self.cfg.LOG_PERIOD == 0 or self.iteration == self.max_iter:
                self._log_progress(epoch, lr, loss, meter)
            period = self.cfg.SOLVER.CHECKPOINT_PERIOD
            if period and self.iteration % period == 0 and self.iteration < self.max_iter:
                self.save(f"model_{self.iteration:07d}.pth")
            if self.iteration >= self.max_iter:
                break
        return sums + [time.perf_counter() - began]

    def _log_progress(self, epoch, lr, loss, meter):
        per_iter, images_per_s = meter.read()
        eta = per_iter * (self.max_iter - self.iteration)
        in_epoch = self.iteration - epoch * self.iters_per_epoch
        logger.info(f"epoch {epoch + 1}/{self.cfg.SOLVER.MAX_EPOCHS}  iter {self.iteration}/"
                    f"{self.max_iter} ({in_epoch}/{self.iters_per_epoch})  loss {loss:.4f}  "
                    f"lr {lr:.4g}  {images_per_s:.1f} images/s  {per_iter:.3f} s/iter  "
                    f"ETA {format_eta(eta)}")
        self.writer.write("iter", self.iteration, {"epoch": epoch + 1, "loss": loss, "lr": lr,
                                                   "images_per_s": images_per_s,
                                                   "eta_s": eta})

    def _end_epoch(self, epoch, sums):
        loss_sum, correct, count = all_sum(sums[:3], self.device)
        seconds = sums[3]
        train = error_rates(loss_sum, correct, correct, count)
        done = self.iteration >= self.max_iter
        progress = self.iteration / self.iters_per_epoch
        period = self.cfg.TEST.EVAL_PERIOD
        val = self._evaluate(progress) if done or (period and (epoch + 1) % period == 0) else {}
        record = {"epoch": round(progress, 4), "lr": self.optimizer.param_groups[0]["lr"],
                  "train_loss": train["loss"], "train_top1_err": train["top1_err"],
                  "epoch_seconds": seconds, "images_per_s": count / max(seconds, 1e-9),
                  **{f"val_{k}": v for k, v in val.items() if k != "iteration"}}
        val_text = (f"; val top-1 err {val['top1_err']:.2f}%, top-5 err {val['top5_err']:.2f}%"
                    if val else "")
        logger.info(f"epoch {progress:g} done in {format_eta(seconds)} "
                    f"({record['images_per_s']:.1f} images/s): train loss {train['loss']:.4f}, "
                    f"train top-1 err {train['top1_err']:.2f}%{val_text}")
        self.writer.write("epoch", self.iteration, record)
        if not self.cfg.SOLVER.CHECKPOINT_PERIOD and not done:
            self.save(f"model_{self.iteration:07d}.pth")

    def _evaluate(self, epoch):
        result = evaluate(self.model, self.val_loader, self.device)
        logger.info(f"Evaluation at epoch {epoch:g} on {result['images']} images: top-1 error "
                    f"{result['top1_err']:.2f}%, top-5 error {result['top5_err']:.2f}%, "
                    f"loss {result['loss']:.4f}")
        self.last_eval = dict(result, iteration=self.iteration)
        return self.last_eval


def evaluate_only(cfg, resume=False):
    """Evaluate the last checkpoint (resume) or MODEL.WEIGHTS on the validation split."""
    device = cls_device(cfg)
    dataset = build_dataset(cfg, False, build_test_transform(cfg))
    model = build_cls_model(cfg, resolve_num_classes(cfg, dataset)).to(device)
    path, ckpt = CheckpointFiles(cfg.OUTPUT_DIR).last_readable() if resume else (None, None)
    if path:
        model.load_state_dict(ckpt["model"])
    elif cfg.MODEL.WEIGHTS:
        load_initial_weights(model, cfg.MODEL.WEIGHTS, cfg.MODEL.RESNEXT.BLOCK_FORM,
                             cfg.MODEL.RESNEXT.WEIGHTS_TRUST_PICKLE)
    else:
        raise ConfigError("MODEL.WEIGHTS", "", "a checkpoint to evaluate",
                          "or --resume with a checkpoint in OUTPUT_DIR.")
    result = evaluate(model, val_loader(cfg, dataset, device), device)
    logger.info(f"{path or cfg.MODEL.WEIGHTS}: top-1 error {result['top1_err']:.2f}%, "
                f"top-5 error {result['top5_err']:.2f}% on {result['images']} images")
    return result
