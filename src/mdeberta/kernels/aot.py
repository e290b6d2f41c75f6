"""Ahead-of-time compilation of the Triton kernels for a GPU this machine does not have (sm_80, sm_90, ...).

Triton compiles to a cubin without a driver (``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))``)
and its wheel ships ``cuobjdump``, which reads the registers and stack (spills) per thread; the shared memory a
launch needs is in the compiled metadata. So whether each kernel variant fits a device is checked on CPU, and the
forward's autotune configurations are pruned by the same check (:func:`prune_forward_configs`) so a GPU never tries
one that cannot launch; the backward kernels' tiles likewise, keeping only those that also do not spill registers
(:func:`backward_pruner`). Run it as ``python -m mdeberta.kernels.aot`` (a table; ``--all`` for every variant).
It needs a Triton that is *not* in interpreter mode (``TRITON_INTERPRET`` unset).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

# Dynamic shared memory per block (bytes): A100 / RTX 30 / RTX 40 / H100.
# Tiles of the interpreter and of the backward kernels (whose position-table gradients are scattered one key column
# / query row of a tile at a time, so their cost grows with the tile's width).
BLOCK = 16
# Forward tiles tried on a GPU (rows, keys, warps, stages): d = 64 wants 64-128 query rows per program; the ones a
# device and dtype cannot launch are pruned (prune_forward_configs).
FORWARD_TILES = ((128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 3), (32, 32, 4, 2))
# Backward tiles (query rows, keys, warps, stages), largest first, BLOCK x BLOCK last: each kernel scatters its
# position-table gradient one tile column (dq: a key) or row (dk/dv: a query) at a time, so its own block grows the
# cheap side (dq: more query rows, dk/dv: more keys). On a GPU the ones that fit *without spilling* (sm_80 / sm_90,
# d = 64, compiled here: dq 32 x 16 and 32 x 32 for bf16 on both, 64 x 16 / 64 x 32 on sm_90; dk/dv 16 x 32 on
# both) are autotuned; BLOCK x BLOCK is the fallback that is always kept.
BACKWARD_TILES = {
    "bwd_dq": ((64, 32, 4, 1), (64, 16, 4, 1), (32, 32, 4, 1), (32, 16, 4, 1), (BLOCK, BLOCK, 4, 1)),
    "bwd_dkdv": ((32, 32, 4, 1), (16, 32, 4, 1), (BLOCK, BLOCK, 4, 1)),
}
SHARED_LIMITS = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
MAX_REGISTERS = 255
DTYPES = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class Variant:
    kernel: str  # fwd | bwd_dq | bwd_dkdv
    dtype: str  # fp32 | bf16 | fp16
    head_size: int
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    dropout: bool = False
    varlen: bool = False


@dataclass(frozen=True)
class Resources:
    registers: int
    stack: int  # bytes per thread: spilled registers live there
    shared: int  # bytes of dynamic shared memory per block

    def fits(self, capability: int) -> bool:
        return self.shared <= SHARED_LIMITS.get(capability, min(SHARED_LIMITS.values())) and (
            self.registers <= MAX_REGISTERS)


def _signature(variant: Variant) -> dict[str, str]:
    t = "*" + DTYPES[variant.dtype]
    common = {"Q": t, "K": t, "V": t, "C2P": t, "P2C": t, "DIST": "*i32", "TOK": "*i32", "CU": "*i32"}
    scalars = {"H": "i32", "L": "i32", "R": "i32", "scale": "fp32", "seed": "i64", "dropout_p": "fp32",
               "BUCKET": "i32"}  # BUCKET: only the autotuners' length key
    flags = {name: "constexpr" for name in ("D", "BM", "BN", "DROPOUT", "VARLEN")}
    if variant.kernel == "fwd":
        outs = {"O": t, "LSE": "*fp32"}
    elif variant.kernel == "bwd_dq":
        outs = {"DO": t, "LSE": "*fp32", "DELTA": "*fp32", "DQ": t, "DC2P": t}
    else:
        outs = {"DO": t, "LSE": "*fp32", "DELTA": "*fp32", "DK": t, "DV": t, "DP2C": t}
    return {**common, **outs, **scalars, **flags}


def _cuobjdump() -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


@functools.cache
def compile_variant(variant: Variant, capability: int = 90) -> Resources:
    """Compile one kernel variant for ``sm_<capability>``; raises what the compiler raises (e.g. out of resources)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("ahead-of-time compilation needs TRITON_INTERPRET unset (the interpreter compiles nothing)")
    from mdeberta.kernels import _triton_kernels as kernels

    fn = getattr(kernels, f"_{variant.kernel}")
    constexprs = {"D": variant.head_size, "BM": variant.block_m, "BN": variant.block_n, "DROPOUT": variant.dropout,
                  "VARLEN": variant.varlen}
    compiled = triton.compile(ASTSource(fn=fn, signature=_signature(variant), constexprs=constexprs),
                              target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": variant.num_warps, "num_stages": variant.num_stages})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([_cuobjdump(), "--dump-resource-usage", f.name], capture_output=True, text=True,
                               check=True).stdout
    registers = int(re.search(r"REG:(\d+)", usage).group(1))
    stack = int(re.search(r"STACK:(\d+)", usage).group(1))
    return Resources(registers, stack, int(compiled.metadata.shared))


