"""Fine-tuning tasks behind one interface (:class:`mdeberta.tasks.base.Task`): what finetune, evaluate and
predict run. A new task is one module here and one entry in ``TASKS``."""

from __future__ import annotations

from typing import Any

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
        raise ValueError(f"--task {name!r}; allowed: {list(TASKS)}")
    return TASKS[name](options, tokenizer)


__all__ = ["TASKS", "LengthGroupedBatches", "Task", "TaskOptions", "make_task", "run_batches", "training_accuracy"]
