"""What every Qwen operator shares: one rendering path, one request path, one cost path.

Subclasses implement ``run(context, calls)``; every model call goes through ``calls`` (budget held
before, charge recorded after), and ``execute`` pushes the try's ``qwen_cost`` record whatever happens.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_qwen import DEFAULT_CONN_ID, DEFAULT_MODEL
from airflow_provider_qwen.client.pricing import usd_text
from airflow_provider_qwen.operators.kill import KillableMixin
from airflow_provider_qwen.operators.lineage import QwenLineageMixin
from airflow_provider_qwen.operators.templates import (
    ABSENT,
    PROMPT_TEMPLATE_EXT,
    at,
    expressions,
    is_templated,
    template_leaves,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_qwen.calls import Calls
    from airflow_provider_qwen.client.builder import RequestBuilder
    from airflow_provider_qwen.client.request import ChatRequest
    from airflow_provider_qwen.cost.record import CostTotals
    from airflow_provider_qwen.cost.task import TaskCost
    from airflow_provider_qwen.hooks.qwen import QwenHook


# Generation parameters every operator accepts and forwards to the request (templated as one dict).
GENERATION_PARAMS = (
    "max_completion_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "reasoning_effort",
    "reasoning",
    "normalize_tool_schemas",
    "extra_body",
)


# The fields that become message text, and the parameters that are booleans.
TEXT_FIELDS = ("prompt", "system_prompt", "messages")
BOOL_PARAMS = frozenset({"logprobs", "normalize_tool_schemas"})


class QwenBaseOperator(KillableMixin, QwenLineageMixin, BaseOperator):
    """Base of the Qwen operators.

    :param prompt: the user message; Jinja, or a template file ending in .j2/.jinja2/.prompt.
    :param system_prompt: an optional system message (templated the same way).
    :param messages: a full message list sent before ``prompt``; templated element-wise.
    :param model: model id; defaults to the connection's default model.
    :param qwen_conn_id: the ``qwen`` connection.
    :param max_cost_usd: refuse any request whose worst case would take this task's spend past it.
    :param dag_run_budget_usd: the same cap over all Qwen tasks of the DAG run (their ``qwen_cost``).

    The generation parameters (``max_completion_tokens``, ``temperature``, ... as in the client) are
    arguments too: validated at DAG parse time when static, after rendering when templated, always
    before any request.
    """

    template_fields: Sequence[str] = (
        "prompt",
        "system_prompt",
        "messages",
        "model",
        "generation_params",
        "max_cost_usd",
        "dag_run_budget_usd",
    )
    template_ext: Sequence[str] = PROMPT_TEMPLATE_EXT
    template_fields_renderers = {
        "prompt": "md",
        "system_prompt": "md",
        "messages": "json",
        "generation_params": "json",
    }
    ui_color = "#ffe7c7"

    def __init__(
        self,
        *,
        prompt: str | None = None,
        system_prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        model: str | None = None,
        qwen_conn_id: str = DEFAULT_CONN_ID,
        max_cost_usd: float | str | None = None,
        dag_run_budget_usd: float | str | None = None,
        max_completion_tokens: int | str | None = None,
        max_tokens: int | str | None = None,
        temperature: float | str | None = None,
        top_p: float | str | None = None,
        stop: str | list[str] | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | str | None = None,
        logit_bias: Mapping[str, float] | None = None,
        reasoning_effort: str | None = None,
        reasoning: Mapping[str, Any] | None = None,
        normalize_tool_schemas: bool | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.messages = list(messages) if messages is not None else None
        self.model = model
        self.qwen_conn_id = qwen_conn_id
        self.max_cost_usd = max_cost_usd
        self.dag_run_budget_usd = dag_run_budget_usd
        given = {
            "max_completion_tokens": max_completion_tokens,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop": stop,
            "logprobs": logprobs,
            "top_logprobs": top_logprobs,
            "logit_bias": logit_bias,
            "reasoning_effort": reasoning_effort,
            "reasoning": reasoning,
            "normalize_tool_schemas": normalize_tool_schemas,
            "extra_body": extra_body,
        }
        self.generation_params: dict[str, Any] = {
            name: value for name, value in given.items() if value is not None
        }
        # As written, before rendering: to name the expression that left a message without text.
        self._text_templates = {name: copy.deepcopy(getattr(self, name)) for name in TEXT_FIELDS}
        self._templated_params = frozenset(n for n, v in self.generation_params.items() if is_templated(v))
        # Subclasses call validate_static_parameters() at the end of their own __init__,
        # once their extra request parameters (tools, stream ...) are set.

    # -- validation -----------------------------------------------------------------------

    def extra_request_params(self) -> dict[str, Any]:
        """Parameters a subclass adds to every request (tools, tool_choice, stream ...)."""
        return {}

    def validate_static_parameters(self) -> None:
        """Fail at DAG parse time for values that need no rendering."""
        from airflow_provider_qwen.cost.record import parse_usd

        for field in ("max_cost_usd", "dag_run_budget_usd"):
            if not is_templated(getattr(self, field)):
                parse_usd(field, getattr(self, field))
        if self.prompt is None and not self.messages:
            from airflow_provider_qwen.client.errors import InvalidRequestError

            raise InvalidRequestError(f"{type(self).__name__} {self.task_id!r} needs a prompt or messages")
        static_text = not any(is_templated(getattr(self, name)) for name in TEXT_FIELDS)
        conversation = self.rendered_messages() if static_text else None  # an empty prompt fails here
        if is_templated(self.generation_params) or is_templated(self.model):
            return
        self.build_request(
            conversation or [{"role": "user", "content": "parameter check"}],
            model=self.model or DEFAULT_MODEL,
        )

    def check_flags(self, **flags: Any) -> None:
        """Refuse an operator switch that is not a boolean (``stream="yes"`` would stream)."""
        from airflow_provider_qwen.client.errors import InvalidRequestError

        for name, value in flags.items():
            if not isinstance(value, bool):
                raise InvalidRequestError(
                    f"{type(self).__name__} {self.task_id!r}: {name}={value!r} must be a boolean; "
                    "allowed: True or False"
                )

    # -- rendering and requests -----------------------------------------------------------

    @cached_property
    def hook(self) -> QwenHook:
        from airflow_provider_qwen.hooks.qwen import QwenHook

        return QwenHook(qwen_conn_id=self.qwen_conn_id)

    def history_messages(self) -> list[dict[str, Any]]:
        """What comes before the prompt: the system prompt, then ``messages``."""
        history: list[dict[str, Any]] = []
        if self.system_prompt:
            history.append({"role": "system", "content": self.system_prompt})
        history.extend(dict(m) for m in self.messages or [])
        return history

    def rendered_messages(self, context: Context | None = None) -> list[dict[str, Any]]:
        """The conversation from the rendered fields: system, then ``messages``, then ``prompt``; with
        the render's ``context``, text a template left at None is refused first (check_rendered_text)."""
        if context is not None:
            self.check_rendered_text(context)
        prompt = self.prompt
        if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
            from airflow_provider_qwen.client.errors import InvalidRequestError

            empty = self._missing_values(context, "prompt", empty=True)
            because = f": {empty}" if empty else ""
            raise InvalidRequestError(
                f"{type(self).__name__} {self.task_id!r}: prompt={prompt!r} has no text{because}; "
                "a prompt must be a non-empty string; nothing was sent"
            )
        conversation = self.history_messages()
        if prompt is not None:
            conversation.append({"role": "user", "content": prompt})
        return conversation

    def check_rendered_text(self, context: Context) -> None:
        """Refuse message text a template rendered to None (native rendering: the message would be
        dropped) or to "None" from an expression that was None (the text "None" would be sent)."""
        from airflow_provider_qwen.client.errors import InvalidRequestError
        from airflow_provider_qwen.client.fields import field_path

        for name, template in self._text_templates.items():
            for path, source in template_leaves(template, (name,)):
                rendered = at(getattr(self, name), path[1:])
                if rendered is ABSENT or rendered == source:
                    continue  # not rendered here (a mapped value is data, never a template)
                if rendered is None or (isinstance(rendered, str) and "None" in rendered):
                    missing = self._missing_values(context, path)
                    if rendered is None or missing:
                        what = missing or "the template rendered to None"
                        raise InvalidRequestError(
                            f"{type(self).__name__} {self.task_id!r}: {field_path(path)} has no value: "
                            f"{what} (a missing XCom, param or upstream result?); it would be sent as "
                            f"{'nothing' if rendered is None else repr(rendered[:80])}, so nothing was sent. "
                            "To send the word None on purpose, write {{ (...) | string }}"
                        )

    def _missing_values(
        self, context: Context | None, path: str | tuple[Any, ...], *, empty: bool = False
    ) -> str:
        """Which ``{{ expression }}`` of the field's template gave None (or no text, with ``empty``)."""
        if context is None:
            return ""
        path = (path,) if isinstance(path, str) else path
        source = at(self._text_templates.get(path[0]), path[1:])
        if not isinstance(source, str) or not is_templated(source):
            return ""
        env = self.get_template_env()
        try:
            if source.endswith(tuple(self.template_ext)):
                source = env.loader.get_source(env, source)[0] if env.loader else source
            found = []
            for expression in expressions(env, source):
                try:
                    value = env.compile_expression(expression, undefined_to_none=False)(**context)
                except Exception:  # a loop variable or a macro: not known outside the template
                    continue
                if value is None or (empty and isinstance(value, str) and not value.strip()):
                    found.append(f"{{{{ {expression} }}}} was {value!r}")
        except Exception:  # naming the expression is a courtesy: never let it hide the refusal
            return ""
        return ", ".join(found)

    def request_builder(self, model: str | None = None) -> RequestBuilder:
        """The operator's parameters and the subclass's extras, for ``model`` (default: the task's)."""
        from airflow_provider_qwen.client.builder import RequestBuilder
        from airflow_provider_qwen.client.profiles import profile_for

        chosen = model or self.model or self.hook.default_model
        params = {**self.generation_params, **self.extra_request_params()}
        for name in BOOL_PARAMS & self._templated_params:  # a boolean rendered as text reads back
            if params.get(name) in ("True", "False"):
                params[name] = params[name] == "True"
        if "normalize_tool_schemas" not in self.generation_params and not profile_for(chosen).accepts(
            "normalize_tool_schemas"
        ):
            params.pop("normalize_tool_schemas", None)  # our own addition, for a gateway feature it lacks
        return RequestBuilder(chosen, params)

    def build_request(
        self, messages: Sequence[Mapping[str, Any]], *, model: str | None = None, **overrides: Any
    ) -> ChatRequest:
        """Validate one request: the operator's parameters, the subclass's extras, then overrides."""
        return self.request_builder(model).build(messages, **overrides)

    # -- execution and cost ---------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        return self.metered(context, self.run)

    def metered(
        self,
        context: Context,
        body: Callable[[Context, Calls], Any],
        *,
        resumed: bool = False,
        carried: Any = None,
    ) -> Any:
        """Run ``body`` with the try's ``Calls`` and publish the try's cost whatever happens;
        ``resumed``: the try goes on after a pause, so what it spent before is counted too, from
        ``carried`` (the pause's own ``spent_so_far()`` record, if it kept one) else the journal."""
        from airflow_provider_qwen.calls import Calls
        from airflow_provider_qwen.cost.record import parse_usd
        from airflow_provider_qwen.operators.spend import task_cost

        model = self.model or self.hook.default_model
        if (self.max_cost_usd or self.dag_run_budget_usd) and self.hook.prices.get(model) is None:
            try:  # a budget needs the model's price: the live table may have it
                self.hook.refresh_prices()
            except Exception as exc:
                self.log.warning("could not fetch the live price table for model=%r: %s", model, exc)
        cost = task_cost(
            context,
            prices=self.hook.prices,
            max_cost_usd=parse_usd("max_cost_usd", self.max_cost_usd),
            dag_run_budget_usd=parse_usd("dag_run_budget_usd", self.dag_run_budget_usd),
            model=model,
            task_ids=qwen_task_ids(context.get("dag")),
        )
        calls = Calls(cost, client=lambda: self.hook.get_conn(), log=self.log)  # fetched on first use
        try:
            if resumed:
                cost.resume(carried_totals(carried))
            else:
                cost.start()
            with self.killable():
                return body(context, calls)
        finally:
            with self.unkillable():  # a timeout passing meanwhile waits until the cost is published
                try:
                    self.finish_cost(context, cost)
                except Exception:  # never let reporting hide the task's own outcome
                    self.log.exception("could not publish the Qwen cost record of this try")

    def finish_cost(self, context: Context, cost: TaskCost) -> None:
        """Publish the try's cost: journal (for later tries), XCom, metrics and the task log."""
        from airflow_provider_qwen.cost.record import COST_XCOM_KEY
        from airflow_provider_qwen.metrics import emit_cost_metrics

        record = cost.finish()  # journals this try; the record covers every try so far
        self.qwen_cost_record = record  # for the OpenLineage facets, read after execute
        self.qwen_inference_ids = list(cost.ledger.inference_ids)
        self.qwen_ids_not_kept = cost.ledger.carried_requests
        if self.do_xcom_push:
            context["ti"].xcom_push(key=COST_XCOM_KEY, value=record.to_xcom())
        emit_cost_metrics(cost.ledger.by_model, dag_id=self.dag_id, task_id=self.task_id)
        this_try = cost.try_record().totals
        self.log.info(
            "Qwen cost of this try: %s requests, %s tokens, %s USD%s",
            this_try.requests,
            this_try.total_tokens,
            usd_text(this_try.usd_spent),
            " (estimated)" if this_try.cost.estimated else "",
        )
        tries = record.each_try()
        if len(tries) > 1:
            self.log.info(
                "Qwen cost of this task over %d tries: %s requests, %s USD",
                len(tries),
                record.totals.requests,
                usd_text(record.usd_spent),
            )

    def run(self, context: Context, calls: Calls) -> Any:
        raise NotImplementedError


def qwen_task_ids(dag: Any) -> list[str]:
    """Task ids of the DAG's Qwen operators (mapped ones too): the tasks a run budget adds up."""
    found = []
    for task in getattr(dag, "tasks", []):
        cls = getattr(task, "operator_class", None) or type(task)  # a MappedOperator names its class
        if isinstance(cls, type) and issubclass(cls, QwenBaseOperator):
            found.append(task.task_id)
    return found or list(getattr(dag, "task_ids", []))


def carried_totals(spent: Any) -> CostTotals | None:
    """The totals of a pause's own ``spent_so_far()`` record (None: it kept none, or not one we read)."""
    from airflow_provider_qwen.cost.record import CostRecord

    if not isinstance(spent, Mapping):
        return None
    try:
        return CostRecord.from_xcom(spent).totals
    except Exception:
        return None
