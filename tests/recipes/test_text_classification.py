"""Text classification, regression and multiple choice end to end on learnable synthetic data: fine-tuning
reaches the pattern, labels land in config.json, per-file evaluation tables, predict and the Python API agree
with evaluation, bad input names the file, line and what is allowed."""

from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import assert_cli_error
from mdeberta.cli import main
from task_helpers import choice_rows, multi_label_rows, topic_rows, write_rows

pytestmark = pytest.mark.usefixtures("single_thread")
FAST = ["--batch-size", "16", "--learning-rate", "3e-3", "--warmup-ratio", "0.1", "--eval-every", "1000",
        "--log-every", "50", "--save-every", "0", "--max-seq-length", "32", "--device", "cpu"]


def test_text_classification_learns_and_evaluates_per_file(tagging_backbone, tmp_path, capsys):
    from mdeberta.config import DebertaConfig
    from mdeberta.inference import TextClassifier

    train = write_rows(tmp_path / "train.tsv", topic_rows(300, seed=1))
    dev = write_rows(tmp_path / "dev.csv", topic_rows(60, seed=2))  # CSV beside TSV: same reader
    out = tmp_path / "run"
    assert main(["finetune", "--task", "text-classification", "--model", str(tagging_backbone), "--train-file",
                 str(train), "--dev-file", str(dev), "--output-dir", str(out), "--epochs", "15", *FAST]) == 0
    info = json.loads((out / "best" / "training_info.json").read_text())
    assert info["task"] == "text-classification" and info["dev_accuracy"] >= 90, info
    assert info["labels"] == ["none", "people", "places"] and info["input_form"] == "single"
    config = DebertaConfig.from_pretrained(out / "best")
    assert config.id2label == {0: "none", 1: "people", 2: "places"} and config.label2id["places"] == 2
    # Per-file tables (zero-shot cross-lingual layout): one column per NAME=PATH.
    test_a = write_rows(tmp_path / "a.jsonl", topic_rows(45, seed=3))
    test_b = write_rows(tmp_path / "b.tsv", topic_rows(30, seed=4))
    report = tmp_path / "report"
    assert main(["evaluate", "--task", "text-classification", "--model", str(out / "best"), "--eval-file",
                 f"en={test_a}", f"de={test_b}", "--output-dir", str(report), "--max-seq-length", "32"]) == 0
    results = json.loads((report / "classification_test.json").read_text())
    assert set(results["scores"]) == {"en", "de"} and results["num_examples"] == {"en": 45, "de": 30}
    assert min(s["accuracy"] for s in results["scores"].values()) >= 90
    assert set(results["scores"]["en"]) == {"accuracy", "macro_f1", "mcc"}
    assert (report / "classification_test.png").stat().st_size > 0
    assert "| accuracy |" in (report / "classification_test.md").read_text()
    records = [json.loads(line) for line in (report / "predictions_test.jsonl").read_text().splitlines()]
    en = [r for r in records if r["language"] == "en"]
    hits = sum(r["gold"] == r["predicted"] for r in en)
    assert 100 * hits / len(en) == pytest.approx(results["scores"]["en"]["accuracy"])  # recomputable
    # predict (CLI) and the Python API give the records' labels and scores.
    clf = TextClassifier.from_pretrained(out / "best", device="cpu", max_length=32)
    api = clf([r["text"] for r in en])
    assert [a["label"] for a in api] == [r["predicted"] for r in en]
    assert api[0]["scores"] == pytest.approx(en[0]["scores"], abs=1e-5)
    capsys.readouterr()
    assert main(["predict", "--task", "text-classification", "--model", str(out / "best"), "--text",
                 en[0]["text"], en[1]["text"], "--max-seq-length", "32"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["label"] for x in lines] == [r["predicted"] for r in en[:2]] and lines[0]["text"] == en[0]["text"]
    # A dev label the model does not know names file, line and the known labels.
    bad = write_rows(tmp_path / "bad.tsv", [{"text": "anna went to oslo", "label": "planets"}])
    assert_cli_error(capsys, ["evaluate", "--task", "text-classification", "--model", str(out / "best"),
                              "--eval-file", str(bad), "--output-dir", str(tmp_path / "r2")],
                     r"bad.tsv:2: unknown label 'planets'; the model's labels are \['none', 'people', 'places'\]")
    # A regression model is not evaluated as a classifier, nor the reverse.
    assert_cli_error(capsys, ["evaluate", "--task", "regression", "--model", str(out / "best"), "--eval-file",
                              str(test_b), "--output-dir", str(tmp_path / "r3")], "is a classification model")


def test_multi_label_regression_and_multiple_choice_learn(tagging_backbone, tmp_path):
    from mdeberta.config import DebertaConfig
    from mdeberta.inference import TextClassifier

    cols = ("text", "kinds")
    train = write_rows(tmp_path / "ml.tsv", multi_label_rows(300, seed=1), cols)  # "people,places"; empty = none
    dev = write_rows(tmp_path / "ml_dev.jsonl", multi_label_rows(60, seed=2), cols)  # JSON lists
    out = tmp_path / "ml"
    assert main(["finetune", "--task", "text-classification", "--multi-label", "--label-column", "kinds",
                 "--model", str(tagging_backbone), "--train-file", str(train), "--dev-file", str(dev),
                 "--output-dir", str(out), "--epochs", "30", "--threshold", "0.4", *FAST,
                 "--learning-rate", "1e-3"]) == 0
    info = json.loads((out / "best" / "training_info.json").read_text())
    assert info["dev_micro_f1"] >= 90 and info["labels"] == ["people", "places"] and info["multi_label"], info
    config = DebertaConfig.from_pretrained(out / "best")
    assert config.problem_type == "multi_label_classification" and config.extra["multi_label_threshold"] == 0.4
    result = TextClassifier.from_pretrained(out / "best", device="cpu")(["anna went to oslo", "the a went"])
    assert [r["label"] for r in result] == [["people", "places"], []]

    train = write_rows(tmp_path / "reg.tsv", topic_rows(300, seed=1), ("text", "count"))
    dev = write_rows(tmp_path / "reg_dev.tsv", topic_rows(60, seed=2), ("text", "count"))
    out = tmp_path / "reg"
    assert main(["finetune", "--task", "regression", "--label-column", "count", "--model", str(tagging_backbone),
                 "--train-file", str(train), "--dev-file", str(dev), "--output-dir", str(out), "--epochs", "15",
                 *FAST]) == 0
    info = json.loads((out / "best" / "training_info.json").read_text())
    assert info["task"] == "regression" and info["dev_pearson"] >= 80, info
    assert DebertaConfig.from_pretrained(out / "best").problem_type == "regression"
    value = TextClassifier.from_pretrained(out / "best", device="cpu")("oslo lima paris went")["value"]
    assert isinstance(value, float)

    rows = choice_rows(300, seed=1)
    train = write_rows(tmp_path / "mc.jsonl", rows, ("context", "endings", "label"))
    dev = write_rows(tmp_path / "mc_dev.jsonl", choice_rows(40, seed=2), ("context", "endings", "label"))
    out = tmp_path / "mc"
    assert main(["finetune", "--task", "multiple-choice", "--model", str(tagging_backbone), "--train-file",
                 str(train), "--dev-file", str(dev), "--output-dir", str(out), "--epochs", "3", *FAST]) == 0
    info = json.loads((out / "best" / "training_info.json").read_text())
    assert info["task"] == "multiple-choice" and info["dev_accuracy"] >= 90, info
    assert main(["evaluate", "--task", "multiple-choice", "--model", str(out / "best"), "--eval-file",
                 f"en={dev}", "--output-dir", str(tmp_path / "mc_report")]) == 0
    assert json.loads((tmp_path / "mc_report" / "multiple_choice_test.json").read_text())["avg"]["accuracy"] >= 90
    records = [json.loads(x) for x in (tmp_path / "mc_report" / "predictions_test.jsonl").read_text().splitlines()]
    predicted = tmp_path / "mc_pred.jsonl"
    assert main(["predict", "--task", "multiple-choice", "--model", str(out / "best"), "--input", str(dev),
                 "--output", str(predicted)]) == 0
    lines = [json.loads(x) for x in predicted.read_text().splitlines()]
    assert [x["label"] for x in lines] == [r["predicted"] for r in records]  # predict = evaluate's predictions


def test_class_weights_weigh_the_loss(tagging_backbone, tmp_path):
    from mdeberta.tasks import TaskOptions, make_task
    from mdeberta.tokenizer import DebertaTokenizer

    tokenizer = DebertaTokenizer.from_pretrained(tagging_backbone)
    rows = [{"text": "anna went", "label": "people"}] * 6 + [{"text": "oslo went", "label": "places"}] * 2
    train = write_rows(tmp_path / "imb.tsv", rows)
    task = make_task("text-classification", TaskOptions(class_weights="balanced", max_seq_length=16), tokenizer)
    task.load_training([str(train)], None)
    assert task.weights.tolist() == pytest.approx([8 / (2 * 6), 8 / (2 * 2)])  # n / (k x count)
    torch.manual_seed(0)
    model = task.build_model(str(tagging_backbone), tokenizer, random_init=False).eval()
    batch = task.collate(task.train_features, tokenizer.pad_token_id)
    loss, out = task.training_loss(model, batch)
    expected = torch.nn.functional.cross_entropy(out.logits, batch["labels"], weight=task.weights)
    assert float(loss) == pytest.approx(float(expected)) and float(loss) != pytest.approx(float(model(**batch).loss))
    manual = make_task("text-classification", TaskOptions(class_weights="1,3"), tokenizer)
    manual.load_training([str(train)], None)
    assert manual.weights.tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match=r"2 non-negative numbers, one per label \['people', 'places'\]"):
        make_task("text-classification", TaskOptions(class_weights="1,2,3"), tokenizer).load_training(
            [str(train)], None)


