"""The Workflow protocol: what the CLI, the API and the app need of an analyst workflow.

A :class:`Workflow` names its input model (the request fields, the same for ``secfm triage``,
``POST /v1/triage`` and the app's tab), its result model, the function that runs it (the
deterministic step always: rules, extraction, retrieval; the model step when the request's
``use_model`` is set and an engine is given) and its two renderings (``--format md`` and
``--format table``). Front ends look a workflow up by name in :data:`WORKFLOWS` and dispatch
through it; a new workflow is one entry here.

Two workflows differ in how they use the engine, and say so: ATT&CK extraction's head reads the
engine's hidden states on every request (``engine_gated=False``: the engine is its input, not a
model step), and the chat streams (``stream_function``: :meth:`Workflow.stream` yields its events,
tool cards first, then the model's pieces, then the final answer) and decides on the model itself
(its pipeline, passed as ``pipeline=``, holds the engine and the per-turn ``use_model``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from secfm.errors import SecfmError
from secfm.lazy import resolve_target as _resolve


@dataclass(frozen=True)
class Workflow:
    name: str  # the command and endpoint name
    what: str  # what its input text is, in messages
    input_model: str  # "module:Class" (a pydantic model whose fields are the run function's arguments)
    result_model: str  # "module:Class"
    run_function: str  # "module:function", called with the request's fields, engine= and the caller's options
    markdown: str  # "module:function": result -> Markdown
    table: str  # "module:function": result -> (title, columns, rows)
    #: "module:function" with the run function's arguments, yielding events (None: the workflow does not stream)
    stream_function: str | None = None
    #: the engine goes only to requests with ``use_model`` set (False: it is passed on every request)
    engine_gated: bool = True

    def request(self, data: BaseModel | dict) -> BaseModel:
        """``data`` as the workflow's input model (a subclass instance, like the API's bounded
        request models, is kept); a field that does not fit is one SecfmError line."""
        model = _resolve(self.input_model)
        if isinstance(data, model):
            return data
        try:
            return model.model_validate(data.model_dump() if isinstance(data, BaseModel) else data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or self.what
            raise SecfmError(f"{self.name}: {where}: {first.get('msg')}") from None

    def run(self, data: BaseModel | dict, *, engine=None, **options: Any):
        """Run on ``data`` (the input model or its fields as a dict): the model step only when
        ``use_model`` is set (``engine`` is then used; None: the workflow's default)."""
        return self._call(self.run_function, data, engine, options)

    def stream(self, data: BaseModel | dict, *, engine=None, **options: Any):
        """The run as events (a streaming workflow only: the chat)."""
        if self.stream_function is None:
            raise SecfmError(f"the {self.name} workflow does not stream")
        return self._call(self.stream_function, data, engine, options)

    def _call(self, function: str, data, engine, options: dict):
        request = self.request(data)
        fields = {name: getattr(request, name) for name in _resolve(self.input_model).model_fields}
        if self.engine_gated and not request.use_model:
            engine = None
        return _resolve(function)(**fields, engine=engine, **options)

    def render_markdown(self, result) -> str:
        return _resolve(self.markdown)(result)

    def table_rows(self, result) -> tuple[str, Sequence[str], list[Sequence[object]]]:
        return _resolve(self.table)(result)


_SCHEMAS = "secfm.workflows.schemas"
_RENDER = "secfm.workflows.render"

#: every analyst workflow the front ends dispatch through, by name
WORKFLOWS: dict[str, Workflow] = {w.name: w for w in (
    Workflow("triage", "alerts", f"{_SCHEMAS}:TriageInput", f"{_SCHEMAS}:TriageResult",
             "secfm.workflows.triage:triage_alerts", f"{_RENDER}:triage_md", f"{_RENDER}:triage_table"),
    Workflow("summarize", "incident text", f"{_SCHEMAS}:SummaryInput", f"{_SCHEMAS}:IncidentSummary",
             "secfm.workflows.summarize:summarize_incident", f"{_RENDER}:summary_md", f"{_RENDER}:summary_table"),
    Workflow("review-config", "configuration", f"{_SCHEMAS}:ConfigInput", f"{_SCHEMAS}:ConfigReview",
             "secfm.workflows.review:review_config", f"{_RENDER}:review_md", f"{_RENDER}:review_table"),
    Workflow("attack", "report text", "secfm.workflows.attack_extraction:AttackInput",
             "secfm.workflows.attack_extraction:AttackExtraction", "secfm.workflows.attack_extraction:run_attack_extraction",
             f"{_RENDER}:attack_md", f"{_RENDER}:attack_table", engine_gated=False),
    Workflow("chat", "message", "secfm.workflows.chat_schemas:ChatInput", "secfm.workflows.chat_schemas:ChatAnswer",
             "secfm.workflows.chat:chat_turn", "secfm.workflows.chat_render:message_markdown",
             "secfm.workflows.chat_render:answer_table", stream_function="secfm.workflows.chat:chat_turn_events",
             engine_gated=False),
)}


def get_workflow(name: str) -> Workflow:
    try:
        return WORKFLOWS[name]
    except KeyError:
        raise SecfmError(f"unknown workflow {name!r} (known: {', '.join(WORKFLOWS)})") from None


def workflow_for(result) -> Workflow | None:
    """The workflow whose result model ``result`` is (None for another object)."""
    for workflow in WORKFLOWS.values():
        if isinstance(result, _resolve(workflow.result_model)):
            return workflow
    return None
