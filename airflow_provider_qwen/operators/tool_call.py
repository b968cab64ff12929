"""QwenToolCallOperator: structured output through a forced tool call, or a choice among tools.

qwen3.7-max has no ``response_format``. With ``output_model``/``output_schema`` the operator sends
one function tool, forces the model to call it and returns the validated arguments; with
``tools`` it returns the calls the model made. Invalid arguments get up to ``max_repairs``
follow-up turns that show the model its call and the violations; every turn's cost is counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.operators.call import Done, QwenCallOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from pydantic import BaseModel

    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.client.request import ChatRequest
    from airflow_provider_qwen.client.structured import CheckedCall, ToolSpec
    from airflow_provider_qwen.operators.call import State

_CHOICE_KEYWORDS = ("none", "auto", "required")


class QwenToolCallOperator(QwenCallOperator):
    """Structured output from Qwen through tool calls.

    Give exactly one of:

    :param output_model: a pydantic model class; returns the validated value as JSON-safe data
        (``model_dump(mode="json")``).
    :param output_schema: a JSON schema dict (validated with ``jsonschema``); returns the arguments.
    :param tools: several tools (pydantic models, JSON-schema/function dicts, typed Python
        functions, which are described, never called); returns ``[{"name", "arguments", "id"}]``
        with each call's arguments validated.

    :param tool_choice: with ``tools``: "auto", "required", "none" or a tool name.
    :param parallel_tool_calls: with ``tools``: allow several calls in one answer.
    :param tool_name: name of the single tool (default: the model's class name / schema title).
    :param tool_description: its description (default: the model's docstring / schema description).
    :param max_repairs: follow-up turns for invalid arguments before failing (default 2).
    :param fail_on_truncation: fail at once when the answer was cut at the token limit.
    :param deferrable: make each call (repairs too) in the triggerer, holding no worker slot.
    :param require_approval: a person approves, edits (validated again) or rejects the result.
    """

    def __init__(
        self,
        *,
        output_model: type[BaseModel] | None = None,
        output_schema: Mapping[str, Any] | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        tool_name: str | None = None,
        tool_description: str | None = None,
        max_repairs: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_model = output_model
        self.output_schema = output_schema
        self.tools = list(tools) if tools is not None else None
        self.tool_choice = tool_choice
        self.parallel_tool_calls = parallel_tool_calls
        self.tool_name = tool_name
        self.tool_description = tool_description
        self.max_repairs = max_repairs
        self._check_arguments()
        self.validate_static_parameters()

    def _check_arguments(self) -> None:
        from airflow_provider_qwen.client.errors import InvalidRequestError

        where = f"{type(self).__name__} {self.task_id!r}"
        sources = ("output_model", "output_schema", "tools")
        given = [name for name in sources if getattr(self, name) is not None]
        if len(given) != 1:
            raise InvalidRequestError(
                f"{where}: give exactly one of output_model, output_schema or tools (got {given or 'none'})"
            )
        if self.single_output:
            for name, allowed in (("tool_choice", None), ("parallel_tool_calls", False)):
                if getattr(self, name) not in (None, allowed):
                    raise InvalidRequestError(
                        f"{where}: {name}={getattr(self, name)!r} cannot be used with {given[0]}: "
                        "the operator forces one call of the output tool"
                    )
        elif self.tool_name or self.tool_description:
            raise InvalidRequestError(
                f"{where}: tool_name/tool_description name the single output tool; with tools=, "
                "give each tool its own name (function name, model class name or schema title)"
            )
        repairs = self.max_repairs
        if isinstance(repairs, bool) or not isinstance(repairs, int) or repairs < 0:
            raise InvalidRequestError(f"{where}: max_repairs={self.max_repairs!r} must be an integer >= 0")
        if self.parallel_tool_calls is not None:
            self.check_flags(parallel_tool_calls=self.parallel_tool_calls)
        _ = self.specs  # every schema (and each $ref in it) is checked now, when the DAG is parsed

    @property
    def single_output(self) -> bool:
        """Whether the result is one validated value (output_model/output_schema), not a list of calls."""
        return self.tools is None

    @cached_property
    def specs(self) -> dict[str, ToolSpec]:
        from airflow_provider_qwen.client.structured import tool_spec, tool_specs

        if self.single_output:
            source = self.output_model if self.output_model is not None else self.output_schema
            spec = tool_spec(source, name=self.tool_name, description=self.tool_description)
            return {spec.name: spec}
        return tool_specs(self.tools or [])

    @property
    def needs_gateway_normalization(self) -> bool:
        """A recursive schema cannot be inlined: ask the gateway to normalise (unless the user chose)."""
        return "normalize_tool_schemas" not in self.generation_params and any(
            spec.needs_gateway_normalization for spec in self.specs.values()
        )

    def extra_request_params(self) -> dict[str, Any]:
        if self.single_output:
            (spec,) = self.specs.values()
            return spec.forced_request_params(user_params=self.generation_params)
        params: dict[str, Any] = {
            "tools": [spec.to_tool() for spec in self.specs.values()],
            "tool_choice": _choice(self.tool_choice),
            "parallel_tool_calls": self.parallel_tool_calls,
        }
        if self.needs_gateway_normalization:
            params["normalize_tool_schemas"] = True
        return params

    # -- the turns ----------------------------------------------------------------------------

    def first_state(self, context: Context) -> State:
        if self.needs_gateway_normalization:
            self.log.info(
                "a tool schema is recursive and cannot be inlined: sending it with $defs and "
                "normalize_tool_schemas=True so the gateway rewrites it"
            )
        return {"messages": self.rendered_messages(context), "turn": 0, "accepted": [], "overrides": {}}

    def turn_request(self, context: Context, state: State) -> ChatRequest:
        return self.build_request(state["messages"], **state["overrides"])

    def after_turn(self, state: State, completion: ChatCompletion) -> Done | State:
        return self._structured(state, completion) if self.single_output else self._calls(state, completion)

    def _structured(self, state: State, completion: ChatCompletion) -> Done | State:
        """The output tool's validated value, or the state with a repair turn appended."""
        from airflow_provider_qwen.client.repair import RepairLoop

        (spec,) = self.specs.values()
        loop = RepairLoop(
            spec,
            state["messages"],
            max_repairs=self.max_repairs,
            on_repair=lambda errors, turn: self._log_repair(spec.name, errors, turn),
            give_up=lambda errors: self._gave_up(spec.name, errors),
        )
        loop.turn = state["turn"]
        if loop.accept(completion):
            return Done(loop.value)
        return {**state, "messages": loop.messages, "turn": loop.turn}

    def _calls(self, state: State, completion: ChatCompletion) -> Done | State:
        """All calls, each validated; failed ones are repaired and replaced by the repair turn's calls."""
        from airflow_provider_qwen.client.repair import repair_calls_messages
        from airflow_provider_qwen.client.structured import check_tool_calls

        checked = check_tool_calls(completion, self.specs)
        accepted = [*state["accepted"], *(call.result() for call in checked if call.ok)]
        failed = [call for call in checked if not call.ok]
        missing = self._missing_call(checked, state["overrides"].get("tool_choice", self.tool_choice))
        if not failed and not missing:
            return Done(accepted)
        problems = [f"{c.name} ({c.id}): {e}" for c in failed for e in c.errors] + missing
        turn = state["turn"]
        if turn >= self.max_repairs:
            raise self._gave_up("the tools", problems)
        self._log_repair("the tools", problems, turn)
        names = {call.name for call in failed}
        forced = self.specs.get(names.pop()) if len(names) == 1 and not missing else None
        return {
            "messages": [*state["messages"], *repair_calls_messages(completion, checked, missing=missing)],
            "turn": turn + 1,
            "accepted": accepted,
            "overrides": {"tool_choice": forced.forced_choice() if forced else "required"},
        }

    def edited_value(self, text: str) -> Any:
        """A reviewer's edit, validated as the model's arguments were (the tool's schema or model)."""
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_provider_qwen.client.errors import StructuredOutputError

        try:
            if self.single_output:
                (spec,) = self.specs.values()
                return spec.check_arguments(text)
            return self._edited_calls(text)
        except StructuredOutputError as exc:
            raise AirflowFailException(
                f"{type(self).__name__} {self.task_id!r}: the edited output is not valid, nothing was "
                "pushed:\n- " + "\n- ".join(exc.errors or [str(exc)])
            ) from None

    def _edited_calls(self, text: str) -> list[dict[str, Any]]:
        from airflow_provider_qwen.client.errors import StructuredOutputError
        from airflow_provider_qwen.client.structured import parse_arguments

        calls = parse_arguments(text)
        shape = 'a JSON list of {"name", "arguments", "id"} objects, as shown'
        if not isinstance(calls, list):
            raise StructuredOutputError(f"not {shape}", errors=[f"the edited output must be {shape}"])
        edited = []
        for index, call in enumerate(calls):
            spec = self.specs.get(str(call.get("name"))) if isinstance(call, dict) else None
            if spec is None:
                raise StructuredOutputError(
                    "unknown tool",
                    errors=[f"call {index}: must be {shape}, naming one of {sorted(self.specs)}"],
                )
            value = spec.validate(call.get("arguments"))
            edited.append({"name": spec.name, "arguments": value, "id": str(call.get("id") or "")})
        return edited

    @staticmethod
    def _missing_call(checked: list[CheckedCall], choice: Any) -> list[str]:
        """A violation when a call was required (``required`` or a named tool) and none came."""
        if checked or choice in (None, "auto", "none"):
            return []
        return [f"no tool was called although tool_choice={choice!r} requires a call"]

    def _log_repair(self, what: str, errors: list[str], turn: int) -> None:
        self.log.warning(
            "invalid arguments for %s; asking the model to repair them (repair %d of %d):\n- %s",
            what,
            turn + 1,
            self.max_repairs,
            "\n- ".join(errors),
        )

    def _gave_up(self, what: str, errors: list[str]) -> Exception:
        from airflow_provider_qwen.client.errors import StructuredOutputError

        listed = "\n- ".join(errors)
        return StructuredOutputError(
            f"{type(self).__name__} {self.task_id!r}: the arguments for {what} were still invalid "
            f"after {self.max_repairs} repair turn(s) (every turn is counted in qwen_cost); "
            f"violations:\n- {listed}",
            errors=errors,
        )


def _choice(choice: str | Mapping[str, Any] | None) -> Any:
    """``tool_choice`` as sent: a keyword, or a tool name turned into the named-function form."""
    if isinstance(choice, str) and choice not in _CHOICE_KEYWORDS:
        return {"type": "function", "function": {"name": choice}}
    return choice
