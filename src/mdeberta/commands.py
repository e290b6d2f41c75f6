"""Implementations of the small CLI commands (``info``, ``convert``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

from mdeberta.checkpoint import load_into, load_state_dict
from mdeberta.config import PRESETS, DebertaConfig
from mdeberta.errors import UsageError
from mdeberta.hub import resolve_model_dir
from mdeberta.model import DebertaForMaskedLM
from mdeberta.model.auto import HEADS, detect_head

logger = logging.getLogger("mdeberta")

def cmd_convert(args: argparse.Namespace) -> int:
    from mdeberta.outputs import check_output_folder, replace_folder

    dst = check_output_folder(args.dst, [args.src], overwrite=args.overwrite, flag="convert DST")
    folder = resolve_model_dir(args.src)
    config = DebertaConfig.from_json_file(Path(folder) / "config.json")
    state, _ = load_state_dict(folder)
    if args.head == "auto":
        cls = detect_head(config, set(state))
    elif args.head in HEADS:
        cls = HEADS[args.head]
    else:
        raise UsageError(f"unknown --head {args.head!r}; choose from auto, {', '.join(HEADS)}")
    if cls is DebertaForMaskedLM and any(k.startswith("lm_predictions.") for k in state):
        config = config.replace(legacy=False)  # the checkpoint carries the original (non-legacy) MLM head
    model = cls(config)
    load_into(model, state, folder)
    tmp = dst.with_name(f".{dst.name}.converting")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        for name in ("spm.model", "tokenizer_config.json", "special_tokens_map.json"):
            if (Path(folder) / name).exists():
                shutil.copyfile(Path(folder) / name, tmp / name)
        replace_folder(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {cls.__name__} ({model.num_parameters():,} parameters) to {os.path.abspath(dst)}")
    return 0


def describe(config: DebertaConfig) -> dict:
    """Architecture summary and parameter counts (computed from the config, no weights needed)."""
    import torch

    from mdeberta.model.deberta import DebertaModel as Backbone

    with torch.device("meta"):
        model = Backbone(config)
    total = model.num_parameters()
    embeddings = sum(p.numel() for p in model.embeddings.parameters())
    return {
        "layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
        "heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size, "relative_attention": config.relative_attention,
        "position_buckets": config.position_buckets, "pos_att_type": "|".join(config.pos_att_type),
        "share_att_key": config.share_att_key, "position_biased_input": config.position_biased_input,
        "parameters": total, "embedding_parameters": embeddings, "backbone_parameters": total - embeddings,
    }


def cmd_info(args: argparse.Namespace) -> int:
    if args.path in PRESETS:
        config = DebertaConfig.from_pretrained(args.path)
    elif os.path.isfile(args.path):
        config = DebertaConfig.from_json_file(args.path)
    else:
        config = DebertaConfig.from_json_file(Path(resolve_model_dir(args.path)) / "config.json")
    info = describe(config)
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}}  {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k:<{width}}  {v}")
    logger.debug(json.dumps(info))
    return 0