def forward_variants(head_size: int = 64, dtypes=("fp32", "bf16", "fp16")) -> list[Variant]:

    return [Variant("fwd", dt, head_size, bm, bn, w, st, dropout, varlen)
            for (bm, bn, w, st), dt, dropout, varlen in itertools.product(FORWARD_TILES, dtypes, (False, True),
                                                                          (False, True))]


def backward_variants(head_size: int = 64, dtypes=("fp32", "bf16", "fp16")) -> list[Variant]:

    return [Variant(kernel, dt, head_size, bm, bn, w, st, dropout, varlen)
            for kernel in ("bwd_dq", "bwd_dkdv") for (bm, bn, w, st), dt, dropout, varlen in itertools.product(
                BACKWARD_TILES[kernel], dtypes, (False, True), (False, True))]


def fitting_configs(configs: list, capability: int, dtype: str, head_size: int, dropout: bool = False,
                    varlen: bool = False, kernel: str = "fwd", spill_free: bool = False) -> list:
    """The autotune configs of ``kernel`` whose compiled kernel fits ``sm_<capability>`` (registers, shared memory;
    with ``spill_free`` also no spilled registers); at least the last one (the tiles are listed largest first)."""
    kept = []
    for config in configs:
        variant = Variant(kernel, dtype, head_size, config.kwargs["BM"], config.kwargs["BN"], config.num_warps,
                          config.num_stages, dropout, varlen)
        try:
            resources = compile_variant(variant, capability)
        except Exception:  # noqa: BLE001  (a variant the compiler refuses cannot launch either)
            continue
        if resources.fits(capability) and not (spill_free and resources.stack > 0):
            kept.append(config)
    return kept or configs[-1:]


def _device_case(named_args: dict, kwargs: dict) -> tuple[int, str, int, bool, bool] | None:
    """(capability, dtype, head size, dropout, varlen) of an autotuned launch on a CUDA device, else None."""
    import torch

    query = named_args.get("Q")
    if query is None or not getattr(query, "is_cuda", False):
        return None
    major, minor = torch.cuda.get_device_capability(query.device)
    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[query.dtype]
    return (10 * major + minor, dtype, int(kwargs.get("D", query.shape[-1])), bool(kwargs.get("DROPOUT", False)),
            bool(kwargs.get("VARLEN", False)))


def prune_forward_configs(configs: list, named_args: dict, **kwargs) -> list:
    """``prune_configs_by={"early_config_prune": ...}`` of the forward's autotuner: only the tiles that fit this
    GPU's shared memory for this dtype and head size are tried (fp32 128 x 64 needs 197 KB, an A100 has 163 KB)."""
    case = _device_case(named_args, kwargs)
    return configs if case is None else fitting_configs(configs, *case)


def backward_pruner(kernel: str):
    """The ``early_config_prune`` of a backward kernel's autotuner: the tiles that fit this GPU without spills."""

    def prune(configs: list, named_args: dict, **kwargs) -> list:
        case = _device_case(named_args, kwargs)
        return configs if case is None else fitting_configs(configs, *case, kernel=kernel, spill_free=True)

    return prune


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capabilities", type=int, nargs="+", default=[80, 90])
    p.add_argument("--head-size", type=int, default=64)
    p.add_argument("--all", action="store_true", help="every dtype, dropout and varlen variant (else bf16 only)")
    a = p.parse_args(argv)
    dtypes = ("fp32", "bf16", "fp16") if a.all else ("bf16",)
    variants = forward_variants(a.head_size, dtypes) + backward_variants(a.head_size, dtypes)
    print("| sm | kernel | dtype | tile | warps/stages | dropout | varlen | regs | stack B | shared B | fits |")
    print("|---|---|---|---|---|---|---|---:|---:|---:|---|")
    for cc in a.capabilities:
        for v in variants:
            try:
                r = compile_variant(v, cc)
                line = f"{r.registers} | {r.stack} | {r.shared} | {'yes' if r.fits(cc) else 'no'}"
            except Exception as e:  # noqa: BLE001
                line = f"– | – | – | error: {type(e).__name__}"
            print(f"| {cc} | {v.kernel} | {v.dtype} | {v.block_m}x{v.block_n} | {v.num_warps}/{v.num_stages} | "
                  f"{v.dropout} | {v.varlen} | {line} |")
    return 0


__all__ = ["BACKWARD_TILES", "SHARED_LIMITS", "Resources", "Variant", "backward_pruner", "compile_variant",
           "fitting_configs", "prune_forward_configs"]

if __name__ == "__main__":
    raise SystemExit(main())
