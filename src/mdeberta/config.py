"""Model configuration, read and written as a Hugging Face ``config.json`` (model_type "deberta-v2").

Field names and defaults follow transformers' ``DebertaV2Config`` exactly, because released checkpoints omit
keys and rely on those defaults. Two of them are easy to get wrong: ``relative_attention`` defaults to False and
``position_biased_input`` to True, i.e. a config.json without them describes a BERT-like model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from mdeberta.errors import MdebertaError

MODEL_TYPE = "deberta-v2"
POSITION_ATTENTION_TYPES = ("c2p", "p2c")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "relu", "tanh", "silu", "swish", "sigmoid")
REL_EMBEDDING_NORMS = ("none", "layer_norm")


class ConfigError(MdebertaError, ValueError):
    """A config value is invalid; the message names the key and the value."""


@dataclass
class DebertaConfig:
    """Hyper-parameters of a DeBERTa-V2/V3 model; keyword names as in transformers' DebertaV2Config."""

    vocab_size: int = 128100
    hidden_size: int = 1536
    num_hidden_layers: int = 24
    num_attention_heads: int = 24
    intermediate_size: int = 6144
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-7
    # Disentangled attention.
    relative_attention: bool = False
    max_relative_positions: int = -1
    position_buckets: int = -1
    pos_att_type: list[str] = field(default_factory=list)
    share_att_key: bool = False
    norm_rel_ebd: str = "none"
    attention_head_size: int | None = None
    # Embeddings.
    position_biased_input: bool = True
    embedding_size: int | None = None
    pad_token_id: int = 0
    # V2 convolution after the first layer (0 = none).
    conv_kernel_size: int = 0
    conv_act: str = "tanh"
    conv_groups: int = 1
    # Heads.
    pooler_hidden_size: int | None = None
    pooler_dropout: float = 0.0
    pooler_hidden_act: str = "gelu"
    cls_dropout: float | None = None
    num_labels: int | None = None
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    legacy: bool = True
    tie_word_embeddings: bool = True
    # mdeberta extension (ignored by transformers): the MLM head runs the Enhanced Mask Decoder.
    enhanced_mask_decoder: bool = False
    # Keys of config.json this class does not model (architectures, torch_dtype, ...), kept for round trips.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.pos_att_type, str):
            self.pos_att_type = [p.strip() for p in self.pos_att_type.lower().split("|") if p.strip()]
        self.pos_att_type = list(self.pos_att_type or [])
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size
        if self.pooler_hidden_size is None:
            self.pooler_hidden_size = self.hidden_size
        # Labels: transformers derives num_labels from id2label, else defaults to two labels.
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            if self.num_labels is None:
                self.num_labels = len(self.id2label)
        if self.num_labels is None:
            self.num_labels = 2
        if self.id2label is None or len(self.id2label) != self.num_labels:
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        if self.label2id is None or len(self.label2id) != self.num_labels:
            self.label2id = {v: k for k, v in self.id2label.items()}
        self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
        self.validate()

    # ------------------------------------------------------------------ derived values
    @property
    def head_size(self) -> int:
        return self.attention_head_size or self.hidden_size // self.num_attention_heads

    @property
    def relative_span(self) -> int:
        """Half the number of relative-position embeddings: buckets if bucketed, else max_relative_positions."""
        if self.position_buckets > 0:
            return self.position_buckets
        return self.max_relative_positions if self.max_relative_positions > 0 else self.max_position_embeddings

    @property
    def max_relative_distance(self) -> int:
        """The ``max_position`` argument of the log-bucket function."""
        return self.max_relative_positions if self.max_relative_positions > 0 else self.max_position_embeddings

    def validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.attention_head_size is None and self.hidden_size % self.num_attention_heads != 0:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        unknown = [p for p in self.pos_att_type if p not in POSITION_ATTENTION_TYPES]
        if unknown:
            raise ConfigError(f"pos_att_type has unknown entries {unknown}; allowed: {list(POSITION_ATTENTION_TYPES)}")
        for name in ("hidden_act", "pooler_hidden_act", "conv_act"):
            if getattr(self, name) not in ACTIVATIONS:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not supported; allowed: {list(ACTIVATIONS)}")
        norms = [n.strip() for n in self.norm_rel_ebd.lower().split("|")]
        if any(n not in REL_EMBEDDING_NORMS for n in norms):
            raise ConfigError(f"norm_rel_ebd={self.norm_rel_ebd!r}; allowed: {list(REL_EMBEDDING_NORMS)}")
        if self.type_vocab_size < 0:
            raise ConfigError(f"type_vocab_size must be >= 0, got {self.type_vocab_size}")
        if self.conv_kernel_size < 0 or (self.conv_kernel_size > 0 and self.hidden_size % self.conv_groups):
            raise ConfigError(
                f"conv_kernel_size={self.conv_kernel_size} / conv_groups={self.conv_groups} invalid for "
                f"hidden_size={self.hidden_size}"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id={self.pad_token_id} outside the vocabulary of {self.vocab_size}")
        if self.enhanced_mask_decoder and not self.relative_attention:
            raise ConfigError("enhanced_mask_decoder needs relative_attention=True (it re-injects absolute positions)")

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DebertaConfig:
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: data.pop(k) for k in list(data) if k in names}
        model_type = data.get("model_type", MODEL_TYPE)
        if model_type not in (MODEL_TYPE, "deberta"):
            raise ConfigError(f"model_type={model_type!r} is not a DeBERTa config (expected {MODEL_TYPE!r})")
        data.pop("model_type", None)
        return cls(**known, extra=data)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["pos_att_type"] = list(self.pos_att_type)
        out["attention_head_size"] = self.attention_head_size
        if out["attention_head_size"] is None:
            del out["attention_head_size"]
        if out["cls_dropout"] is None:
            del out["cls_dropout"]
        if out["problem_type"] is None:
            del out["problem_type"]
        if not out["enhanced_mask_decoder"]:
            del out["enhanced_mask_decoder"]
        merged = {**self.extra, **out, "model_type": MODEL_TYPE}
        return dict(sorted(merged.items()))

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> DebertaConfig:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except TypeError as e:
            raise ConfigError(f"{path}: {e}") from e
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e

    def to_json_file(self, path: str | os.PathLike) -> None:
        from mdeberta.files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **overrides: Any) -> DebertaConfig:
        """A preset name, a folder with config.json, a config.json file, or a hub id."""
        name = str(name_or_path)
        if name in PRESETS:
            return preset(name, **overrides)
        if os.path.isfile(name):
            config = cls.from_json_file(name)
        else:
            from mdeberta.hub import resolve_model_dir

            config = cls.from_json_file(os.path.join(resolve_model_dir(name), "config.json"))
        return config.replace(**overrides) if overrides else config

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        os.makedirs(folder, exist_ok=True)
        self.to_json_file(os.path.join(folder, "config.json"))

    def replace(self, **changes: Any) -> DebertaConfig:
        """A copy with some fields changed (validated again)."""
        data = self.to_dict()
        data.update(changes)
        if "num_labels" in changes and "id2label" not in changes:
            data.pop("id2label", None)
            data.pop("label2id", None)
        return DebertaConfig.from_dict(data)


