"""The CPU backends (cache-tiled, fused SDPA) and the compact/cached position tables against the reference."""

from __future__ import annotations

import pytest
import torch

import mdeberta
from mdeberta.config import preset
from mdeberta.kernels import cpu_attention, select_backend
from mdeberta.kernels.cpu_attention import blocked_attention, distance_slots, sdpa_attention
from mdeberta.model.attention import (
    compact_relative_position_slots,
    reference_attention,
    relative_position_slots,
)

# (position_buckets, max_relative_positions): mDeBERTa's log buckets, few buckets, plain clamped distances (V1/V2).
SLOT_CONFIGS = {"v3": (256, -1), "few-buckets": (8, 32), "no-buckets": (-1, 24)}
BACKENDS = {"sdpa": sdpa_attention, "blocked": blocked_attention}


def config(slot_config: str, **kw):
    buckets, max_rel = SLOT_CONFIGS[slot_config]
    return preset("deberta-v3-micro", position_buckets=buckets, max_relative_positions=max_rel,
                  max_position_embeddings=512, **kw)


def inputs(batch, heads, length, d, rows, dtype=torch.float32, seed=0, pad=True):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, length, d, generator=g, dtype=dtype) for _ in range(3))
    pk, pq = (torch.randn(heads, rows, d, generator=g, dtype=dtype) for _ in range(2))
    token = torch.ones(batch, length, dtype=torch.bool)
    if pad:
        for b in range(1, batch):
            token[b, max(1, length - (length * b) // (batch + 1)):] = False
    return q, k, v, pk, pq, token[:, None, :, None] & token[:, None, None, :]


@pytest.mark.parametrize("slot_config", list(SLOT_CONFIGS))
@pytest.mark.parametrize("length", [1, 5, 64, 130, 600])
@pytest.mark.parametrize("terms", ["both", "c2p", "p2c", "none"])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_fast_backends_match_reference_fp32(slot_config, length, terms, backend):
    rows, slots = compact_relative_position_slots(length, length, config(slot_config))
    q, k, v, pk, pq, mask = inputs(3, 2, length, 8, len(rows), seed=length)
    pk = pk if terms in ("both", "c2p") else None
    pq = pq if terms in ("both", "p2c") else None
    ref, _ = reference_attention(q, k, v, pk, pq, slots, mask, 0.2)
    out, probs = BACKENDS[backend](q, k, v, pk, pq, slots, mask, 0.2)
    assert probs is None
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("length", [64, 600])
def test_gather_and_distance_paths_agree(monkeypatch, length):
    """Both ways of reading c2p/p2c (strided distance view, slot gather) give the reference result."""
    rows, slots = compact_relative_position_slots(length, length, config("v3"))
    q, k, v, pk, pq, mask = inputs(2, 2, length, 8, len(rows), seed=1)
    ref, _ = reference_attention(q, k, v, pk, pq, slots, mask, 0.3)
    for threshold in (0.0, 1e9):  # 0: always gather; huge: always distance tables
        monkeypatch.setattr(cpu_attention, "GATHER_THRESHOLD", threshold)
        out, _ = sdpa_attention(q, k, v, pk, pq, slots, mask, 0.3)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_full_and_compact_tables_give_the_same_scores():
    cfg = config("v3")
    length = 130
    full = relative_position_slots(length, length, cfg)
    rows, compact = compact_relative_position_slots(length, length, cfg)
    assert len(rows) == 2 * length - 1 < 2 * cfg.relative_span
    assert torch.equal(rows[compact], full)
    q, k, v, pk, pq, mask = inputs(2, 2, length, 8, 2 * cfg.relative_span, seed=2)
    ref, _ = reference_attention(q, k, v, pk, pq, full, mask, 0.2)
    out, _ = sdpa_attention(q, k, v, pk[:, rows], pq[:, rows], compact, mask, 0.2)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_non_toeplitz_slots_still_exact(backend):
    length, rows = 12, 10
    slots = torch.randint(0, rows, (length, length), generator=torch.Generator().manual_seed(0))
    assert distance_slots(slots) is None
    q, k, v, pk, pq, mask = inputs(2, 2, length, 4, rows)
    ref, _ = reference_attention(q, k, v, pk, pq, slots, mask, 0.5)
    out, _ = BACKENDS[backend](q, k, v, pk, pq, slots, mask, 0.5)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("length", [40, 600])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_fast_backends_bf16_within_2e2_relative(length, backend):
    rows, slots = compact_relative_position_slots(length, length, config("v3"))
    q, k, v, pk, pq, mask = inputs(2, 2, length, 16, len(rows), seed=3)
    ref, _ = reference_attention(q, k, v, pk, pq, slots, mask, 0.25)
    out, _ = BACKENDS[backend](*(t.bfloat16() for t in (q, k, v, pk, pq)), slots, mask, 0.25)
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).norm() / ref.norm()
    assert err < 2e-2, err


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_gradients_match_reference(backend, monkeypatch):
    length = 33
    monkeypatch.setattr(cpu_attention, "TILE_BYTES", 3 * length * 8 * 16)  # blocked: 16-row blocks, 1 head per tile
    rows, slots = compact_relative_position_slots(length, length, config("few-buckets"))
    base = inputs(2, 2, length, 8, len(rows), dtype=torch.float64, seed=4)
    grads = []
    for fn in (reference_attention, BACKENDS[backend]):
        leaves = [t.clone().requires_grad_() for t in base[:5]]
        out, _ = fn(*leaves, slots, base[5], 0.2)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_output_attentions_falls_back_to_reference_probabilities(backend):
    length = 9
    rows, slots = compact_relative_position_slots(length, length, config("v3"))
    q, k, v, pk, pq, mask = inputs(2, 2, length, 4, len(rows))
    _, ref_probs = reference_attention(q, k, v, pk, pq, slots, mask, 0.5, output_attentions=True)
    _, probs = BACKENDS[backend](q, k, v, pk, pq, slots, mask, 0.5, output_attentions=True)
    torch.testing.assert_close(probs, ref_probs)


@pytest.mark.parametrize("tile_bytes", [1, 3 * 100 * 4 * 70, 3 * 100 * 100 * 4 * 3, 3 * 100 * 100 * 4 * 5, 1 << 30])
def test_blocked_tiles_cover_every_row_head_and_batch(monkeypatch, tile_bytes):
    """Row blocks (incl. a ragged last one), head groups, several batch rows per tile, one tile: all exact."""
    monkeypatch.setattr(cpu_attention, "TILE_BYTES", tile_bytes)
    length = 100
    tiles, rows = cpu_attention._tiles(3, 4, length, 4)
    covered = {(b, h) for b0, b1, h0, h1 in tiles for b in range(b0, b1) for h in range(h0, h1)}
    assert covered == {(b, h) for b in range(3) for h in range(4)} and len(tiles) == len(set(tiles))
    rows_, slots = compact_relative_position_slots(length, length, config("v3"))
    q, k, v, pk, pq, mask = inputs(3, 4, length, 8, len(rows_), seed=7)
    ref, _ = reference_attention(q, k, v, pk, pq, slots, mask, 0.2)
    out, _ = blocked_attention(q, k, v, pk, pq, slots, mask, 0.2)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    if tile_bytes == 1:
        assert rows == 64 and len(tiles) == 12  # 2 row blocks (64 + 36) per (batch, head)
    if tile_bytes == 1 << 30:
        assert rows == length and tiles == [(0, 3, 0, 4)]


def test_blocked_dropout_keeps_the_expectation():
    """With dropout the probabilities are rescaled by 1/(1-p): averaged over many draws, the output is unchanged."""
    length = 20
    rows, slots = compact_relative_position_slots(length, length, config("v3"))
    q, k, v, pk, pq, mask = inputs(1, 2, length, 8, len(rows), seed=8, pad=False)
    ref, _ = reference_attention(q, k, v, pk, pq, slots, mask, 0.3)
    torch.manual_seed(0)
    draws = torch.stack([blocked_attention(q, k, v, pk, pq, slots, mask, 0.3, dropout_p=0.5)[0] for _ in range(400)])
    assert not torch.allclose(draws[0], ref, atol=1e-3)  # dropout is applied
    torch.testing.assert_close(draws.mean(0), ref, rtol=0, atol=0.15)


def test_auto_backend_on_cpu_is_the_tiled_path():
    assert select_backend(torch.zeros(1)) is blocked_attention
    assert select_backend(torch.zeros(1, requires_grad=True)) is blocked_attention
    model = mdeberta.DebertaModel(config("v3"))
    assert {m.backend for m in model.modules() if hasattr(m, "position_projections")} == {"auto"}


# --------------------------------------------------------------------------- whole model
def perturbed(model_cls, cfg, seed=0):
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def padded_batch(vocab, batch, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    for b in range(1, batch):
        keep = max(1, length - (length * b) // (batch + 1))
        mask[b, keep:] = 0
        ids[b, keep:] = 0
    return ids, mask


@pytest.mark.parametrize("slot_config", list(SLOT_CONFIGS))
@pytest.mark.parametrize("length", [17, 530])
def test_model_fast_path_equals_reference_backend(slot_config, length):
    cfg = config(slot_config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = perturbed(mdeberta.DebertaModel, cfg)
    ids, mask = padded_batch(cfg.vocab_size, 3, length)
    with torch.no_grad():
        fast = model(ids, mask).last_hidden_state
        model.set_attention_backend("reference")
        ref = model(ids, mask).last_hidden_state
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)


def test_model_fast_path_gradients_and_emd_head():
    cfg = config("v3", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, enhanced_mask_decoder=True)
    model = perturbed(mdeberta.DebertaForMaskedLM, cfg).train()
    ids, mask = padded_batch(cfg.vocab_size, 2, 24)
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.3, ids, -100)
    results = []
    for backend in ("auto", "reference"):
        model.set_attention_backend(backend)
        model.zero_grad()
        out = model(ids, mask, labels=labels)
        out.loss.backward()
        results.append((out.logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- projection cache
def count_projections(model):
    calls = []
    for m in model.modules():
        if hasattr(m, "_position_projections"):
            original = m._position_projections

            def wrapped(rel, original=original):
                calls.append(1)
                return original(rel)

            m._position_projections = wrapped
    return calls


def test_position_projections_cached_at_inference_and_invalidated_on_weight_change():
    cfg = config("v3", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = perturbed(mdeberta.DebertaModel, cfg)
    layers = cfg.num_hidden_layers
    calls = count_projections(model)
    ids, mask = padded_batch(cfg.vocab_size, 2, 20)
    with torch.inference_mode():
        first = model(ids, mask).last_hidden_state
        assert len(calls) == layers
        again = model(ids[:1], mask[:1]).last_hidden_state  # same length, other batch: cache hit
        assert len(calls) == layers
        torch.testing.assert_close(again, first[:1])
        model(ids[:, :10], mask[:, :10])  # another length: new entry
        assert len(calls) == 2 * layers
    # An in-place weight change (as an optimizer step) must miss the cache.
    with torch.no_grad():
        model.encoder.layer[0].attention.self.key_proj.weight.mul_(1.5)
        model.encoder.rel_embeddings.weight.add_(0.1)
        changed = model(ids, mask).last_hidden_state
    assert len(calls) == 3 * layers
    model.set_attention_backend("reference")
    fresh = perturbed(mdeberta.DebertaModel, cfg)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(changed, fresh(ids, mask).last_hidden_state, rtol=0, atol=1e-5)
    # Training mode and autograd never use (and clear) the cache.
    model.set_attention_backend("auto")
    model.train()
    model(ids, mask)
    model(ids, mask)
    assert len(calls) == 5 * layers
    assert all(not m._pos_cache for m in model.modules() if hasattr(m, "_pos_cache"))


def test_cache_respects_autocast_dtype():
    cfg = config("v3", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = perturbed(mdeberta.DebertaModel, cfg)
    ids, mask = padded_batch(cfg.vocab_size, 2, 20)
    with torch.inference_mode():
        fp32 = model(ids, mask).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(ids, mask).last_hidden_state
        again = model(ids, mask).last_hidden_state
    assert torch.equal(again, fp32)
    assert (bf16.float() - fp32).abs().max() > 0  # the bf16 run did not reuse fp32 tables (or vice versa)
    assert (bf16.float() - fp32).norm() / fp32.norm() < 2e-2


def test_training_after_inference_mode_call():
    """Slot tables are cached across calls; one built under inference_mode must still work with autograd."""
    cfg = config("v3", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = perturbed(mdeberta.DebertaModel, cfg)
    ids, mask = padded_batch(cfg.vocab_size, 2, 23)
    with torch.inference_mode():
        model(ids, mask)
    for backend in ("auto", "reference"):
        model.set_attention_backend(backend)
        model.train()
        model(ids, mask).last_hidden_state.sum().backward()
