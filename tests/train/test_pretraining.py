"""RTD model: GDES / ES gradient routing, replacement sampling, export merging."""

from __future__ import annotations

import pytest
import torch

from mdeberta.config import preset
from mdeberta.train.pretraining import build_rtd_model, generator_config, rtd_step

V = 50


def _batch(seed: int = 0, length: int = 24):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, V - 1, (2, length), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2
    labels = torch.full_like(ids, -100)
    labels[:, 3:8] = ids[:, 3:8]
    inputs = ids.clone()
    inputs[:, 3:8] = V - 1
    return {"input_ids": inputs, "labels": labels, "attention_mask": torch.ones_like(ids),
            "sample_noise": torch.rand(2, length, generator=g)}


def _model(sharing: str):
    torch.manual_seed(0)
    return build_rtd_model(preset("deberta-v3-micro", vocab_size=V), embedding_sharing=sharing)


def test_generator_config_is_half_depth_with_emd():
    cfg = preset("deberta-v3-tiny", vocab_size=V)
    gen = generator_config(cfg)
    assert gen.num_hidden_layers == 2 and gen.hidden_size == cfg.hidden_size and gen.enhanced_mask_decoder
    assert generator_config(cfg, 3).num_hidden_layers == 3


def test_gdes_rtd_loss_never_reaches_generator_embedding():
    model = _model("gdes")
    assert torch.count_nonzero(model.delta) == 0  # delta starts at zero
    out = model(**_batch())
    out.rtd_loss.backward()
    g_emb = model.generator.deberta.embeddings.word_embeddings.weight
    assert g_emb.grad is None or torch.count_nonzero(g_emb.grad) == 0
    assert model.delta.grad is not None and torch.count_nonzero(model.delta.grad) > 0
    # The MLM loss does train the generator's embedding.
    model.zero_grad()
    model(**_batch()).mlm_loss.backward()
    assert torch.count_nonzero(g_emb.grad) > 0


def test_es_rtd_loss_reaches_shared_embedding():
    model = _model("es")
    g_emb = model.generator.deberta.embeddings.word_embeddings.weight
    assert model.discriminator.deberta.embeddings.word_embeddings.weight is g_emb
    model(**_batch()).rtd_loss.backward()
    assert g_emb.grad is not None and torch.count_nonzero(g_emb.grad) > 0


def test_none_keeps_separate_tables():
    model = _model("none")
    model(**_batch()).rtd_loss.backward()
    assert model.generator.deberta.embeddings.word_embeddings.weight.grad is None
    assert torch.count_nonzero(model.discriminator.deberta.embeddings.word_embeddings.weight.grad) > 0


def test_loss_combines_mlm_and_lambda_rtd():
    model = _model("gdes")
    model.rtd_lambda = 7.0
    out = model(**_batch())
    torch.testing.assert_close(out.loss, out.mlm_loss + 7.0 * out.rtd_loss)
    loss, metrics = rtd_step(model, _batch())
    for key in ("mlm_loss", "mlm_accuracy", "rtd_loss", "rtd_accuracy", "rtd_precision", "rtd_recall",
                "replaced_rate", "num_tokens"):
        assert key in metrics
    assert metrics["num_tokens"] == 48


def test_sampling_equal_to_original_is_not_replaced_and_noise_is_reproducible():
    model = _model("gdes").eval()
    # Make the generator certain of the original token: then nothing counts as replaced.
    batch = _batch()
    with torch.no_grad():
        model.generator.cls.predictions.bias.zero_()
        model.generator.cls.predictions.bias[batch["labels"][0, 3]] = 1e4
    batch["labels"][:, 3:8] = batch["labels"][0, 3]
    out = model(**batch)
    assert out.metrics["replaced_rate"] == 0
    model = _model("gdes").eval()
    a = model(**_batch(1)).metrics
    b = model(**_batch(1)).metrics
    assert a["replaced_rate"] == b["replaced_rate"] > 0 and a["rtd_loss"] == b["rtd_loss"]


def test_export_merges_gdes_embedding():
    model = _model("gdes")
    with torch.no_grad():
        model.delta.add_(0.5)
    disc = model.export_discriminator()
    expected = model.generator.deberta.embeddings.word_embeddings.weight + 0.5
    torch.testing.assert_close(disc.deberta.embeddings.word_embeddings.weight, expected)
    # The exported discriminator computes what the GDES model computes.
    batch = _batch()
    model.eval()
    ids = batch["input_ids"]
    e = torch.nn.functional.embedding(ids, model.discriminator_embedding())
    ours = model.discriminator(inputs_embeds=e).logits
    torch.testing.assert_close(disc(input_ids=ids).logits, ours)


def test_mismatched_embedding_shapes_are_a_clear_error():
    from mdeberta.model import DebertaForMaskedLM, DebertaForReplacedTokenDetection
    from mdeberta.train.pretraining import RTDPretrainingModel

    cfg = preset("deberta-v3-micro", vocab_size=V)
    with pytest.raises(ValueError, match="equal word-embedding shapes"):
        small = cfg.replace(hidden_size=32, embedding_size=32, pooler_hidden_size=32, intermediate_size=64)
        RTDPretrainingModel(DebertaForMaskedLM(small), DebertaForReplacedTokenDetection(cfg))
    with pytest.raises(ValueError, match="allowed"):
        build_rtd_model(cfg, embedding_sharing="tied")


