"""The Qwen TaskFlow decorators, registered in the provider info as ``task-decorators``.

- ``@task.qwen``: the function returns the prompt (a str) or a list of messages; the task returns
  the answer text (QwenChatOperator).
- ``@task.qwen_tool_call``: the same input; with ``output_model=`` the task returns the validated
  value (QwenToolCallOperator).
- ``@task.qwen_batch``: the function returns the items; ``prompt=`` is the per-item template
  (QwenBatchOperator).
- ``@task.qwen_agent``: the function returns the prompt or messages; the model calls ``tools=``
  (QwenAgentOperator).

Every keyword of the decorator goes to the operator, so each takes every parameter of its
operator. What the function returns is data, never rendered as a template. ``.expand()`` maps over
the function's arguments; the operator's static parameters are checked when the DAG is parsed,
mapped or not. This module imports no operator until a decorator is used, and each decorator only
its own operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from airflow.sdk.bases.decorator import _TaskDecorator

if TYPE_CHECKING:
    from airflow.sdk.bases.decorator import Task, TaskDecorator
    from airflow.sdk.definitions._internal.expandinput import (
        OperatorExpandArgument,
        OperatorExpandKwargsArgument,
    )
    from airflow.sdk.definitions.xcom_arg import XComArg

    from airflow_provider_qwen.decorators.base import QwenDecoratedOperator

FParams = ParamSpec("FParams")
FReturn = TypeVar("FReturn")

__all__ = ["qwen_agent_task", "qwen_batch_task", "qwen_task", "qwen_tool_call_task"]


class QwenTask(_TaskDecorator[Any, Any, Any]):
    """A function decorated with a Qwen decorator: ``.expand()`` / ``.expand_kwargs()`` check the
    operator's static parameters when the DAG is parsed, as an unmapped call does (Airflow itself
    builds a mapped task's operator only when it runs)."""

    def expand(self, **map_kwargs: OperatorExpandArgument) -> XComArg:
        self.check_parameters()
        return super().expand(**map_kwargs)

    def expand_kwargs(self, kwargs: OperatorExpandKwargsArgument, *, strict: bool = True) -> XComArg:
        self.check_parameters()
        return super().expand_kwargs(kwargs, strict=strict)

    def check_parameters(self) -> None:
        """Build the operator once, on a scratch DAG, with the static keywords (skipped when one is an
        upstream's output: it is known only when the task runs). The function's arguments were
        checked by name by ``.partial()`` / ``.expand()`` and are not needed here."""
        from airflow.sdk import DAG
        from airflow.sdk.definitions.xcom_arg import XComArg

        skipped = ("dag", "task_group", "on_failure_fail_dagrun", "op_kwargs")
        kwargs = {k: v for k, v in self.kwargs.items() if k not in skipped}
        if next(iter(XComArg.iter_xcom_references(kwargs)), None) is not None:
            return
        scratch = DAG(dag_id="qwen_parameter_check", schedule=None)
        self.operator_class(
            python_callable=self.function,
            op_args=(),
            op_kwargs={},
            multiple_outputs=self.multiple_outputs,
            dag=scratch,
            task_group=scratch.task_group,
            _airflow_mapped_validation_only=True,  # the mapped arguments come later
            **kwargs,
        )


def qwen_decorator(
    operator_class: type[QwenDecoratedOperator],
    python_callable: Callable[..., Any] | None = None,
    *,
    multiple_outputs: bool | None = None,
    **kwargs: Any,
) -> Any:
    """``task_decorator_factory`` for the Qwen decorators: ``multiple_outputs`` defaults to False (the
    task's result is the answer, whatever the function's return annotation says), and each decorated
    function gets its own copy of the keywords."""
    name = operator_class.custom_operator_name.lstrip("@")
    outputs = False if multiple_outputs is None else multiple_outputs

    def wrap(function: Callable[..., Any]) -> QwenTask:
        if not callable(function):
            raise TypeError(
                f"@{name} takes no positional argument but the function; give the operator's "
                f"parameters by name, e.g. @{name}(model=..., max_cost_usd=...)"
            )
        return QwenTask(
            function=function,
            operator_class=operator_class,
            multiple_outputs=outputs,
            kwargs=dict(kwargs),
            decorator_name=name,
        )

    return wrap if python_callable is None else wrap(python_callable)


