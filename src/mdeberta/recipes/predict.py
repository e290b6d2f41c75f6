"""``mdeberta predict`` (NLI on pairs, or entities in texts) and ``mdeberta zero-shot`` (text classification
through NLI).

    echo '{"premise": "A man plays guitar.", "hypothesis": "Someone makes music."}' | mdeberta predict --model M
    mdeberta predict --model M --input pairs.tsv --output preds.jsonl
    mdeberta predict --task token-classification --model NER --text "Angela Merkel besuchte Paris."
    mdeberta zero-shot --model M --labels "sport,politik,wirtschaft" "Der FC gewann 3:0."
    mdeberta zero-shot --model M --labels "urgent,billing" --multi-label --input texts.txt

Both write one JSON object per line. ``predict`` reads JSONL objects with premise/hypothesis keys, or TSV lines
``premise<TAB>hypothesis`` (a header line naming the columns is allowed); ``zero-shot`` reads one text per line
(or texts given as arguments).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mdeberta.arguments import CommonConfig, add_config_arguments
from mdeberta.data.nli import HYPOTHESIS_KEYS, PREMISE_KEYS, NLIDataError, open_text
from mdeberta.inference import DEFAULT_TEMPLATE

logger = logging.getLogger("mdeberta.predict")


def _lines(path: str) -> Iterator[tuple[int, str]]:
    if path == "-":
        yield from enumerate(sys.stdin, start=1)
        return
    if not Path(path).is_file():
        raise NLIDataError(f"input file not found: {path}")
    with open_text(Path(path)) as f:
        yield from enumerate(f, start=1)


def read_pairs(path: str) -> list[tuple[str, str]]:
    """Pairs from JSONL or TSV (file or '-' for stdin); a line that is neither is an error naming the line."""
    pairs: list[tuple[str, str]] = []
    for line_no, line in _lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = {k.lower(): v for k, v in json.loads(line).items()}
            except (json.JSONDecodeError, AttributeError) as e:
                raise NLIDataError(f"{path}:{line_no}: invalid JSON ({e})") from e
            p = next((obj[k] for k in PREMISE_KEYS if k in obj), None)
            h = next((obj[k] for k in HYPOTHESIS_KEYS if k in obj), None)
            if not isinstance(p, str) or not isinstance(h, str):
                raise NLIDataError(f"{path}:{line_no}: expected string keys premise and hypothesis, got {sorted(obj)}")
            pairs.append((p, h))
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise NLIDataError(f"{path}:{line_no}: expected 'premise<TAB>hypothesis' or a JSON object")
        if line_no == 1 and fields[0].strip().lower() in PREMISE_KEYS:
            continue  # header
        pairs.append((fields[0], fields[1]))
    if not pairs:
        raise NLIDataError(f"no premise/hypothesis pairs in {'stdin' if path == '-' else path}")
    return pairs


def _write_jsonl(path: str, records: list[dict]) -> None:
    out = _open_output(path)
    try:
        for r in records:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()


def _open_output(path: str) -> IO[str]:
    if path == "-":
        return sys.stdout
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w", encoding="utf-8")


def cmd_predict_tokens(args: argparse.Namespace) -> int:
    """Entities with character spans, one JSON object per text."""
    from mdeberta.inference import TokenClassifier

    texts = list(args.text or []) or [line.rstrip("\r\n") for _, line in _lines(args.input) if line.strip()]
    if not texts:
        raise NLIDataError("no texts: give them with --text or --input FILE / '-' for stdin")
    ner = TokenClassifier.from_pretrained(args.model, args.tokenizer, args.device,
                                          max_length=args.max_seq_length)
    results = [{"text": t, "entities": ner(t)} for t in texts]
    _write_jsonl(args.output, results)
    return 0


def _json_object(path: str, line_no: int, line: str) -> dict:
    """One input line as a JSON object; anything else is an error naming the file and line."""
    from mdeberta.jsonl import json_object

    return json_object(line, f"{path}:{line_no}", NLIDataError, "JSON object")


def cmd_predict_answers(args: argparse.Namespace) -> int:
    """Answers with character spans for JSON lines {"question": ..., "context": ...}."""
    from mdeberta.inference import QuestionAnswerer

    items = []
    for line_no, line in _lines(args.input):
        if not line.strip():
            continue
        obj = _json_object(args.input, line_no, line)
        if not isinstance(obj.get("question"), str) or not isinstance(obj.get("context"), str):
            raise NLIDataError(f"{args.input}:{line_no}: expected string keys question and context")
        items.append(obj)
    if not items:
        raise NLIDataError("no questions: give JSON lines {\"question\": ..., \"context\": ...} with --input")
    qa = QuestionAnswerer.from_pretrained(args.model, args.tokenizer, args.device, max_length=args.max_seq_length)
    results = [{**obj, **qa(obj["question"], obj["context"])} for obj in items]
    _write_jsonl(args.output, results)
    return 0


def read_texts(path: str) -> list[dict]:
    """Texts to classify: JSON objects with ``text`` (and ``text_pair``) or one text per line."""
    items: list[dict] = []
    for line_no, line in _lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            obj = _json_object(path, line_no, line)
            if not isinstance(obj.get("text"), str) or not obj["text"].strip():
                raise NLIDataError(f"{path}:{line_no}: expected an object with a non-empty string 'text'")
            if "text_pair" in obj and not isinstance(obj["text_pair"], str):
                raise NLIDataError(f"{path}:{line_no}: 'text_pair' must be a string")
            items.append(obj)
        else:
            items.append({"text": line})
    return items


def cmd_predict_texts(args: argparse.Namespace) -> int:
    """Text classification / regression: texts (or JSON objects with text / text_pair) in, labels or values out."""
    from mdeberta.inference import TextClassifier

    items = [{"text": t} for t in args.text] if args.text else read_texts(args.input)
    if not items:
        raise NLIDataError("no texts: give them with --text or --input FILE / '-' for stdin")
    if len({"text_pair" in obj for obj in items}) > 1:
        raise NLIDataError("some inputs have a 'text_pair' and others not: a model takes one input form")
    clf = TextClassifier.from_pretrained(args.model, args.tokenizer, args.device, batch_size=args.batch_size,
                                         max_length=args.max_seq_length)
    pairs = [obj["text_pair"] for obj in items] if "text_pair" in items[0] else None
    results = clf([obj["text"] for obj in items], pairs)
    _write_jsonl(args.output, [{**obj, **r} for obj, r in zip(items, results)])
    return 0


def cmd_predict_choices(args: argparse.Namespace) -> int:
    """Multiple choice: JSON objects with a context and its endings in, the chosen ending and scores out."""
    from mdeberta.data.records import Row
    from mdeberta.tasks import TaskOptions
    from mdeberta.tasks.multiple_choice import ChoiceExample, MultipleChoiceTask, parse_choice_row

    examples, items = [], []
    for line_no, line in _lines(args.input):
        if not line.strip():
            continue
        obj = _json_object(args.input, line_no, line)
        context, endings, _ = parse_choice_row(Row(obj, f"{args.input}:{line_no}"), list(obj))
        if not isinstance(endings, list) or len(endings) < 2:
            raise NLIDataError(f"{args.input}:{line_no}: needs two or more endings")
        examples.append(ChoiceExample(context, endings, None, f"{args.input}:{line_no}", index=len(items)))
        items.append(obj)
    if not examples:
        raise NLIDataError("no examples: JSON lines with context and endings (or SWAG / COPA fields)")
    from mdeberta.inference import default_device
    from mdeberta.model import DebertaForMultipleChoice
    from mdeberta.tokenizer import DebertaTokenizer

    model = DebertaForMultipleChoice.from_pretrained(args.model).to(args.device or default_device()).eval()
    tokenizer = DebertaTokenizer.from_pretrained(args.tokenizer or args.model)
    task = MultipleChoiceTask(TaskOptions(max_seq_length=args.max_seq_length), tokenizer)
    predictions = task.predict(model, examples, args.batch_size)
    _write_jsonl(args.output, [{**obj, "label": p["label"], "scores": p["scores"]}
                               for obj, p in zip(items, predictions)])
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from mdeberta.inference import classify_pairs, load_classifier

    if args.task == "multiple-choice":
        return cmd_predict_choices(args)

    if args.task in ("text-classification", "regression"):
        return cmd_predict_texts(args)
    if args.task == "token-classification":
        return cmd_predict_tokens(args)
    if args.task == "question-answering":
        return cmd_predict_answers(args)
    pairs = read_pairs(args.input)
    model, tokenizer = load_classifier(args.model, args.tokenizer, args.device)
    predictions = classify_pairs(model, tokenizer, pairs, args.batch_size, args.max_seq_length)
    out = _open_output(args.output)
    try:
        for (p, h), pred in zip(pairs, predictions):
            out.write(json.dumps({"premise": p, "hypothesis": h, "label": pred.label,
                                  "probabilities": pred.probabilities}, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_zero_shot(args: argparse.Namespace) -> int:
    from mdeberta.inference import ZeroShotClassifier

    texts = list(args.texts) or [line.rstrip("\r\n") for _, line in _lines(args.input) if line.strip()]
    if not texts:
        raise NLIDataError("no texts: give them as arguments or with --input FILE / '-' for stdin")
    clf = ZeroShotClassifier.from_pretrained(args.model, args.tokenizer, args.device,
                                             batch_size=args.batch_size, max_length=args.max_seq_length)
    results = clf(texts, args.labels, args.template, args.multi_label)
    _write_jsonl(args.output, results)
    return 0


def _checked(command):
    """The output file is checked before the model is loaded or anything predicted."""
    def run(args: argparse.Namespace) -> int:
        from mdeberta.outputs import check_output_file

        if args.output != "-":
            check_output_file(args.output, [args.input if args.input != "-" else None, args.model],
                              overwrite=args.overwrite, flag="--output")
        return command(args)

    return run


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="fine-tuned NLI model folder, hub id, or `mdeberta export-onnx` folder (or a .onnx file in it)")
    add_config_arguments(p, CommonConfig, only=("tokenizer", "device"))
    p.add_argument("--output", default="-", help="JSON lines output file ('-' = stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=256)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="NLI predictions for premise/hypothesis pairs (JSON lines out)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["nli", "text-classification", "regression", "multiple-choice",
                                      "token-classification", "question-answering"], default="nli",
                   help="nli: pairs in, labels out; text-classification / regression: texts (or JSON objects with "
                        "text and text_pair) in, labels and scores (values) out; multiple-choice: JSON lines with "
                        "context and endings in, the chosen ending's index out; token-classification: texts "
                        "in, entities with character spans; "
                        "question-answering: JSON lines with question and context in, answers with spans out")
    p.add_argument("--input", default="-", help="JSONL or TSV pairs file, or texts one per line ('-' = stdin)")
    p.add_argument("--text", nargs="+", default=None,
                   help="text-classification / regression / token-classification: texts given directly")
    _common(p)
    p.set_defaults(func=_checked(cmd_predict))

    z = subparsers.add_parser("zero-shot", help="zero-shot text classification through an NLI model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    z.add_argument("texts", nargs="*", help="texts to classify (or use --input)")
    z.add_argument("--labels", required=True, help="comma-separated candidate labels")
    z.add_argument("--template", default=DEFAULT_TEMPLATE, help="hypothesis template with {} for the label")
    z.add_argument("--multi-label", action="store_true",
                   help="score labels independently (entailment vs contradiction) instead of a softmax over labels")
    z.add_argument("--input", default="-", help="one text per line ('-' = stdin) when no texts are given")
    _common(z)
    z.set_defaults(func=_checked(cmd_zero_shot))
