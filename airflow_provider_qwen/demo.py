"""``make demo``: run the example DAGs of ``dags/`` once each and show what they produced and cost.

Without an AI/ML API key the DAGs talk to the emulator shipped in ``airflow_provider_qwen.testing``
on a free loopback port; with ``AIMLAPI_API_KEY`` (or ``QWEN_API_KEY``) set they use the real
service, and the demo says so. Airflow runs in-process (``dag.test()``) in a throwaway
AIRFLOW_HOME; its own log goes to a file there, the terminal gets a short report. Task retries
are kept but their delay is cut to a second, so a failing task cannot stall the demo.

    python -m airflow_provider_qwen.demo [--dags-folder DIR] [--dag DAG_ID ...] [--keep-home]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

EXAMPLE_TAG = "qwen-example"
KEY_VARIABLES = ("AIMLAPI_API_KEY", "QWEN_API_KEY")
RESULT_WIDTH = 400
LIST_ITEMS = 6
PREFERRED_ORDER = ("qwen_daily_summary", "qwen_structured_extraction", "qwen_batch_summarize")
DEMO_RETRY_DELAY = timedelta(seconds=1)


@dataclass
class TaskResult:
    """One task instance of a demo run: its state, its return value and its ``qwen_cost`` record."""

    task_id: str
    map_index: int
    state: str
    operator: str
    value: Any = None
    cost: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


@dataclass
class RunResult:
    """One DAG run of the demo."""

    dag_id: str
    state: str
    seconds: float
    tasks: list[TaskResult] = field(default_factory=list)


def find_dags_folder(given: str | None) -> Path:
    """The example DAGs: ``--dags-folder``, else ``./dags``, else ``dags/`` of the clone this runs from."""
    candidates = (
        [Path(given)] if given else [Path.cwd() / "dags", Path(__file__).resolve().parents[1] / "dags"]
    )
    for folder in candidates:
        if folder.is_dir() and any(EXAMPLE_TAG in p.read_text() for p in folder.glob("*.py")):
            return folder.resolve()
    raise SystemExit(
        f"No example DAGs (tag {EXAMPLE_TAG!r}) in {', '.join(map(str, candidates))}: run the demo from a "
        "clone of airflow-provider-qwen (`make demo`) or pass --dags-folder."
    )


def configure_airflow(home: Path, dags_folder: Path, connection_json: str) -> None:
    """Point Airflow at a throwaway home and SQLite DB; must run before Airflow is imported."""
    for name in [k for k in os.environ if k.startswith("AIRFLOW__")]:
        os.environ.pop(name)  # the user's own Airflow settings must not leak into the demo
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW_CONN_QWEN_DEFAULT": connection_json,
            # the agent example's database (dags/agent_report.py)
            "AIRFLOW_CONN_QWEN_AGENT_REPORT_DB": json.dumps(
                {"conn_type": "sqlite", "host": str(home / "agent.db")}
            ),
        }
    )


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send everything written to fd 1 and 2 (Airflow's logs, task prints) to ``log`` meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def load_example_dags(dags_folder: Path, only: list[str]) -> list[Any]:
    """The DAGs tagged ``qwen-example``, parsed and written to the metadata DB as the DAG processor would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder=str(dags_folder))
    if bag.import_errors:
        problems = "\n".join(f"{file}:\n{error}" for file, error in bag.import_errors.items())
        raise SystemExit(f"Example DAGs do not import:\n{problems}")
    for dag in bag.dags.values():
        for task in dag.tasks:  # dag.test() waits out retry delays: keep retries, make them quick
            task.retry_delay = DEMO_RETRY_DELAY
            task.retry_exponential_backoff = False
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)
    dags = [dag for dag in bag.dags.values() if EXAMPLE_TAG in (dag.tags or ())]
    if only:
        unknown = sorted(set(only) - {dag.dag_id for dag in dags})
        if unknown:
            raise SystemExit(f"--dag {unknown}: not an example DAG; have {sorted(d.dag_id for d in dags)}")
        dags = [dag for dag in dags if dag.dag_id in only]
    return sorted(dags, key=_run_order)