def test_bad_input_names_file_line_and_columns(tagging_backbone, tmp_path, capsys):
    from mdeberta.data.records import RecordsError, read_table
    from mdeberta.tasks.multiple_choice import read_choices
    from mdeberta.tasks.text_classification import TextDataError, read_text_examples

    def finetune(train, *extra):
        return ["finetune", "--task", "text-classification", "--model", str(tagging_backbone), "--train-file",
                str(train), "--output-dir", str(tmp_path / "out"), "--max-steps", "1", "--device", "cpu", *extra]

    wrong = write_rows(tmp_path / "wrong.tsv", topic_rows(4), ("text", "count"))
    assert_cli_error(capsys, finetune(wrong, "--label-column", "topic"),
                     r"wrong.tsv: no column 'topic' \(--label-column\); it has \['text', 'count'\]")
    notext = tmp_path / "notext.tsv"
    notext.write_text("body\tlabel\nhello\tx\n")
    with pytest.raises(TextDataError, match=r"notext.tsv: no text column .* it has \['body', 'label'\]"):
        read_text_examples(notext, "train", "text-classification")
    reg = tmp_path / "reg.tsv"
    reg.write_text("text\tscore\nanna\t1.5\noslo\thigh\n")
    assert_cli_error(capsys, ["finetune", "--task", "regression", "--model", str(tagging_backbone), "--train-file",
                              str(reg), "--output-dir", str(tmp_path / "r"), "--max-steps", "1"],
                     r"reg.tsv:3: regression target 'score' is 'high', not a number")
    header_only = tmp_path / "empty.tsv"
    header_only.write_text("text\tlabel\n")
    assert_cli_error(capsys, finetune(header_only), r"empty.tsv: no rows")
    unlabelled = tmp_path / "unlabelled.tsv"
    unlabelled.write_text("text\tlabel\nanna\tpeople\noslo\t\n")
    assert_cli_error(capsys, finetune(unlabelled), r"unlabelled.tsv:3: a training example without a label")
    one = write_rows(tmp_path / "one.tsv", [{"text": "anna", "label": "people"}] * 3)
    assert_cli_error(capsys, finetune(one), r"one label \(\['people'\]\)")
    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes(b"text\tlabel\nanna\tpeople\ncaf\xe9\tplaces\n")
    with pytest.raises(RecordsError, match=r"latin1.tsv:3: not UTF-8"):
        read_table(latin1)
    fields = tmp_path / "fields.tsv"
    fields.write_text("text\tlabel\nanna\tpeople\textra\n")
    with pytest.raises(RecordsError, match=r"fields.tsv:2: 3 fields but the header has 2"):
        read_table(fields)
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    with pytest.raises(RecordsError, match=r"bad.jsonl:2: not a JSON record"):
        read_table(jsonl)
    quoted = tmp_path / "quoted.tsv"
    quoted.write_text('text\tlabel\n"he said ""hi""\tthen left"\tpeople\n')  # standard CSV quoting in a TSV
    assert read_text_examples(quoted, "train", "text-classification")[0].text == 'he said "hi"\tthen left'
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"context": "who", "endings": ["anna", "oslo"], "label": 2}) + "\n")
    with pytest.raises(TextDataError, match=r"mc.jsonl:1: label 2 but only 2 endings"):
        read_choices(mc, "train")
    copa = write_rows(tmp_path / "copa.tsv", [{"premise": "The man fell.", "question": "cause", "choice1": "He "
                                              "slipped.", "choice2": "He laughed.", "label": 0}],
                      ("premise", "question", "choice1", "choice2", "label"))
    example = read_choices(copa, "train")[0]
    assert example.context == "The man fell. What was the cause?" and example.endings == ["He slipped.",
                                                                                          "He laughed."]