def test_continued_pretraining_from_released_folders(tmp_path):
    """--init-discriminator / --init-generator: start exactly from HF folders (GDES delta = E_d - E_g)."""
    from mdeberta.model import DebertaForMaskedLM, DebertaForReplacedTokenDetection

    torch.manual_seed(1)
    cfg = preset("deberta-v3-micro", vocab_size=V)
    released_disc = DebertaForReplacedTokenDetection(cfg).eval()
    released_gen = DebertaForMaskedLM(generator_config(cfg).replace(enhanced_mask_decoder=False)).eval()
    released_disc.save_pretrained(tmp_path / "disc")
    released_gen.save_pretrained(tmp_path / "gen")  # config.json as transformers writes it: no EMD flag

    model = build_rtd_model(cfg, init_discriminator=str(tmp_path / "disc"), init_generator=str(tmp_path / "gen"))
    assert model.generator.config.enhanced_mask_decoder  # the generator runs the EMD again
    assert torch.equal(model.generator.deberta.embeddings.word_embeddings.weight,
                       released_gen.deberta.embeddings.word_embeddings.weight)
    # The discriminator's effective embedding is exactly the released one, whatever the generator's table.
    assert torch.allclose(model.discriminator_embedding(), released_disc.deberta.embeddings.word_embeddings.weight,
                          atol=1e-6)
    ids = torch.randint(4, V, (2, 12))
    with torch.no_grad():
        assert torch.allclose(model.export_discriminator()(ids).logits, released_disc(ids).logits, atol=1e-5)

    only_disc = build_rtd_model(cfg, init_discriminator=str(tmp_path / "disc"))
    assert torch.count_nonzero(only_disc.delta) == 0  # generator starts from the released table
    assert torch.equal(only_disc.generator.deberta.embeddings.word_embeddings.weight,
                       released_disc.deberta.embeddings.word_embeddings.weight)


def test_health_metrics_see_a_degenerate_table_and_collapsed_tokens():
    from mdeberta.train.pretraining import embedding_common_share, mean_token_cosine, representation_health

    g = torch.Generator().manual_seed(0)
    table = torch.randn(1000, 32, generator=g) * 0.02
    assert embedding_common_share(table) < 0.01  # about 1/V for independent rows
    common = torch.randn(32, generator=g)
    assert embedding_common_share(table + 0.1 * common) > 0.9  # one vector dominates every row
    hidden = torch.randn(2, 10, 32, generator=g)
    mask = torch.ones(2, 10, dtype=torch.long)
    assert abs(mean_token_cosine(hidden, mask)) < 0.1
    assert mean_token_cosine(hidden * 0.01 + common, mask) > 0.99
    mask[1, 5:] = 0  # padding is ignored
    assert mean_token_cosine(torch.where(mask.bool()[..., None], hidden * 0.01 + common, -common), mask) > 0.99
    probe = {"input_ids": _batch()["input_ids"], "attention_mask": torch.ones(2, 24, dtype=torch.long)}
    for sharing in ("gdes", "es"):
        health = representation_health(_model(sharing), probe)
        assert set(health) == {"embedding_common_share", "token_cosine"}
        assert 0 <= health["embedding_common_share"] < 0.2 and -1 <= health["token_cosine"] <= 1


@pytest.mark.parametrize("sharing", ["gdes", "none"])
def test_decoupled_training_equals_the_two_updates_written_out(sharing, tmp_path):
    """The loop's second phase against DeBERTa's decoupled step by hand: the generator's MLM loss, its clipping and
    AdamW step first; then lambda x RTD on the same samples, embedded with the *updated* generator table (GDES),
    the discriminator's own clipping and step. Two steps, same weights."""
    import copy

    from mdeberta.train import Trainer, TrainingArguments, build_optimizer
    from mdeberta.train.loop import SecondPhase
    from mdeberta.train.pretraining import rtd_discriminator_step, rtd_generator_step

    batches = [_batch(seed) for seed in (1, 2)]
    torch.manual_seed(0)
    model = build_rtd_model(preset("deberta-v3-micro", vocab_size=V, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0), embedding_sharing=sharing)
    reference = copy.deepcopy(model)
    model.train(), reference.train()
    opt_g = build_optimizer(model.generator, 1e-2)
    opt_d = build_optimizer(model.discriminator, 5e-3)
    args = TrainingArguments(str(tmp_path), max_steps=2, max_grad_norm=0.5, progress=False, plot=False,
                             save_every=0)
    trainer = Trainer(model, rtd_generator_step, opt_g, None, batches, args,
                      second_phase=SecondPhase(rtd_discriminator_step, opt_d, None, 0.5))
    trainer.fit()

    ref_g = build_optimizer(reference.generator, 1e-2)
    ref_d = build_optimizer(reference.discriminator, 5e-3)
    for batch in batches:
        gen, carry = reference.generator_phase(**batch)
        gen.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in reference.generator.parameters() if p.grad is not None], 0.5)
        ref_g.step()
        ref_g.zero_grad(set_to_none=True)
        disc, _ = reference.discriminator_phase(**carry)
        (reference.rtd_lambda * disc.loss).backward()
        assert all(p.grad is None for p in reference.generator.parameters())  # nothing reaches the generator
        torch.nn.utils.clip_grad_norm_([p for p in reference.discriminator.parameters() if p.grad is not None], 0.5)
        ref_d.step()
        ref_d.zero_grad(set_to_none=True)
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        # float rounding of the clip norm (other summation order), amplified by Adam where gradients are ~0
        assert (a - b).abs().max() <= 1e-6, (name, float((a - b).abs().max()), float(b.abs().max()))
    logged = [r for r in trainer.history if "loss" in r]
    assert {"mlm_loss", "rtd_loss", "rtd_recall", "grad_norm_2"} <= set(logged[-1])
