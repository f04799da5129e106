"""Where a script runs: the device, mixed precision, and this process's place in a torchrun job.

    with runtime.processes("cuda") as procs:     # one process, or a DDP group under torchrun
        ... procs.device, procs.rank, procs.world, procs.is_main, procs.sum([...]), procs.barrier(),
        procs.main_only(work)

torchrun sets WORLD_SIZE / RANK / LOCAL_RANK; each process takes the GPU of its LOCAL_RANK.
Training joins a process group (NCCL on GPUs, gloo on CPU); inference only shards its videos.
"""
import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from utils import ASVFIError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class StoppedOnMain(ASVFIError):
    """What the other processes raise when work only process 0 did stopped the job."""


def pick_device(name=None):
    """`--device` value → torch.device; default CUDA when present; under torchrun, the LOCAL_RANK GPU."""
    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ASVFIError(f"--device {name}: not a device name torch knows; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ASVFIError(f"--device {name}: ASVFI runs on cpu or cuda (cuda:N), not {device.type}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ASVFIError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def autocast(device, amp):
    """Mixed precision for `--amp bf16|fp16` on CUDA; a no-op without --amp or on another device."""
    return torch.autocast(device.type, dtype=AMP_DTYPES.get(amp, torch.bfloat16),
                          enabled=bool(amp) and device.type == "cuda")


def noise_generators(keys, device):
    """One generator on `device` per window, seeded by its key only (a tuple of ints: the seed and what
    names the window, e.g. (seed, index) or (seed, epoch, index)): the noise a sampling model (PerVFI)
    draws for a window is then the same in any batch, order or number of processes."""
    return [torch.Generator(device=device).manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))
            for key in keys]


@dataclass(frozen=True)
class Processes:
    """This process's device and place in a job (rank 0 of 1 without torchrun)."""
    device: torch.device = torch.device("cpu")
    rank: int = 0
    world: int = 1
    grouped: bool = False  # joined a torch.distributed process group (collectives work)

    @property
    def is_main(self):
        return self.rank == 0

    def shard(self, items):
        """This process's share of a list (every world-th item from its rank)."""
        return items[self.rank::self.world]

    def barrier(self):
        if self.grouped:
            dist.barrier()

    def main_only(self, work, *args):
        """`work(*args)` on process 0 while the others wait. An ASVFIError there stops every process:
        process 0 with its message, the others with one line pointing to it (left waiting in their
        next collective, they would fail with a lost-connection traceback that hides the cause)."""
        error = None
        if self.is_main:
            try:
                work(*args)
            except ASVFIError as raised:
                error = raised
        if self.sum([float(error is not None)])[0]:
            raise error or StoppedOnMain(f"process {self.rank}: process 0 stopped the job (its error says why)")

    def sum(self, values):
        """Element-wise sum of a list of floats over all processes."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.grouped:
            dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, obj):
        if not self.grouped:
            return [obj]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered


@contextlib.contextmanager
def processes(device_name=None, join_group=True):
    """Processes of this run; under torchrun with join_group, a process group for the block's duration."""
    device = pick_device(device_name)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    # Under torchrun (WORLD_SIZE set) the group is joined even with one process, so that
    # `torchrun --nproc_per_node=1` runs the same DDP/NCCL path as a multi-GPU job.
    grouped = join_group and "WORLD_SIZE" in os.environ
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if grouped:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Processes(device, rank, world, grouped)
    finally:
        if grouped:
            dist.destroy_process_group()