def test_hub_dataset_with_class_labels(monkeypatch):
    """``NAME:CONFIG`` goes to datasets.load_dataset; ClassLabel ids become their names, GLUE's -1 is no label."""
    datasets = pytest.importorskip("datasets")
    from mdeberta.tasks.text_classification import read_text_examples

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"]),
                                  "idx": datasets.Value("int32")})
    local = datasets.Dataset.from_dict({"sentence": ["good film", "bad film", "hidden"], "label": [1, 0, -1],
                                        "idx": [0, 1, 2]}, features)
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split: calls.append((name, config, split))
                        or local)
    examples = read_text_examples("nyu-mll/glue:sst2", "validation", "text-classification")
    assert calls == [("nyu-mll/glue", "sst2", "validation")]
    assert [(e.text, e.label) for e in examples] == [("good film", "positive"), ("bad film", "negative"),
                                                     ("hidden", None)]
    assert examples[0].where == "nyu-mll/glue:sst2[validation] row 0"


def test_onnx_export_and_int8_check_for_text_classification(tagging_backbone, tmp_path, capsys):
    """export-onnx takes a text classifier: the int8 check reads a labelled text file through the model's task,
    and TextClassifier on the ONNX folder gives PyTorch's labels."""
    pytest.importorskip("onnxruntime")
    from mdeberta.inference import TextClassifier
    from mdeberta.tasks import TaskOptions, task_for_model
    from mdeberta.tasks.regression import RegressionTask
    from mdeberta.tasks.text_classification import TextClassificationTask
    from mdeberta.tokenizer import DebertaTokenizer

    train = write_rows(tmp_path / "train.tsv", topic_rows(60, seed=1))
    model_dir = tmp_path / "run"
    assert main(["finetune", "--task", "text-classification", "--model", str(tagging_backbone), "--train-file",
                 str(train), "--output-dir", str(model_dir), "--max-steps", "3", *FAST]) == 0
    check = write_rows(tmp_path / "check.tsv", topic_rows(30, seed=5))
    out = tmp_path / "onnx"
    assert main(["export-onnx", str(model_dir / "final"), str(out), "--int8", "--check-file", str(check)]) == 0
    info = json.loads((out / "onnx_export.json").read_text())["int8"]
    assert info["task"] == "text-classification" and info["examples"] == 30 and 0 <= info["accuracy_int8"] <= 100
    assert "argmax agreement with fp32" in capsys.readouterr().out
    texts = [r["text"] for r in topic_rows(12, seed=6)]
    expected = TextClassifier.from_pretrained(model_dir / "final", device="cpu")(texts)
    got = TextClassifier.from_pretrained(out)(texts)
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert got[0]["scores"] == pytest.approx(expected[0]["scores"], abs=1e-4)
    # The task is read from the config: these labels are not NLI's, one output is regression.
    from mdeberta.config import DebertaConfig

    config = DebertaConfig.from_pretrained(model_dir / "final")
    tokenizer = DebertaTokenizer.from_pretrained(model_dir / "final")
    assert isinstance(task_for_model(config, tokenizer), TextClassificationTask)
    assert task_for_model(config, tokenizer).labels == ["none", "people", "places"]
    regression = config.replace(num_labels=1, id2label={0: "value"}, label2id={"value": 0}, problem_type="regression")
    assert isinstance(task_for_model(regression, tokenizer, TaskOptions()), RegressionTask)