@overload
def qwen_task(python_callable: Callable[FParams, FReturn]) -> Task[FParams, FReturn]: ...
@overload
def qwen_task(
    python_callable: None = None, *, multiple_outputs: bool | None = None, **kwargs: Any
) -> TaskDecorator: ...
def qwen_task(
    python_callable: Callable[..., Any] | None = None, *, multiple_outputs: bool | None = None, **kwargs: Any
) -> Any:
    """``@task.qwen``: the function returns the prompt (a str) or a list of ``{"role", "content"}``
    messages; the task sends it (after ``system_prompt=`` and ``messages=``) and returns the answer.

    Every keyword is a QwenChatOperator parameter (``model``, ``max_cost_usd``,
    ``max_completion_tokens``, ``stream``, ...) or a BaseOperator one (``retries``, ``pool``, ...).
    """
    from airflow_provider_qwen.decorators.chat import QwenChatDecoratedOperator

    return qwen_decorator(
        QwenChatDecoratedOperator, python_callable, multiple_outputs=multiple_outputs, **kwargs
    )


@overload
def qwen_tool_call_task(python_callable: Callable[FParams, FReturn]) -> Task[FParams, FReturn]: ...
@overload
def qwen_tool_call_task(
    python_callable: None = None, *, multiple_outputs: bool | None = None, **kwargs: Any
) -> TaskDecorator: ...
def qwen_tool_call_task(
    python_callable: Callable[..., Any] | None = None, *, multiple_outputs: bool | None = None, **kwargs: Any
) -> Any:
    """``@task.qwen_tool_call``: the function returns the prompt or the messages; with
    ``output_model=`` (or ``output_schema=``) the task returns the validated value, with ``tools=``
    the validated calls. Every keyword is a QwenToolCallOperator parameter."""
    from airflow_provider_qwen.decorators.tool_call import QwenToolCallDecoratedOperator

    return qwen_decorator(
        QwenToolCallDecoratedOperator, python_callable, multiple_outputs=multiple_outputs, **kwargs
    )


@overload
def qwen_batch_task(python_callable: Callable[FParams, FReturn]) -> Task[FParams, FReturn]: ...
@overload
def qwen_batch_task(
    python_callable: None = None, *, multiple_outputs: bool | None = None, **kwargs: Any
) -> TaskDecorator: ...
def qwen_batch_task(
    python_callable: Callable[..., Any] | None = None, *, multiple_outputs: bool | None = None, **kwargs: Any
) -> Any:
    """``@task.qwen_batch(prompt=...)``: the function returns the items (a list of str or dict, or one
    input on storage); ``prompt=`` is rendered for each item; the task returns the results. Every
    keyword is a QwenBatchOperator parameter but ``items``."""
    from airflow_provider_qwen.decorators.batch import QwenBatchDecoratedOperator

    return qwen_decorator(
        QwenBatchDecoratedOperator, python_callable, multiple_outputs=multiple_outputs, **kwargs
    )


@overload
def qwen_agent_task(python_callable: Callable[FParams, FReturn]) -> Task[FParams, FReturn]: ...
@overload
def qwen_agent_task(
    python_callable: None = None, *, multiple_outputs: bool | None = None, **kwargs: Any
) -> TaskDecorator: ...
def qwen_agent_task(
    python_callable: Callable[..., Any] | None = None, *, multiple_outputs: bool | None = None, **kwargs: Any
) -> Any:
    """``@task.qwen_agent(tools=[...])``: the function returns the prompt or the messages; the model
    calls the tools over several turns; the task returns its final answer. Every keyword is a
    QwenAgentOperator parameter."""
    from airflow_provider_qwen.decorators.agent import QwenAgentDecoratedOperator

    return qwen_decorator(
        QwenAgentDecoratedOperator, python_callable, multiple_outputs=multiple_outputs, **kwargs
    )
