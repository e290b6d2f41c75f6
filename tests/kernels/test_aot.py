"""The Triton kernels compile ahead of time for sm_80 and sm_90 on this CPU-only machine and fit their limits; the
forward's autotune configs are pruned by the same check (issue 20, item 3). Compilation cannot run under the
interpreter, so each check runs in a subprocess without TRITON_INTERPRET."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)


def _run(code: str) -> object:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, env=env)
    if done.returncode != 0 and "cuobjdump" in done.stderr and "No such file" in done.stderr:
        pytest.skip("this triton wheel ships no cuobjdump")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_small_subset_compiles_and_fits():
    result = _run("""
import json
from mdeberta.kernels.aot import Variant, compile_variant
out = {}
for cc in (80, 90):
    for v in (Variant("fwd", "bf16", 64, 64, 64, 4, 2), Variant("fwd", "fp32", 64, 128, 64, 8, 2),
              Variant("bwd_dq", "bf16", 64, 16, 16, 4, 1, dropout=True),
              Variant("bwd_dkdv", "fp16", 64, 16, 16, 4, 1, varlen=True)):
        r = compile_variant(v, cc)
        out[f"{cc}/{v.kernel}/{v.dtype}/{v.block_m}"] = [r.registers, r.shared, r.fits(cc)]
print(json.dumps(out))
""")
    assert all(regs <= 255 for regs, _, _ in result.values())
    # fp32 128 x 64 needs 197 KB: more than an A100's 163 KB, less than an H100's 227 KB.
    assert result["80/fwd/fp32/128"][2] is False and result["90/fwd/fp32/128"][2] is True
    assert all(fits for key, (_, _, fits) in result.items() if key != "80/fwd/fp32/128")


def test_autotune_configs_are_pruned_per_device_and_dtype():
    result = _run("""
import json, triton
from mdeberta.kernels.aot import fitting_configs
from mdeberta.kernels.triton_attention import FORWARD_TILES
configs = [triton.Config({"BM": bm, "BN": bn}, num_warps=w, num_stages=st) for bm, bn, w, st in FORWARD_TILES]
tiles = lambda cs: [[c.kwargs["BM"], c.kwargs["BN"]] for c in cs]
print(json.dumps({"80/fp32": tiles(fitting_configs(configs, 80, "fp32", 64)),
                  "90/fp32": tiles(fitting_configs(configs, 90, "fp32", 64)),
                  "80/bf16": tiles(fitting_configs(configs, 80, "bf16", 64))}))
""")
    assert [128, 64] not in result["80/fp32"] and result["80/fp32"]  # cannot launch there: never tried
    assert [128, 64] in result["90/fp32"] and [128, 64] in result["80/bf16"]


_BACKWARD_PRUNING = """
import json, triton
from mdeberta.kernels.aot import BACKWARD_TILES, Variant, compile_variant, fitting_configs
out = []
for kernel, cc, dtype in CASES:
    tiles = BACKWARD_TILES[kernel]
    configs = [triton.Config({"BM": bm, "BN": bn}, num_warps=w, num_stages=st) for bm, bn, w, st in tiles]
    resources = [compile_variant(Variant(kernel, dtype, 64, bm, bn, w, st, dropout=True), cc)
                 for bm, bn, w, st in tiles]
    clean = [[t[0], t[1]] for t, r in zip(tiles, resources) if r.fits(cc) and r.stack == 0]
    kept = [[c.kwargs["BM"], c.kwargs["BN"]] for c in fitting_configs(configs, cc, dtype, 64, True, False,
                                                                      kernel=kernel, spill_free=True)]
    out.append([kernel, cc, dtype, clean, kept, [[t[0], t[1]] for t in tiles]])
print(json.dumps(out))
"""


def _check_backward_pruning(result: list) -> None:
    for kernel, cc, dtype, clean, kept, tiles in result:
        assert kept == (clean or tiles[-1:]), (kernel, cc, dtype)  # exactly the spill-free fits, else the fallback


def test_backward_tiles_are_pruned_to_those_that_do_not_spill():
    """The backward's autotuner tries only tiles that compile for the device without spilled registers: on sm_90
    in bf16 with dropout, dk/dv's 32 x 32 and 16 x 32 (its 16 x 16 spills 8 bytes: dropped)."""
    result = _run("CASES = [('bwd_dkdv', 90, 'bf16')]" + _BACKWARD_PRUNING)
    _check_backward_pruning(result)
    assert [t for t in result[0][4] if t != [16, 16]]  # a larger tile than the interpreter's survives


@pytest.mark.slow
def test_every_backward_kernel_tile_is_pruned_exactly_on_both_devices():
    result = _run("CASES = [(k, cc, dt) for k in ('bwd_dq', 'bwd_dkdv') for cc in (80, 90) "
                  "for dt in ('fp32', 'bf16', 'fp16')]" + _BACKWARD_PRUNING)
    _check_backward_pruning(result)
    assert all(kept for *_, kept, _ in result)


@pytest.mark.slow
def test_every_variant_compiles_for_sm80_and_sm90():
    """Every variant compiles (no compiler error), every backward kernel fits both devices, and for every forward
    case the pruned autotune list is exactly the tiles that fit (never empty)."""
    result = _run("""
import json, triton
from mdeberta.kernels.aot import BLOCK, backward_variants, compile_variant, fitting_configs, forward_variants
from mdeberta.kernels.triton_attention import FORWARD_TILES
configs = [triton.Config({"BM": bm, "BN": bn}, num_warps=w, num_stages=st) for bm, bn, w, st in FORWARD_TILES]
out = {"backward_misfits": [], "forward": []}
for cc in (80, 90):
    for v in backward_variants():  # the default tiles here; the others: the backward pruning tests
        if (v.block_m, v.block_n) == (BLOCK, BLOCK) and not compile_variant(v, cc).fits(cc):
            out["backward_misfits"].append([cc, v.kernel, v.dtype])
    for dtype in ("fp32", "bf16", "fp16"):
        for dropout in (False, True):
            for varlen in (False, True):
                fit = [[v.block_m, v.block_n] for v in forward_variants(64, (dtype,))
                       if v.dropout == dropout and v.varlen == varlen and compile_variant(v, cc).fits(cc)]
                kept = [[c.kwargs["BM"], c.kwargs["BN"]] for c in fitting_configs(configs, cc, dtype, 64, dropout,
                                                                                   varlen)]
                out["forward"].append([cc, dtype, dropout, varlen, fit, kept])
print(json.dumps(out))
""")
    assert result["backward_misfits"] == []
    for cc, dtype, dropout, varlen, fit, kept in result["forward"]:
        assert kept and kept == (fit or kept), (cc, dtype, dropout, varlen)
    fp32_a100 = [f for cc, dtype, _, _, f, _ in result["forward"] if cc == 80 and dtype == "fp32"]
    assert all([128, 64] not in f for f in fp32_a100)
