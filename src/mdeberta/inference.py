"""Inference with NLI classifiers: batched pair classification and zero-shot text classification.

Zero-shot classification turns each candidate label into a hypothesis ("This example is {label}.") and asks
the NLI model whether the text entails it, exactly like transformers' ``zero-shot-classification`` pipeline:

* single-label (default): softmax over the candidates' *entailment* logits, scores sum to 1;
* multi-label (or a single candidate): per candidate, softmax over (contradiction, entailment) logits and the
  entailment probability is the score, independently per label.

Because mDeBERTa is multilingual, texts, labels and template may be in any language the model knows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mdeberta.data.nli import ID2LABEL, LABEL2ID, LABELS, NLIExample
from mdeberta.errors import UsageError
from mdeberta.tasks.nli import model_label_names, nli_logits, nli_output_order

logger = logging.getLogger("mdeberta.inference")

DEFAULT_TEMPLATE = "This example is {}."


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_classifier(
    model_path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
) -> tuple[Any, Any]:
    """(model in eval mode on ``device``, tokenizer) from a fine-tuned folder, hub id or exported ONNX folder.

    A checkpoint without a trained classification head would predict noise; that is an error here. An exported
    ONNX folder (``mdeberta export-onnx``) runs in ONNX Runtime on the CPU; name a file in it
    (``out/onnx/model_int8.onnx``) to run that one.
    """
    from mdeberta.model import DebertaForSequenceClassification
    from mdeberta.onnx_model import OnnxModel, is_onnx_folder
    from mdeberta.tokenizer import DebertaTokenizer

    file = None
    if str(model_path).endswith(".onnx") and is_onnx_folder(Path(model_path).parent):
        model_path, file = Path(model_path).parent, Path(model_path).name
    if is_onnx_folder(model_path):
        onnx_model = OnnxModel(model_path, file=file)
        if onnx_model.head != "sequence-classification":
            raise UsageError(f"{model_path} is an exported {onnx_model.head} model; classification needs a "
                             "sequence-classification export")
        tokenizer_dir = tokenizer_path or model_path
        if not (Path(tokenizer_dir) / "spm.model").is_file():
            raise UsageError(f"{tokenizer_dir} has no tokenizer files (spm.model): pass --tokenizer or re-export")
        return onnx_model, DebertaTokenizer.from_pretrained(tokenizer_dir)
    model = DebertaForSequenceClassification.from_pretrained(model_path)
    missing = [k for k in getattr(model, "loading_info", {}).get("missing", []) if k.startswith("classifier")]
    if missing:
        raise UsageError(
            f"{model_path} has no trained classification head (missing {missing}); fine-tune it first "
            "(`mdeberta finetune` or `mdeberta xnli`)"
        )
    tokenizer = DebertaTokenizer.from_pretrained(tokenizer_path or model_path)
    if len(tokenizer) > model.config.vocab_size:
        raise UsageError(f"tokenizer {tokenizer_path or model_path} has {len(tokenizer)} tokens but the model's "
                         f"vocab_size is {model.config.vocab_size}: they do not belong together")
    return model.to(device or default_device()).eval(), tokenizer


def predict_logits(
    model: Any, tokenizer: Any, examples: Sequence[NLIExample], batch_size: int = 64, max_length: int = 256,
    bf16: bool = False, progress: bool = False,
) -> torch.Tensor:
    """(N, num_labels) float32 logits in the order of ``examples`` (run sorted by length, order restored)."""
    return nli_logits(model, tokenizer, examples, batch_size, max_length, bf16=bf16, progress=progress)


@dataclass
class PairPrediction:
    label: str
    probabilities: dict[str, float]


def classify_pairs(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 64, max_length: int = 256,
) -> list[PairPrediction]:
    """NLI label and per-label probabilities for (premise, hypothesis) pairs."""
    order = nli_output_order(model.config)
    examples = [NLIExample(p, h, None, index=i) for i, (p, h) in enumerate(pairs)]
    probs = predict_logits(model, tokenizer, examples, batch_size, max_length).softmax(-1)[:, order]
    return [
        PairPrediction(ID2LABEL[int(row.argmax())], {name: round(float(row[i]), 6) for i, name in enumerate(LABELS)})
        for row in probs
    ]


# --------------------------------------------------------------------------- zero-shot
def _entailment_and_contradiction_ids(config: Any) -> tuple[int, int]:
    names = model_label_names(config)
    entail = next((i for i, n in enumerate(names) if n.startswith("entail")), None)
    if entail is None:
        raise UsageError(f"zero-shot classification needs an NLI model with an 'entailment' label; it has {names}")
    contra = next((i for i, n in enumerate(names) if n.startswith("contradict")), None)
    if contra is None:  # transformers' fallback: the other end of the label list
        contra = len(names) - 1 if entail == 0 else 0
    return entail, contra


class ZeroShotClassifier:
    """Classify texts into arbitrary labels with an NLI model (transformers' zero-shot pipeline semantics).

    >>> clf = ZeroShotClassifier.from_pretrained("out/xnli/best")          # doctest: +SKIP
    >>> clf("Der Akku hält zwei Tage.", ["technology", "sports"])           # doctest: +SKIP
    {'sequence': ..., 'labels': ['technology', 'sports'], 'scores': [0.93, 0.07]}
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32, max_length: int = 256) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.entailment_id, self.contradiction_id = _entailment_and_contradiction_ids(model.config)

    @classmethod
    def from_pretrained(cls, model_path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
                        device: torch.device | str | None = None, **kwargs: Any) -> ZeroShotClassifier:
        model, tokenizer = load_classifier(model_path, tokenizer_path, device)
        return cls(model, tokenizer, **kwargs)

    def scores(
        self, sequences: Sequence[str], candidate_labels: Sequence[str], hypothesis_template: str = DEFAULT_TEMPLATE,
        multi_label: bool = False,
    ) -> torch.Tensor:
        """(num_sequences, num_labels) scores in the order of ``candidate_labels``."""
        labels = check_candidate_labels(candidate_labels)
        if "{}" not in hypothesis_template:
            raise UsageError(f"hypothesis_template must contain '{{}}' for the label, got {hypothesis_template!r}")
        if not sequences or any(not isinstance(s, str) or not s.strip() for s in sequences):
            raise UsageError("sequences must be a non-empty list of non-empty strings")
        hypotheses = [hypothesis_template.format(label) for label in labels]
        examples = [NLIExample(seq, hyp, None) for seq in sequences for hyp in hypotheses]
        logits = predict_logits(self.model, self.tokenizer, examples, self.batch_size, self.max_length)
        return zero_shot_scores(logits.view(len(sequences), len(labels), -1), self.model.config, multi_label)

    def __call__(
        self, sequences: str | Sequence[str], candidate_labels: str | Sequence[str],
        hypothesis_template: str = DEFAULT_TEMPLATE, multi_label: bool = False,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Like the transformers pipeline: per sequence ``{"sequence", "labels", "scores"}``, best label first."""
        single = isinstance(sequences, str)
        seqs = [sequences] if single else list(sequences)
        labels = check_candidate_labels(candidate_labels)
        scores = self.scores(seqs, labels, hypothesis_template, multi_label)
        results = []
        for seq, row in zip(seqs, scores.tolist()):
            ranked = sorted(range(len(labels)), key=lambda i: -row[i])
            results.append({"sequence": seq, "labels": [labels[i] for i in ranked],
                            "scores": [row[i] for i in ranked]})
        return results[0] if single else results


# --------------------------------------------------------------------------- text classification / regression
class TextClassifier:
    """Labels (or values) of texts or text pairs from a model fine-tuned with ``--task text-classification`` or
    ``--task regression``; a PyTorch folder, hub id or exported ONNX folder. Multi-label models return every label
    whose probability reaches the threshold they were trained with.

    >>> clf = TextClassifier.from_pretrained("out/sib200/best")                              # doctest: +SKIP
    >>> clf("Der FC gewann das Spiel 3:0.")                                                  # doctest: +SKIP
    {'label': 'sports', 'scores': {'sports': 0.91, 'politics': 0.02, ...}}
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32, max_length: int = 256) -> None:
        from mdeberta.tasks import TaskOptions
        from mdeberta.tasks.regression import RegressionTask
        from mdeberta.tasks.text_classification import TextClassificationTask

        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        regression = model.config.problem_type == "regression" or model.config.num_labels == 1
        cls = RegressionTask if regression else TextClassificationTask
        self.task = cls.for_model(model.config, tokenizer, TaskOptions(max_seq_length=max_length))

    @classmethod
    def from_pretrained(cls, model_path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
                        device: torch.device | str | None = None, **kwargs: Any) -> TextClassifier:
        return cls(*load_classifier(model_path, tokenizer_path, device), **kwargs)

    def __call__(self, texts: str | Sequence[str], text_pairs: str | Sequence[str] | None = None
                 ) -> dict[str, Any] | list[dict[str, Any]]:
        from mdeberta.tasks.text_classification import TextExample

        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        pairs = ([text_pairs] if isinstance(text_pairs, str) else list(text_pairs)) if text_pairs is not None else None
        if not items or any(not isinstance(t, str) or not t.strip() for t in items):
            raise UsageError("texts must be non-empty strings")
        if pairs is not None and len(pairs) != len(items):
            raise UsageError(f"{len(items)} texts but {len(pairs)} text pairs")
        examples = [TextExample(t, None if pairs is None else pairs[i], None, index=i) for i, t in enumerate(items)]
        results = self.task.predict(self.model, examples, self.batch_size)
        return results[0] if single else results


