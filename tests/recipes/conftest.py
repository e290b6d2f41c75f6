"""Fixtures for the fine-tuning / evaluation tests: a tiny tokenizer + model folder and small NLI files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nli_helpers import LABEL_NAMES, XNLI_DIR, synthetic_pairs, tokenizer_text, write_tsv


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A "pretrained" checkpoint folder: a micro DebertaModel (no classification head) + its tokenizer."""
    import torch

    from mdeberta.config import preset
    from mdeberta.model import DebertaModel
    from mdeberta.tokenizer import DebertaTokenizer, train_tokenizer

    root = tmp_path_factory.mktemp("tiny_backbone")
    # Without ../shared the text is only the synthetic pairs: at most 61 pieces, words stay whole.
    vocab_size = 1500 if XNLI_DIR.is_dir() else 60
    tok_dir = train_tokenizer(tokenizer_text(root), root / "tok", vocab_size=vocab_size, num_threads=1)
    tok = DebertaTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    model = DebertaModel(preset("deberta-v3-micro", vocab_size=len(tok)))
    folder = root / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def synthetic_nli(tmp_path: Path) -> dict[str, Path]:
    train = write_tsv(tmp_path / "train.tsv", synthetic_pairs(96, seed=1))
    dev = write_tsv(tmp_path / "dev.tsv.gz", synthetic_pairs(24, seed=2))
    return {"train": train, "dev": dev}


@pytest.fixture(scope="session")
def tiny_classifier(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained but seeded) 3-way NLI classifier folder with tokenizer: enough to test evaluation."""
    import torch

    from mdeberta.model import DebertaForSequenceClassification
    from mdeberta.tokenizer import DebertaTokenizer

    torch.manual_seed(1)
    model = DebertaForSequenceClassification.from_pretrained(
        tiny_backbone, num_labels=3, id2label=dict(enumerate(LABEL_NAMES)), label2id={n: i for i, n in
                                                                                   enumerate(LABEL_NAMES)})
    with torch.no_grad():  # a head with large weights, so that predictions differ between examples
        model.classifier.weight.normal_(0, 2.0)
    folder = tmp_path_factory.mktemp("tiny_classifier") / "model"
    model.save_pretrained(folder)
    DebertaTokenizer.from_pretrained(tiny_backbone).save_pretrained(folder)
    return folder


@pytest.fixture
def single_thread():
    """Run tiny models on one intra-op thread: on a busy 2-core machine two threads mostly wait on each other
    (measured: 150 micro steps 8 s single-threaded vs 150 s with two threads under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tagging_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro backbone whose tokenizer knows the words of the synthetic NER / QA data (ner_helpers)."""
    import torch

    from mdeberta.config import preset
    from mdeberta.model import DebertaModel
    from mdeberta.tokenizer import DebertaTokenizer, train_tokenizer
    from ner_helpers import ner_tokenizer_text

    root = tmp_path_factory.mktemp("tagging")
    tok = DebertaTokenizer.from_pretrained(train_tokenizer(ner_tokenizer_text(root), root / "tok", vocab_size=50,
                                                           num_threads=1))
    torch.manual_seed(0)
    DebertaModel(preset("deberta-v3-micro", vocab_size=len(tok))).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root / "model"