def _run_order(dag: Any) -> tuple[int, str]:
    """The README's order: summary, extraction, batch, anything else, cost reports last."""
    if dag.dag_id in PREFERRED_ORDER:
        return PREFERRED_ORDER.index(dag.dag_id), dag.dag_id
    return len(PREFERRED_ORDER) + ("cost" in dag.dag_id), dag.dag_id


def run_dag(dag: Any) -> RunResult:
    """One ``dag.test()`` run with the DAG's default params; task states, return values and costs."""
    from airflow.models.xcom import XComModel
    from airflow.sdk.bases.xcom import BaseXCom
    from airflow.utils.session import create_session

    started = time.monotonic()
    dag_run = dag.test()
    result = RunResult(dag.dag_id, str(dag_run.state), time.monotonic() - started)
    with create_session() as session:
        xcoms: dict[tuple[str, int, str], Any] = {}
        rows = session.query(XComModel).filter(
            XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id
        )
        for row in rows:
            xcoms[(row.task_id, row.map_index, row.key)] = BaseXCom.deserialize_value(row)
        order = {task.task_id: i for i, task in enumerate(dag.topological_sort())}
        instances = dag_run.get_task_instances(session=session)
        for ti in sorted(instances, key=lambda t: (order.get(t.task_id, len(order)), t.map_index)):
            key = (ti.task_id, ti.map_index)
            result.tasks.append(
                TaskResult(
                    ti.task_id,
                    ti.map_index,
                    str(ti.state),
                    ti.operator or "",
                    xcoms.get((*key, "return_value")),
                    xcoms.get((*key, "qwen_cost")),
                )
            )
    return result


def shorten(value: Any, width: int = RESULT_WIDTH) -> str:
    """A result as one readable block: text as is, data as JSON, cut at ``width`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.strip()
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in text.splitlines() or [""])


def report_lines(report: dict[str, Any]) -> list[str]:
    """A ``QwenCostReportOperator`` result as lines: the run's total, then each task."""

    def line(name: str, totals: dict[str, Any]) -> str:
        usd = f"{totals['usd_spent']} USD{' (estimated)' if totals.get('estimated') else ''}"
        return f"{name}: {totals['requests']} requests, {totals['credits_used']} credits = {usd}"

    by_task = report.get("by_task", {})
    return [line("run total", report["total"]), *(line(f"  {task}", t) for task, t in by_task.items())]


def print_run(run: RunResult, out: IO[str]) -> None:
    """Each task's state and (truncated) result; structured values field by field."""
    mark = "ok" if run.state == "success" else run.state.upper()
    print(f"{mark} in {run.seconds:.1f}s", file=out)
    for task in run.tasks:
        print(f"  - {task.label} ({task.operator}): {task.state}", file=out)
        value = task.value
        if value is None:
            continue
        if task.operator == "QwenToolCallOperator" and isinstance(value, dict):
            lines = [f"{name}: {shorten(item, 160)}" for name, item in value.items()]
        elif task.operator == "QwenCostReportOperator" and isinstance(value, dict) and "total" in value:
            lines = report_lines(value)
        elif task.operator.startswith("Qwen") and isinstance(value, list):
            lines = [f"[{i}] {shorten(item, 160)}" for i, item in enumerate(value[:LIST_ITEMS])]
            lines += [f"... {len(value) - LIST_ITEMS} more"] if len(value) > LIST_ITEMS else []
        else:
            lines = [shorten(value)]
        print(indent("\n".join(lines)), file=out)


def cost_rows(runs: list[RunResult]) -> list[list[str]]:
    """One row per task instance that recorded a ``qwen_cost``, then the exact total."""
    rows = []
    credits, usd, estimated = 0, Decimal(0), False
    for run in runs:
        for task in run.tasks:
            cost = task.cost
            if not cost:
                continue
            credits += int(cost["credits_used"])
            usd += Decimal(cost["usd_spent"])
            estimated = estimated or bool(cost.get("estimated"))
            rows.append(
                [
                    run.dag_id,
                    task.label,
                    str(cost.get("model") or ""),
                    str(cost["requests"]),
                    f"{cost['prompt_tokens']}/{cost['completion_tokens']}/{cost['reasoning_tokens']}",
                    str(cost["credits_used"]),
                    str(cost["usd_spent"]) + (" (est.)" if cost.get("estimated") else ""),
                ]
            )
    if rows:
        total_usd = str(usd) + (" (est.)" if estimated else "")
        rows.append(["total", "", "", str(sum(int(r[3]) for r in rows)), "", str(credits), total_usd])
    return rows


