"""One process or many: the same code runs plainly or under ``torchrun`` (DDP, or FSDP2 for large models).

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything degrades to a single process and
the collective helpers become no-ops, so recipes never branch on "am I distributed?".
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mdeberta.errors import UsageError

STRATEGIES = ("ddp", "fsdp")


@dataclass
class DistributedEnv:
    """Where this process sits: ``rank`` among ``world_size``, its ``device``; ``is_main`` logs and saves."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average a dict of floats over ranks (same keys on every rank)."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return {k: v / self.world_size for k, v in zip(keys, t.tolist())}

    def any_true(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on any rank (keeps skip decisions consistent)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def any_true_tensor(self, flag: torch.Tensor) -> bool:
        """``any_true`` for a 0-d device tensor (nonzero = true): one all-reduce and one host read."""
        if self.distributed:
            flag = flag.to(self._comm_device, dtype=torch.float32).reshape(1)
            dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def broadcast_object(self, obj: object) -> object:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.is_initialized() and dist.get_backend() == "nccl" else torch.device("cpu")


def init_distributed(device: str | None = None, backend: str | None = None, timeout_s: int = 1800) -> DistributedEnv:
    """Join the process group when launched by torchrun (NCCL on GPU, gloo on CPU) and pick the device.

    ``device``: "cpu", "cuda" or None (CUDA when available). Under torchrun each process takes GPU LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("device 'cuda' requested but CUDA is not available; use --device cpu")
        dev = torch.device("cuda", local_rank if world_size > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise UsageError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=dev if dev.type == "cuda" else None)
    return DistributedEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def configure_cpu_threads(env: DistributedEnv, data_workers: int = 0) -> int:
    """On CPU, give each training process its share of the cores minus those its DataLoader workers need.

    OpenMP threads spin-wait: on a small machine, intra-op threads next to a busy tokenizing worker slow every
    small matmul down many times over. An explicit OMP_NUM_THREADS always wins. Returns the thread count.
    """
    if env.device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))
    threads = max(1, (os.cpu_count() or 1) // max(1, local_world) - data_workers)
    torch.set_num_threads(threads)
    return threads


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def fsdp_mixed_precision(env: DistributedEnv, precision: str) -> Any:
    """FSDP2's policy for a bf16 run on CUDA: parameters all-gathered and computed in bf16, gradients reduced in
    fp32 (the sharded master weights and the optimizer stay fp32). None otherwise: on CPU (gloo) the run keeps fp32
    parameters and bf16 autocast does the compute, as in a single process."""
    if env.device.type != "cuda" or precision != "bf16":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def wrap_model(model: nn.Module, env: DistributedEnv, strategy: str = "ddp", precision: str = "fp32") -> nn.Module:
    """DDP (every rank holds the full model) or FSDP2 ``fully_shard`` (parameters sharded per layer; with
    ``precision="bf16"`` on CUDA, :func:`fsdp_mixed_precision`).

    A single process gets the model back unchanged. The wrapper is what the step function calls; the
    unwrapped model is what checkpoints and exports read (see :func:`unwrap_model`).
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"distributed strategy {strategy!r}; allowed: {list(STRATEGIES)}")
    if not env.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [env.device.index] if env.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    policy = fsdp_mixed_precision(env, precision)
    options = {"mp_policy": policy} if policy is not None else {}
    # Shard each transformer layer, then the root (embeddings and heads), as the FSDP2 docs recommend.
    for module in model.modules():
        if type(module).__name__ == "DebertaLayer":
            fully_shard(module, **options)
    fully_shard(model, **options)
    return model


def _fsdp_modules(model: nn.Module) -> list[nn.Module]:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def full_parameters(model: nn.Module) -> Iterator[None]:
    """Inside, an FSDP2 model's parameters are whole tensors (all-gathered; collective: every rank enters), so code
    that reads a parameter directly (the health metrics' embedding lookup) works as on one process. A no-op for
    plain and DDP models."""
    modules = _fsdp_modules(model)
    for m in modules:
        m.unshard()
    try:
        yield
    finally:
        for m in modules:
            m.reshard()


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict (FSDP2: gathered to rank 0's CPU memory, other ranks get {}; collective), else
    ``model.state_dict()``."""
    if not _fsdp_modules(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def unwrap_model(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def is_fsdp(model: nn.Module) -> bool:
    return any(type(m).__name__.startswith("FSDP") for m in [model])
