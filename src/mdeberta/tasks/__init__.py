"""Fine-tuning tasks behind one interface (:class:`mdeberta.tasks.base.Task`): what finetune, evaluate and
predict run. A new task is one module here and one entry in ``TASKS``."""

from __future__ import annotations

from typing import Any

from mdeberta.errors import UsageError
from mdeberta.tasks.base import LengthGroupedBatches, Task, TaskOptions, run_batches, training_accuracy
from mdeberta.tasks.multiple_choice import MultipleChoiceTask
from mdeberta.tasks.nli import NLITask
from mdeberta.tasks.question_answering import QuestionAnsweringTask
from mdeberta.tasks.regression import RegressionTask
from mdeberta.tasks.text_classification import TextClassificationTask
from mdeberta.tasks.token_classification import TokenClassificationTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (
    NLITask, TextClassificationTask, RegressionTask, MultipleChoiceTask, TokenClassificationTask,
    QuestionAnsweringTask)}


def make_task(name: str, options: TaskOptions, tokenizer: Any) -> Task:
    if name not in TASKS:
        raise UsageError(f"--task {name!r}; allowed: {list(TASKS)}")
    return TASKS[name](options, tokenizer)


def task_for_model(config: Any, tokenizer: Any, options: TaskOptions | None = None, head: str | None = None
                   ) -> Task:
    """The task a trained model does, read from its config: the head (``architectures``, or the ONNX export's),
    then for a sequence classifier NLI when its labels are entailment / neutral / contradiction, regression with
    one output, else text classification with its own labels. ``head`` overrides (an ONNX export records it)."""
    from mdeberta.data.nli import LABELS
    from mdeberta.model.auto import config_head

    options = options or TaskOptions()
    head = head or config_head(config)
    if head == "sequence-classification":
        names = sorted(str(config.id2label[i]).lower() for i in range(config.num_labels))
        if config.problem_type == "regression" or config.num_labels == 1:
            return RegressionTask.for_model(config, tokenizer, options)
        if names == sorted(LABELS) or (config.num_labels == 3 and all(n.startswith("label_") for n in names)):
            return NLITask(options, tokenizer)
        return TextClassificationTask.for_model(config, tokenizer, options)
    by_head = {"token-classification": TokenClassificationTask, "question-answering": QuestionAnsweringTask,
               "multiple-choice": MultipleChoiceTask}
    if head not in by_head:
        raise UsageError(f"a {head or 'headless'} model has no fine-tuning task (heads with one: "
                         f"sequence-classification, {', '.join(by_head)})")
    return by_head[head](options, tokenizer)


__all__ = ["TASKS", "LengthGroupedBatches", "Task", "TaskOptions", "make_task", "run_batches", "task_for_model",
           "training_accuracy"]