# --------------------------------------------------------------------------- token classification
def load_token_classifier(model_path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
                          device: torch.device | str | None = None) -> tuple[Any, Any]:
    """(token-classification model in eval mode, tokenizer); a checkpoint without a trained head is an error."""
    from mdeberta.model import DebertaForTokenClassification
    from mdeberta.tokenizer import DebertaTokenizer

    model = DebertaForTokenClassification.from_pretrained(model_path)
    missing = [k for k in getattr(model, "loading_info", {}).get("missing", []) if k.startswith("classifier")]
    if missing:
        raise UsageError(f"{model_path} has no trained token-classification head (missing {missing}); fine-tune it "
                         "first (`mdeberta finetune --task token-classification`)")
    return model.to(device or default_device()).eval(), DebertaTokenizer.from_pretrained(tokenizer_path or model_path)


class TokenClassifier:
    """Entities in raw text, with character spans in that text (sub-tokens aggregated into words, words into
    entities with seqeval's chunking; the score is the mean probability of the entity's word labels).

    >>> ner = TokenClassifier.from_pretrained("out/ner/best")                       # doctest: +SKIP
    >>> ner("Angela Merkel besuchte Paris.")                                       # doctest: +SKIP
    [{'label': 'PER', 'text': 'Angela Merkel', 'start': 0, 'end': 13, 'score': 0.98}, ...]
    """

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 512, stride: int = 64) -> None:
        self.model, self.tokenizer, self.max_length, self.stride = model, tokenizer, max_length, stride

    @classmethod
    def from_pretrained(cls, model_path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
                        device: torch.device | str | None = None, **kwargs: Any) -> TokenClassifier:
        return cls(*load_token_classifier(model_path, tokenizer_path, device), **kwargs)

    def windows(self, text: str) -> Any:
        """The text's token windows (overlapping by ``stride``), with word ids and character offsets."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self.tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=self.max_length,
                              return_overflowing_tokens=True, stride=self.stride)

    def entities(self, text: str, enc: Any, probs: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        """Entities from each window's (tokens, labels) probabilities: sub-tokens aggregated into words (the first
        sub-token of a word decides its label, the first window wins), words into entities (seqeval chunking)."""
        from mdeberta.data.ner import get_entities

        words: dict[int, tuple[int, int, str, float]] = {}  # word -> (start, end, label, probability)
        id2label = self.model.config.id2label
        for row, row_probs in enumerate(probs):
            for k, (w, (start, end)) in enumerate(zip(enc.word_ids(row), enc["offset_mapping"][row])):
                if w is None:
                    continue
                if w not in words:
                    p, label = row_probs[k].max(-1)
                    words[w] = (start, end, id2label[int(label)], float(p))
                elif end > words[w][1]:
                    words[w] = (words[w][0], end, *words[w][2:])
        spans = [words[w] for w in sorted(words)]
        entities = []
        for kind, first, last in get_entities([s[2] for s in spans]):
            start, end = spans[first][0], spans[last][1]
            score = sum(s[3] for s in spans[first:last + 1]) / (last - first + 1)
            entities.append({"label": kind, "text": text[start:end], "start": start, "end": end,
                             "score": round(score, 6)})
        return entities

    @torch.no_grad()
    def __call__(self, text: str) -> list[dict[str, Any]]:
        enc = self.windows(text)
        probs = []
        for row in range(len(enc["input_ids"])):
            ids = torch.tensor([enc["input_ids"][row]], device=self.model.device)
            probs.append(self.model(input_ids=ids).logits[0].float().softmax(-1))
        return self.entities(text, enc, probs)


# --------------------------------------------------------------------------- question answering
def load_question_answerer(model_path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
                           device: torch.device | str | None = None) -> tuple[Any, Any]:
    """(QA model in eval mode, tokenizer); a checkpoint without a trained span head is an error."""
    from mdeberta.model import DebertaForQuestionAnswering
    from mdeberta.tokenizer import DebertaTokenizer

    model = DebertaForQuestionAnswering.from_pretrained(model_path, num_labels=2)
    missing = [k for k in getattr(model, "loading_info", {}).get("missing", []) if k.startswith("qa_outputs")]
    if missing:
        raise UsageError(f"{model_path} has no trained question-answering head (missing {missing}); fine-tune it "
                         "first (`mdeberta finetune --task question-answering`)")
    return model.to(device or default_device()).eval(), DebertaTokenizer.from_pretrained(tokenizer_path or model_path)


class QuestionAnswerer:
    """Extractive answers with their character span in the context (long contexts in overlapping windows).

    >>> qa = QuestionAnswerer.from_pretrained("out/qa/best")                                   # doctest: +SKIP
    >>> qa("Wo lebt Anna?", "Anna lebt seit 2010 in Oslo.")                                    # doctest: +SKIP
    {'answer': 'Oslo', 'start': 22, 'end': 26, 'score': 11.3}
    """

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 384, stride: int = 128,
                 max_answer_length: int = 30) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.stride, self.max_answer_length = max_length, stride, max_answer_length

    @classmethod
    def from_pretrained(cls, model_path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
                        device: torch.device | str | None = None, **kwargs: Any) -> QuestionAnswerer:
        return cls(*load_question_answerer(model_path, tokenizer_path, device), **kwargs)

    def __call__(self, question: str, context: str) -> dict[str, Any]:
        from mdeberta.data.qa import QAExample, encode_qa
        from mdeberta.tasks.question_answering import answer_questions

        if not question.strip() or not context.strip():
            raise UsageError("question and context must be non-empty strings")
        example = QAExample("0", question, context, [])
        stride = min(self.stride, self.max_length // 4)  # short windows (small max_length) keep some room
        encoded = encode_qa(self.tokenizer, [example], self.max_length, stride)
        best = answer_questions(self.model, self.tokenizer, [example], encoded,
                                max_answer_length=self.max_answer_length)[0]
        return {"answer": best["text"], "start": best["start"], "end": best["end"], "score": best["score"]}


def zero_shot_scores(logits: torch.Tensor, config: Any, multi_label: bool = False) -> torch.Tensor:
    """(sequences, labels) scores from the NLI logits (sequences, labels, classes) of each (text, hypothesis) pair:
    softmax over the labels' entailment logits, or (multi-label, or one label) per label the entailment
    probability against contradiction (transformers' zero-shot pipeline)."""
    entail, contra = _entailment_and_contradiction_ids(config)
    if multi_label or logits.shape[1] == 1:
        return logits[..., [contra, entail]].softmax(-1)[..., 1]
    return logits[..., entail].softmax(-1)


def check_candidate_labels(candidate_labels: str | Sequence[str]) -> list[str]:
    if isinstance(candidate_labels, str):
        candidate_labels = [s.strip() for s in candidate_labels.split(",")]
    labels = [s for s in candidate_labels if isinstance(s, str) and s.strip()]
    if not labels or len(labels) != len(candidate_labels):
        raise UsageError(f"candidate_labels must be non-empty strings, got {list(candidate_labels)!r}")
    if len(set(labels)) != len(labels):
        raise UsageError(f"candidate_labels contain duplicates: {labels}")
    return labels


def zero_shot_classify(
    model: Any, tokenizer: Any, sequences: str | Sequence[str], candidate_labels: str | Sequence[str],
    hypothesis_template: str = DEFAULT_TEMPLATE, multi_label: bool = False,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Functional form of :class:`ZeroShotClassifier`."""
    return ZeroShotClassifier(model, tokenizer)(sequences, candidate_labels, hypothesis_template, multi_label)


__all__ = [
    "DEFAULT_TEMPLATE", "LABEL2ID", "PairPrediction", "QuestionAnswerer", "TextClassifier", "TokenClassifier",
    "ZeroShotClassifier",
    "classify_pairs", "load_classifier", "load_question_answerer", "load_token_classifier", "nli_output_order",
    "predict_logits", "zero_shot_classify",
]