def print_table(header: list[str], rows: list[list[str]], out: IO[str]) -> None:
    """A plain-text table, the total row set off by a rule."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    rule = "  ".join("-" * w for w in widths)

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    print(line(header), file=out)
    print(rule, file=out)
    for row in rows:
        if row[0] == "total":
            print(rule, file=out)
        print(line(row), file=out)


def service(stack: contextlib.ExitStack, out: IO[str]) -> tuple[str, Any, str | None]:
    """The ``qwen_default`` connection JSON: the real API when a key is set, else a local emulator."""
    key = next((os.environ[name] for name in KEY_VARIABLES if os.environ.get(name)), None)
    if key:
        from airflow_provider_qwen import DEFAULT_BASE_URL

        name = next(n for n in KEY_VARIABLES if os.environ.get(n))
        print(
            f"Using the REAL AI/ML API at {DEFAULT_BASE_URL} ({name} is set): this run is billed;", file=out
        )
        print("each example task carries a max_cost_usd budget.", file=out)
        return json.dumps({"conn_type": "qwen", "password": key}), None, key
    from airflow_provider_qwen.testing.emulator import QwenEmulator

    emulator = stack.enter_context(QwenEmulator())
    print(f"No AIMLAPI_API_KEY set: using the local AI/ML API emulator at {emulator.base_url}", file=out)
    print("(set AIMLAPI_API_KEY to run the same DAGs against the real service).", file=out)
    return emulator.conn_json(), emulator, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_qwen.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dags-folder", help="folder with the example DAGs (default: ./dags of the clone)")
    parser.add_argument("--dag", action="append", default=[], help="run only this DAG id (repeatable)")
    parser.add_argument(
        "--keep-home", action="store_true", help="keep the throwaway AIRFLOW_HOME and its logs"
    )
    args = parser.parse_args(argv)

    out = sys.stdout
    started = time.monotonic()
    dags_folder = find_dags_folder(args.dags_folder)
    home = Path(tempfile.mkdtemp(prefix="qwen-demo-"))
    log = home / "airflow.log"
    runs: list[RunResult] = []
    secret: str | None = None
    try:
        with contextlib.ExitStack() as stack:
            connection, emulator, secret = service(stack, out)
            configure_airflow(home, dags_folder, connection)
            print(f"Airflow home (throwaway): {home}; DAGs from {dags_folder}", file=out, flush=True)
            with output_to(log):
                from airflow.utils import db

                db.initdb()
                dags = load_example_dags(dags_folder, args.dag)
            for dag in dags:
                print(f"\n== {dag.dag_id} ...", end=" ", file=out, flush=True)
                with output_to(log):
                    runs.append(run_dag(dag))
                print_run(runs[-1], out)
            print("\nCost of this demo (tokens: prompt/completion/reasoning; USD exact):", file=out)
            rows = cost_rows(runs)
            header = ["dag", "task", "model", "requests", "tokens", "credits", "usd"]
            if rows:
                print_table(header, rows, out)
            else:
                print("  no Qwen requests were made", file=out)
            if emulator is not None:
                credits, usd = emulator.total_charged()
                answers = len(emulator.charges)
                print(f"The emulator billed {credits} credits = {usd} USD for {answers} answers.", file=out)
    except BaseException:
        print(f"\nThe demo stopped; Airflow's log: {log}", file=out)
        args.keep_home = True
        raise
    finally:
        failed = [run for run in runs if run.state != "success"]
        if failed:
            args.keep_home = True
            print(
                f"\n{len(failed)} run(s) failed: {[r.dag_id for r in failed]}. Last lines of {log}:", file=out
            )
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            print(tail.replace(secret, "***") if secret else tail, file=out)
        if args.keep_home:
            print(f"Kept {home}", file=out)
        else:
            shutil.rmtree(home, ignore_errors=True)
    succeeded = len(runs) - len(failed)
    print(
        f"\nDone in {time.monotonic() - started:.1f}s: {succeeded}/{len(runs)} DAG runs succeeded.", file=out
    )
    return 1 if failed or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
