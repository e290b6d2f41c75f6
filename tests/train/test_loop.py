"""The generic loop: accumulation, optimizer groups, schedule, NaN handling, checkpoints and generic resume."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mdeberta.checkpoint import CheckpointError
from mdeberta.train import Trainer, TrainingArguments, TrainingError, build_optimizer, linear_schedule
from mdeberta.train.checkpointing import list_checkpoints, load_latest_checkpoint
from mdeberta.train.optim import param_groups


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.LayerNorm = nn.LayerNorm(3)
        self.drop = nn.Dropout(0.2)

    def forward(self, x, y):
        return nn.functional.cross_entropy(self.LayerNorm(self.drop(self.linear(x))), y)


def _data(n=12, bs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(bs, 4, generator=g), "y": torch.randint(0, 3, (bs,), generator=g)} for _ in range(n)]


def _step(model, batch):
    return model(**batch), {"num_tokens": batch["x"].shape[0]}


def _trainer(tmp_path, data, **kw):
    torch.manual_seed(0)
    model = Tiny()
    opt = build_optimizer(model, 1e-2)
    args = TrainingArguments(str(tmp_path), progress=False, plot=False, **{"log_every": 1, **kw})
    return Trainer(model, _step, opt, linear_schedule(opt, 2, args.max_steps), data, args)


def test_no_weight_decay_on_bias_and_layernorm():
    groups = {g["name"]: g for g in param_groups(Tiny(), 1e-3, 0.1, {"LayerNorm.": 5e-3})}
    decayed = [n for g in groups.values() if g["weight_decay"] > 0 for n in g["param_names"]]
    assert decayed == ["linear.weight"]
    assert groups["LayerNorm. (no decay)"]["lr"] == 5e-3


def test_lazy_embedding_update_import_error_is_clear(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mdeberta.train.lazy_adamw", None)
    with pytest.raises(ImportError, match="LazyAdamW"):
        build_optimizer(Tiny(), 1e-3, embedding_update="lazy")
    with pytest.raises(ValueError, match="allowed"):
        build_optimizer(Tiny(), 1e-3, embedding_update="sparse")


def test_linear_warmup_then_decay():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[-1] == pytest.approx(1 / 8) and all(a > b for a, b in zip(lrs[4:], lrs[5:]))


def test_grad_accumulation_equals_big_batch(tmp_path):
    small = _data(8, 2)
    big = [{k: torch.cat([a[k], b[k]]) for k in a} for a, b in zip(small[::2], small[1::2])]
    t1 = _trainer(tmp_path / "a", small, max_steps=4, grad_accum=2)
    t1.model.drop.p = 0.0
    t1.fit()
    t2 = _trainer(tmp_path / "b", big, max_steps=4)
    t2.model.drop.p = 0.0
    t2.fit()
    for p, q in zip(t1.model.parameters(), t2.model.parameters()):
        torch.testing.assert_close(p, q)
    assert [r["loss"] for r in t1.history] == pytest.approx([r["loss"] for r in t2.history], rel=1e-5)


def test_epochs_restart_and_metrics_logged(tmp_path):
    t = _trainer(tmp_path, _data(3), max_steps=7)
    history = t.fit()
    assert t.epoch == 2 and len(history) == 7
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 8))
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "skipped"} <= set(lines[0])


def test_generic_resume_is_exact(tmp_path):
    full = _trainer(tmp_path / "full", _data(5), max_steps=8)
    full.fit()
    half = _trainer(tmp_path / "half", _data(5), max_steps=8, save_every=3, stop_after=3)
    half.fit()
    assert half.step == 3
    rest = _trainer(tmp_path / "half", _data(5), max_steps=8)
    rest.fit(resume=True)
    losses = [r["loss"] for r in half.history] + [r["loss"] for r in rest.history]
    assert losses == [r["loss"] for r in full.history]  # identical, dropout included
    for p, q in zip(full.model.parameters(), rest.model.parameters()):
        assert torch.equal(p, q)


def test_resume_with_less_data_than_the_run_had_is_a_clear_error(tmp_path):
    half = _trainer(tmp_path, _data(5), max_steps=8, save_every=3, stop_after=3)
    half.fit()
    with pytest.raises(TrainingError, match=r"checkpoint is at batch 3 of epoch 0, but the training data now has "
                                            r"only 2 batches"):
        _trainer(tmp_path, _data(2), max_steps=8).fit(resume=True)


def test_a_step_reads_the_device_once_whatever_the_accumulation(tmp_path, monkeypatch):
    """No .item() / float() / bool() / tolist() per metric or micro-batch in the loop: one host read per step (the
    skip decision), and the metrics once per --log-every window (a CPU stand-in for cuda's sync debug mode; reads
    made by the loop's own code are counted, not those of torch's CPU optimizer internals)."""
    import sys

    reads = []
    loop_files = ("train/loop.py", "train/distributed.py")
    for name in ("item", "tolist", "__float__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if sys._getframe(1).f_code.co_filename.replace("\\", "/").endswith(loop_files):
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def step_with_metrics(model, batch):
        loss = model(**batch)
        return loss, {"accuracy": loss.detach() * 0 + 0.5, "num_tokens": torch.tensor(batch["x"].shape[0])}

    for accum in (1, 4):
        trainer = _trainer(tmp_path / str(accum), _data(16), max_steps=8, grad_accum=accum, log_every=4)
        trainer.step_fn = step_with_metrics
        reads.clear()
        trainer.train_step()
        assert len(reads) == 1, reads  # the skip decision only
        reads.clear()
        trainer.fit()
        # 8 steps: one read each, plus one per log window (2 windows x one tolist) and nothing per micro-batch.
        assert len(reads) <= 8 + 2 * 2, (accum, reads)
    logged = [r for r in trainer.history if "loss" in r]
    assert [r["step"] for r in logged] == [4, 8] and all(r["accuracy"] == 0.5 for r in logged)


def test_nan_loss_skips_step_then_stops(tmp_path):
    data = _data(6)
    for b in data[1:]:
        b["x"] = b["x"] * float("nan")
    t = _trainer(tmp_path, data, max_steps=6, max_bad_steps=3)
    with pytest.raises(TrainingError, match="NaN/inf in 3 consecutive steps"):
        t.fit()
    assert [r["skipped"] for r in t.history] == [0.0, 1.0, 1.0]
    assert all(torch.isfinite(p).all() for p in t.model.parameters())  # the bad updates never happened


def test_keep_last_and_corrupt_checkpoint_fallback(tmp_path):
    t = _trainer(tmp_path, _data(4), max_steps=6, save_every=1, keep_last=2)
    t.fit()
    ckpts = list_checkpoints(tmp_path)
    assert [p.name for p in ckpts] == ["step-00000005.pt", "step-00000006.pt"]
    ckpts[-1].write_bytes(b"garbage")
    path, state = load_latest_checkpoint(tmp_path)
    assert path == ckpts[0] and state["step"] == 5
    ckpts[0].write_bytes(ckpts[0].read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_latest_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_latest_checkpoint(tmp_path / "elsewhere")


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="fp16"):
        _trainer(tmp_path, _data(), max_steps=1, precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        TrainingArguments(str(tmp_path), max_steps=1, precision="int8")


def test_bf16_autocast_on_cpu_trains(tmp_path):
    t = _trainer(tmp_path, _data(), max_steps=3, precision="bf16")
    history = t.fit()
    assert all(r["skipped"] == 0 for r in history) and history[-1]["loss"] > 0


def test_eval_fn_and_on_save_hooks(tmp_path):
    seen = []
    t = _trainer(tmp_path, _data(), max_steps=4, eval_every=2, save_every=2)
    t.eval_fn = lambda tr: {"accuracy": float(tr.step)}
    t.on_save = lambda tr, path: seen.append((tr.step, path.name))
    history = t.fit()
    assert [r["eval/accuracy"] for r in history if "eval/accuracy" in r] == [2.0, 4.0]
    assert seen == [(2, "step-00000002.pt"), (4, "step-00000004.pt")]
    assert (tmp_path / "metrics.jsonl").exists()


def test_cpu_threads_leave_room_for_data_workers(monkeypatch):
    import os

    from mdeberta.train.distributed import DistributedEnv, configure_cpu_threads

    before = torch.get_num_threads()
    env = DistributedEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        assert configure_cpu_threads(env, data_workers=2) == 6 and torch.get_num_threads() == 6
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
        assert configure_cpu_threads(env, data_workers=1) == 1  # 8 cores / 4 processes - 1 worker
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        torch.set_num_threads(3)
        assert configure_cpu_threads(env, data_workers=2) == 3  # the user's explicit choice wins
    finally:
        torch.set_num_threads(before)


def test_layerwise_lr_decay_groups():
    from mdeberta.config import preset
    from mdeberta.model import DebertaForSequenceClassification
    from mdeberta.train.optim import layer_depth

    model = DebertaForSequenceClassification(preset("deberta-v3-micro", vocab_size=50, num_labels=3))
    n = model.config.num_hidden_layers
    lrs = {name: g["lr"] for g in param_groups(model, 1e-3, 0.01, layerwise_lr_decay=0.5, num_layers=n)
           for name in g["param_names"]}
    assert lrs["classifier.weight"] == lrs["pooler.dense.bias"] == pytest.approx(1e-3)  # the head keeps lr
    assert lrs[f"deberta.encoder.layer.{n - 1}.output.dense.weight"] == pytest.approx(1e-3 * 0.5)
    assert lrs["deberta.encoder.layer.0.attention.self.query_proj.weight"] == pytest.approx(1e-3 * 0.5 ** n)
    for name in ("deberta.embeddings.word_embeddings.weight", "deberta.encoder.rel_embeddings.weight",
                 "deberta.encoder.LayerNorm.weight"):
        assert lrs[name] == pytest.approx(1e-3 * 0.5 ** (n + 1))
    assert layer_depth("module.deberta.encoder.layer.11.attention.output.dense.weight", 12) == 12  # DDP names
    assert len(lrs) == len(list(model.parameters()))  # every parameter in exactly one group
    opt = build_optimizer(model, 1e-3, layerwise_lr_decay=0.8, num_layers=n)
    sched = linear_schedule(opt, 0, 10)
    ratios = [g["lr"] / opt.param_groups[0]["lr"] for g in opt.param_groups]
    opt.step()  # no gradients: nothing moves
    sched.step()
    assert [g["lr"] / opt.param_groups[0]["lr"] for g in opt.param_groups] == pytest.approx(ratios)  # kept
    with pytest.raises(ValueError, match="decay must be in"):
        param_groups(model, 1e-3, layerwise_lr_decay=1.5, num_layers=n)
    with pytest.raises(ValueError, match="number of layers"):
        param_groups(model, 1e-3, layerwise_lr_decay=0.8)


def test_fsdp_mixed_precision_policy_on_cuda_only(monkeypatch):
    """bf16 on CUDA: FSDP2 gathers and computes in bf16 and reduces gradients in fp32; on CPU (gloo) and in fp32
    runs there is no policy (fp32 parameters, autocast for bf16). Every fully_shard call gets the same policy."""
    import torch.distributed.fsdp as fsdp

    from mdeberta.config import preset
    from mdeberta.model import DebertaForSequenceClassification
    from mdeberta.train.distributed import DistributedEnv, fsdp_mixed_precision, wrap_model

    cuda = DistributedEnv(rank=0, world_size=2, device=torch.device("cuda", 0))
    cpu = DistributedEnv(rank=0, world_size=2, device=torch.device("cpu"))
    policy = fsdp_mixed_precision(cuda, "bf16")
    assert policy.param_dtype == torch.bfloat16 and policy.reduce_dtype == torch.float32
    assert fsdp_mixed_precision(cuda, "fp32") is None and fsdp_mixed_precision(cpu, "bf16") is None
    calls = []
    monkeypatch.setattr(fsdp, "fully_shard", lambda module, **kwargs: calls.append((type(module).__name__, kwargs)))
    model = DebertaForSequenceClassification(preset("deberta-v3-micro", vocab_size=50))
    wrap_model(model, cuda, "fsdp", "bf16")
    assert [name for name, _ in calls] == ["DebertaLayer"] * model.config.num_hidden_layers + [
        "DebertaForSequenceClassification"]
    assert all(kwargs["mp_policy"].param_dtype == torch.bfloat16 for _, kwargs in calls)
    calls.clear()
    wrap_model(model, cpu, "fsdp", "bf16")
    assert all(kwargs == {} for _, kwargs in calls) and len(calls) == model.config.num_hidden_layers + 1
