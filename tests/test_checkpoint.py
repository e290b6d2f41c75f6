"""Checkpoint formats, key layouts of released models, and the errors bad checkpoints get."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import save_file

import mdeberta
from mdeberta.checkpoint import CheckpointError, load_state_dict, resolve_model_dir

CFG = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
           relative_attention=True, position_buckets=16, pos_att_type="p2c|c2p", share_att_key=True,
           norm_rel_ebd="layer_norm", position_biased_input=False, max_position_embeddings=64,
           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def released_layout_folder(tmp_path, fmt: str = "bin"):
    """A folder laid out like microsoft/mdeberta-v3-base: ``deberta.``-prefixed backbone plus the absolute
    position table, the MLM head as ``lm_predictions.*`` and the RTD head as ``mask_predictions.*``."""
    torch.manual_seed(0)
    config = mdeberta.DebertaConfig(**CFG)
    rtd = mdeberta.DebertaForReplacedTokenDetection(config)
    mlm = mdeberta.DebertaForMaskedLM(config.replace(legacy=False))
    state = dict(rtd.state_dict())
    state.update({k: v for k, v in mlm.state_dict().items() if k.startswith("lm_predictions.")})
    state["deberta.embeddings.position_embeddings.weight"] = torch.randn(64, 32)
    folder = tmp_path / "released"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**config.to_dict(), "model_type": "deberta-v2"}))
    if fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    elif fmt == "sharded":
        keys = sorted(state)
        shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
                  "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
        for name, part in shards.items():
            save_file({k: state[k].contiguous() for k in part}, folder / name)
        index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder, rtd, state


@pytest.mark.parametrize("fmt", ["bin", "sharded"])
def test_released_layout_loads_into_every_class(tmp_path, fmt, caplog):
    folder, rtd, state = released_layout_folder(tmp_path, fmt)
    ids = torch.randint(4, 120, (2, 10))
    with caplog.at_level(logging.INFO, logger="mdeberta"):
        backbone = mdeberta.DebertaModel.from_pretrained(folder)
    # One log line lists what was not used: the heads and the absolute position table V3 does not add.
    line = next(r.getMessage() for r in caplog.records if "loaded DebertaModel" in r.getMessage())
    assert "unused: 12 [" in line
    assert "embeddings.position_embeddings.weight" in backbone.loading_info["unused"]
    with torch.no_grad():
        assert torch.equal(backbone(ids).last_hidden_state, rtd.eval().deberta(ids).last_hidden_state)

    loaded_rtd = mdeberta.DebertaForReplacedTokenDetection.from_pretrained(folder)
    assert loaded_rtd.loading_info["missing"] == []
    with torch.no_grad():
        assert torch.equal(loaded_rtd(ids).logits, rtd(ids).logits)

    mlm = mdeberta.DebertaForMaskedLM.from_pretrained(folder, legacy=False)
    assert mlm.loading_info["missing"] == []
    assert torch.equal(mlm.lm_predictions.lm_head.bias, state["lm_predictions.lm_head.bias"])

    cls = mdeberta.DebertaForSequenceClassification.from_pretrained(folder, num_labels=3)
    assert sorted(cls.loading_info["missing"]) == ["classifier.bias", "classifier.weight", "pooler.dense.bias",
                                                   "pooler.dense.weight"]
    assert cls.config.num_labels == 3 and cls.classifier.out_features == 3


def test_prefixless_checkpoint_loads_into_heads(tmp_path):
    torch.manual_seed(0)
    base = mdeberta.DebertaModel(mdeberta.DebertaConfig(**CFG))
    base.save_pretrained(tmp_path)
    keys = load_state_dict(tmp_path)[0]
    assert not any(k.startswith("deberta.") for k in keys)
    model = mdeberta.DebertaForTokenClassification.from_pretrained(tmp_path, num_labels=5)
    assert torch.equal(model.deberta.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight)


@pytest.mark.parametrize("safe", [True, False])
def test_save_load_round_trip(tmp_path, safe):
    torch.manual_seed(0)
    model = mdeberta.DebertaForSequenceClassification(mdeberta.DebertaConfig(**CFG, num_labels=3)).eval()
    model.save_pretrained(tmp_path, safe_serialization=safe)
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).exists()
    again = mdeberta.DebertaForSequenceClassification.from_pretrained(tmp_path)
    ids = torch.randint(4, 120, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [
        "DebertaV2ForSequenceClassification"]
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    mdeberta.DebertaModel(mdeberta.DebertaConfig(**CFG)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 48
    (tmp_path / "config.json").write_text(json.dumps(config))
    expected = (r"shape mismatch for encoder\.layer\.0\.intermediate\.dense\.bias: "
                r"checkpoint has \(64,\), model expects \(48,\)")
    with pytest.raises(CheckpointError, match=expected):
        mdeberta.DebertaModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_truncated_weights_file_is_named(tmp_path, name):
    mdeberta.DebertaModel(mdeberta.DebertaConfig(**CFG)).save_pretrained(tmp_path, name == "model.safetensors")
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{name}.*corrupt or truncated"):
        mdeberta.DebertaModel.from_pretrained(tmp_path)


def test_missing_pieces_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        mdeberta.DebertaModel.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        mdeberta.DebertaModel.from_pretrained(tmp_path / "empty")
    mdeberta.DebertaConfig(**CFG).save_pretrained(tmp_path / "noweights")
    with pytest.raises(CheckpointError, match="no weights in .*noweights"):
        mdeberta.DebertaModel.from_pretrained(tmp_path / "noweights")
    index = tmp_path / "noweights" / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(CheckpointError, match="names missing files"):
        mdeberta.DebertaModel.from_pretrained(tmp_path / "noweights")


def test_hub_id_offline_and_uncached_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="not in the local cache"):
        resolve_model_dir("microsoft/mdeberta-v3-base-does-not-exist")


def test_hub_id_resolves_from_local_cache(monkeypatch, tmp_path):
    """A hub id that is in the huggingface_hub cache loads offline through the real snapshot code."""
    cache = tmp_path / "cache"
    repo = cache / "models--someone--tiny-deberta"
    snapshot = repo / "snapshots" / ("0" * 40)
    mdeberta.DebertaModel(mdeberta.DebertaConfig(**CFG)).save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    model = mdeberta.DebertaModel.from_pretrained("someone/tiny-deberta")
    assert model.config.hidden_size == 32
