"""Deterministic, resumable data order: the batches of an epoch depend on (seed, epoch) only.

A run resumed at iteration i of an epoch skips exactly the i batches it had already
trained on, without reading them, and sees the rest in the same order.
"""
import torch
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler):
    """This process's batches of one epoch: a shuffled permutation, split over processes.

    The permutation (seeded by seed + epoch) is padded to a multiple of the number of
    processes by repeating its start, process r takes every world-th index from r, and
    its last incomplete batch is dropped; every process then runs the same number of
    iterations per epoch.
    """

    def __init__(self, size, batch_size, *, rank=0, world_size=1, seed=0, shuffle=True):
        self.size, self.batch_size, self.shuffle = size, batch_size, shuffle
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.per_process = -(-size // world_size)
        self.iters_per_epoch = self.per_process // batch_size
        self.epoch, self.start_iter = 0, 0

    def set_epoch(self, epoch, start_iter=0):
        """Iterate epoch `epoch` from its batch `start_iter` on."""
        self.epoch, self.start_iter = epoch, start_iter

    def indices(self):
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=gen).tolist()
        else:
            order = list(range(self.size))
        order += order[:self.per_process * self.world_size - self.size]
        return order[self.rank::self.world_size]

    def __iter__(self):
        mine = self.indices()
        for i in range(self.start_iter, self.iters_per_epoch):
            yield mine[i * self.batch_size:(i + 1) * self.batch_size]

    def __len__(self):
        return self.iters_per_epoch - self.start_iter


class ShardBatchSampler(Sampler):
    """Evaluation batches: process r gets indices r, r + world, ...; nothing repeated or dropped."""

    def __init__(self, size, batch_size, *, rank=0, world_size=1):
        self.mine = list(range(rank, size, world_size))
        self.batch_size = batch_size

    def __iter__(self):
        for start in range(0, len(self.mine), self.batch_size):
            yield self.mine[start:start + self.batch_size]

    def __len__(self):
        return -(-len(self.mine) // self.batch_size)
