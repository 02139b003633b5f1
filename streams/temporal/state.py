"""What a Temporal workflow keeps so shadowflow can compare its state with the mirror's and resume
it after a promotion (used inside workflow code: only the standard library and
``temporalio.workflow``, deterministic).

The workflow holds a ``ShadowState``, runs its activities through ``run_activity`` (which keeps
the contract's ``wf.*``, ``action.<id>`` and ``result.<id>.<key>`` variables as the mirror derives
them from the history), records its own variables with ``set`` (also written to the history as a
memo, which is how the mirror learns them), calls ``finish`` before it returns, and answers the
``shadowflow_state`` query with ``snapshot()``::

    @workflow.defn
    class Pipeline:
        def __init__(self) -> None:
            self.state = ShadowState()

        @workflow.run
        async def run(self, request: dict) -> dict:
            self.state = ShadowState.resumed(request)   # {} unless promoted
            ...
            result = await self.state.run_activity(crunch, arg, activity_id="step-3",
                                                   start_to_close_timeout=...)
            self.state.set("total", total)
            self.state.finish()

        @workflow.query
        def shadowflow_state(self) -> dict:
            return self.state.snapshot()

``snapshot()`` gives the variables and the history length the workflow had processed; the
adapter publishes them as a ``StateSnapshot`` at the sequence that ends that workflow task's
commands. A run started with ``{"shadowflow_resume": variables}`` (a promotion) starts from them;
a long run goes on in a new one with ``continue_as_new``, which carries its state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.exceptions import ActivityError

RESUME_KEY = "shadowflow_resume"
QUERY = "shadowflow_state"
PER_ACTION = ("action.", "result.")
"""The per-action variables, as ``streams.mirror.run.PER_ACTION`` (repeated so that workflow
code imports nothing but the SDK)."""
COUNTERS = ("wf.actions.scheduled", "wf.actions.started", "wf.actions.completed",
            "wf.actions.failed")


def _scalar(value: Any) -> bool:
    return (value is None or isinstance(value, bool | int | str)
            or (isinstance(value, float) and math.isfinite(value)))


class ShadowState:
    """A workflow's state vector in shadowflow's contract (see the module docstring)."""

    def __init__(self, variables: Mapping[str, Any] | None = None) -> None:
        self.variables: dict[str, Any] = dict(variables or {})
        self.variables["wf.status"] = "RUNNING"
        for counter in COUNTERS:
            self.variables.setdefault(counter, 0)

    @classmethod
    def resumed(cls, request: Any) -> ShadowState:
        """The state a run starts with: a promoted state when ``request`` carries one."""
        resume = request.get(RESUME_KEY) if isinstance(request, Mapping) else None
        return cls(resume if isinstance(resume, Mapping) else None)

    @property
    def resuming(self) -> bool:
        """Whether this run resumes a promoted state (it has done some work already)."""
        return self.variables["wf.actions.scheduled"] > 0

    def get(self, name: str, default: Any = None) -> Any:
        """A variable's value."""
        return self.variables.get(name, default)

    def set(self, name: str, value: Any) -> None:
        """Record a variable of the workflow's own, in the history too (a memo)."""
        if not _scalar(value):
            raise ValueError(f"{name}: a state variable holds null, a boolean, a finite number "
                             f"or a string, not {value!r}")
        self.variables[name] = value
        workflow.upsert_memo({name: value})

    def corrupt(self, name: str, value: Any) -> None:
        """Change a variable in memory only, as a non-deterministic bug would: the mirror,
        which follows the history, will disagree (for fault-injection demos and tests)."""
        self.variables[name] = value

    async def run_activity(self, activity: Any, arg: Any, *, activity_id: str,
                           **options: Any) -> Any:
        """``workflow.execute_activity`` keeping the contract's variables; the activity id must
        be unique in the run (it names ``action.<id>``)."""
        self._count("wf.actions.scheduled")
        self.variables[f"action.{activity_id}"] = "SCHEDULED"
        try:
            result = await workflow.execute_activity(activity, arg, activity_id=activity_id,
                                                     **options)
        except ActivityError:
            self._count("wf.actions.started")
            self._count("wf.actions.failed")
            self.variables[f"action.{activity_id}"] = "FAILED"
            raise
        self._count("wf.actions.started")
        self._count("wf.actions.completed")
        self.variables[f"action.{activity_id}"] = "COMPLETED"
        if isinstance(result, Mapping):
            for key, value in result.items():
                if _scalar(value):
                    self.variables[f"result.{activity_id}.{key}"] = value
        return result

    def carried(self) -> dict[str, Any]:
        """The variables a new run goes on from (``{"shadowflow_resume": state.carried()}`` as
        its input, for continue-as-new): the workflow's own and the ``wf.*`` counters, not the
        per-action ``action.*`` and ``result.*`` (as a promotion carries)."""
        return {name: value for name, value in self.variables.items()
                if not name.startswith(PER_ACTION)}

    def finish(self, status: str = "COMPLETED") -> None:
        """Call right before the workflow returns (``COMPLETED``)."""
        self.variables["wf.status"] = status

    def continue_as_new(self, request: Mapping[str, Any]) -> NoReturn:
        """``workflow.continue_as_new`` with ``request`` and this state carried
        (``{"shadowflow_resume": carried()}``). The closed run reads ``COMPLETED``, as the mirror
        derives it from the history: a query answered after the last task must agree."""
        carried = self.carried()
        self.finish()
        workflow.continue_as_new({**request, RESUME_KEY: carried})

    def snapshot(self) -> dict[str, Any]:
        """``{"history_length": n, "variables": {...}}``: the answer of the ``shadowflow_state``
        query (``n``: the history the workflow had processed when it last ran)."""
        return {"history_length": workflow.info().get_current_history_length(),
                "variables": dict(self.variables)}

    def _count(self, counter: str) -> None:
        self.variables[counter] = int(self.variables.get(counter, 0)) + 1
