"""Config: transformers' defaults for missing keys, presets, validation, round trips."""

from __future__ import annotations

import json

import pytest

from mdeberta.config import PRESETS, ConfigError, DebertaConfig, preset


def test_missing_keys_take_transformers_defaults(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "deberta-v2", "hidden_size": 64, "num_attention_heads": 4}))
    config = DebertaConfig.from_json_file(path)
    # The two defaults that are easy to get wrong: a bare config.json is BERT-like.
    assert config.relative_attention is False and config.position_biased_input is True
    assert (config.vocab_size, config.layer_norm_eps, config.type_vocab_size) == (128100, 1e-7, 0)
    assert config.embedding_size == 64 and config.pooler_hidden_size == 64 and config.num_labels == 2
    assert config.position_buckets == -1 and config.share_att_key is False and config.norm_rel_ebd == "none"


def test_agrees_with_transformers_config():
    transformers = pytest.importorskip("transformers")
    ours, theirs = DebertaConfig(pos_att_type="p2c|c2p"), transformers.DebertaV2Config(pos_att_type="p2c|c2p")
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                 "type_vocab_size", "initializer_range", "layer_norm_eps", "relative_attention",
                 "max_relative_positions", "pad_token_id", "position_biased_input", "pos_att_type", "pooler_dropout",
                 "pooler_hidden_act", "legacy", "pooler_hidden_size"):
        assert getattr(ours, name) == getattr(theirs, name), name


def test_pos_att_type_string_or_list_and_round_trip(tmp_path):
    config = DebertaConfig(hidden_size=64, num_attention_heads=4, pos_att_type="P2C|c2p",
                           id2label={"0": "entailment", "1": "neutral", "2": "contradiction"})
    assert config.pos_att_type == ["p2c", "c2p"] and config.num_labels == 3
    assert config.label2id == {"entailment": 0, "neutral": 1, "contradiction": 2}
    config.extra["architectures"] = ["DebertaV2Model"]
    config.save_pretrained(tmp_path)
    again = DebertaConfig.from_pretrained(tmp_path / "config.json")
    assert again == config and again.extra["architectures"] == ["DebertaV2Model"]


def test_presets():
    config = preset("mdeberta-v3-base")
    assert (config.vocab_size, config.num_hidden_layers, config.hidden_size, config.position_buckets) == (
        251000, 12, 768, 256)
    assert config.relative_attention and config.share_att_key and not config.position_biased_input
    assert preset("deberta-v3-xsmall", vocab_size=1000).vocab_size == 1000
    assert set(PRESETS) >= {"deberta-v3-xsmall", "deberta-v3-small", "deberta-v3-base", "deberta-v3-large",
                            "mdeberta-v3-base"}
    with pytest.raises(ConfigError, match="unknown preset 'deberta-v9'.*known presets"):
        preset("deberta-v9")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(hidden_size=100, num_attention_heads=12), r"hidden_size \(100\) is not a multiple of "
                                                         r"num_attention_heads \(12\)"),
        (dict(pos_att_type="c2p|p2p"), r"unknown entries \['p2p'\]; allowed: \['c2p', 'p2c'\]"),
        (dict(hidden_act="gelu2"), r"hidden_act='gelu2' is not supported"),
        (dict(norm_rel_ebd="batch_norm"), r"norm_rel_ebd='batch_norm'"),
        (dict(num_hidden_layers=0), r"num_hidden_layers must be a positive integer, got 0"),
        (dict(pad_token_id=200000), r"pad_token_id=200000 outside the vocabulary"),
    ],
)
def test_invalid_values_name_the_problem(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DebertaConfig(**kwargs)


def test_bad_config_files(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        DebertaConfig.from_json_file(path)
    path.write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="model_type='bert' is not a DeBERTa config"):
        DebertaConfig.from_json_file(path)
    path.write_text(json.dumps({"hidden_size": 30, "num_attention_heads": 4}))
    with pytest.raises(ConfigError, match=r"config.json: hidden_size \(30\)"):
        DebertaConfig.from_json_file(path)