_V3_COMMON: dict[str, Any] = dict(
    vocab_size=128100,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=512,
    type_vocab_size=0,
    initializer_range=0.02,
    layer_norm_eps=1e-7,
    relative_attention=True,
    max_relative_positions=-1,
    position_buckets=256,
    norm_rel_ebd="layer_norm",
    share_att_key=True,
    pos_att_type=["p2c", "c2p"],
    position_biased_input=False,
    pooler_dropout=0.0,
    pooler_hidden_act="gelu",
    pad_token_id=0,
    legacy=True,
)

PRESETS: dict[str, dict[str, Any]] = {
    "deberta-v3-xsmall": dict(_V3_COMMON, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                              intermediate_size=1536),
    "deberta-v3-small": dict(_V3_COMMON, hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                             intermediate_size=3072),
    "deberta-v3-base": dict(_V3_COMMON, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072),
    "deberta-v3-large": dict(_V3_COMMON, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=4096),
    "mdeberta-v3-base": dict(_V3_COMMON, vocab_size=251000, hidden_size=768, num_hidden_layers=12,
                             num_attention_heads=12, intermediate_size=3072),
    # Tiny V3-shaped models that train in minutes on a 2-core CPU (tests, smoke runs, small-corpus studies).
    "deberta-v3-tiny": dict(_V3_COMMON, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=512),
    "deberta-v3-micro": dict(_V3_COMMON, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=128, position_buckets=32, max_position_embeddings=128),
}


def preset(name: str, **overrides: Any) -> DebertaConfig:
    """A named architecture; keyword arguments override fields (e.g. vocab_size for your tokenizer)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    return DebertaConfig(**{**PRESETS[name], **overrides})
