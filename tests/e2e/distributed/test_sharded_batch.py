"""The sharded example DAG on a real multi-worker Airflow: a worker killed mid-shard pays nothing twice.

``dags/batch_sharded.py`` runs over a JSONL file of ``ITEMS`` documents cut into ``SHARDS`` mapped
batch tasks, at most ``POOL_SLOTS`` at once (an Airflow pool; the two workers have four task slots),
under one ``dag_run_budget_usd``. Once a shard has finished some but not all of its items, the whole
process tree of the worker running it (Celery main process, pool processes, task supervisor and task
process) is killed with SIGKILL. The scheduler finds the task without a heartbeat, Airflow retries it
on the surviving worker, and the emulator's log of requests and charges is the judge:

- every item with a finished checkpoint record at the kill is sent 0 more times;
- the money adds up exactly: what the emulator charged = the shards' ``qwen_cost`` spend + the work
  the retry reused from the checkpoint (``qwen_batch["reused"]``, exactly what the killed try paid
  for it) + the answers in flight at the kill (charged, but the killed process never recorded them:
  at most ``max_concurrency`` of the killed shard, each of those items sent again);
- ``qwen_cost`` still counts the killed try, as an ``unfinished`` estimate at its last claim, which
  covers everything it was charged; the run's spend, even counted that way, stays within the run
  budget across the parallel shards;
- the pool held: from the task instances' tries, never more than ``POOL_SLOTS`` shards at once.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import API_KEY
from tests.e2e.distributed.conftest import DAG_ENV, Cluster
from tests.e2e.test_deployment import xcom

pytestmark = [pytest.mark.e2e, pytest.mark.distributed, pytest.mark.timeout(600)]

DAG_ID = "qwen_batch_sharded"
POOL = DAG_ENV["QWEN_BATCH_POOL"]
POOL_SLOTS = 2
ITEMS = 120
SHARDS = 4
MAX_CONCURRENCY = 4  # the DAG's max_concurrency: requests in flight per shard
LATENCY_S = 0.4  # each answer takes this long: a shard of 30 items needs about 3 s
SETTLE_S = 0.5  # after the kill, before counting what was sent (a retry takes 10 s or more to start)
KILL_AFTER = 6  # finished items of a shard before its worker is killed (and as many left at least)
# Less than the run's requests could cost at their worst (checked below): the run fits only because
# the shards' claims on the budget count what was spent, not because the budget is out of reach.
RUN_BUDGET_USD = Decimal("0.15")
RUN_TIMEOUT_S = 240.0
KEY_FRAGMENTS = (API_KEY, API_KEY[-11:], API_KEY[:10])
NUMBER = re.compile(r"Document (\d{4})\.")


def _document(n: int) -> dict[str, str]:
    topics = ("checkout latency", "a backup delay", "the hiring plan", "energy costs", "an API deprecation")
    return {
        "text": f"Document {n:04d}. This week's note on {topics[n % len(topics)]}: the team measured "
        f"{n % 17 + 3} incidents, fixed {n % 5 + 1} of them and plans a review on day {n % 28 + 1}."
    }


def _size(shard: dict[str, Any]) -> int:
    return shard["stop"] - shard["start"]


def _request_hash(body: Any) -> str:
    """A checkpoint record's ``request``: the SHA-256 of the request body as canonical JSON."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _number(request: Any) -> int:
    """The document a chat request was about."""
    match = NUMBER.search(request.body["messages"][-1]["content"])
    assert match, request.body
    return int(match.group(1))


def _journal_records(cluster: Cluster, map_index: int) -> list[dict[str, Any]]:
    """A shard's finished checkpoint records (whole lines only: a line cut by a kill is no record)."""
    records = []
    for segment in cluster.storage.glob(f"{DAG_ID}/*/summarize/{map_index}/batch/journal/*.jsonl"):
        for line in segment.read_bytes().splitlines(keepends=True):
            if line.endswith(b"\n"):
                records.append(json.loads(line))
    return records


@dataclass
class Kill:
    """The moment a worker was killed: which, with which shard mid-way, and what was known then."""

    worker: str
    map_index: int
    requests: int  # chat requests the emulator had received
    records: dict[int, list[dict[str, Any]]]  # checkpoint records of every shard


@dataclass
class Outcome:
    """One run of the sharded DAG with a worker killed mid-shard, as the API and the emulator saw it."""

    run: dict[str, Any]
    shards: list[dict[str, Any]]  # from shard_input: the input's URL and a range of items each
    shard_of: dict[int, int]  # document number -> map index
    kill: Kill
    summarize: list[dict[str, Any]]  # the mapped task instances, by map index
    requests: list[Any]
    charges: dict[str, Any]  # by client_request_id
    emulator_charges: list[Any]
    costs: dict[int, dict[str, Any]]  # qwen_cost by map index
    batches: dict[int, dict[str, Any]]  # qwen_batch by map index
    claims: dict[int, dict[str, Any]]  # qwen_run_claim by map index

    @property
    def killed(self) -> set[int]:
        """Every shard the kill took (the worker may have run two)."""
        return {t["map_index"] for t in self.summarize if t["try_number"] == 2}

    @property
    def before(self) -> list[Any]:
        return self.requests[: self.kill.requests]

    @property
    def after(self) -> list[Any]:
        return self.requests[self.kill.requests :]

    def finished_at_kill(self, map_index: int) -> dict[int, Any]:
        """Document number -> the request of every item with a checkpoint record at the kill."""
        by_hash: dict[str, list[Any]] = defaultdict(list)
        for request in self.before:
            by_hash[_request_hash(request.body)].append(request)
        found = {}
        for record in self.kill.records[map_index]:
            (request,) = by_hash[record["request"]]  # each record is of exactly one request sent
            found[_number(request)] = request
        return found

    def usd(self, requests: list[Any]) -> Decimal:
        """What the emulator charged for these requests (a request in flight at the kill may have
        been dropped uncharged)."""
        charged = [self.charges.get(r.client_request_id) for r in requests]
        return sum((c.usd for c in charged if c is not None), Decimal(0))

    def billed(self, map_index: int) -> Decimal:
        return self.usd([r for r in self.requests if self.shard_of[_number(r)] == map_index])


def _trigger(cluster: Cluster, source: Path) -> dict[str, Any]:
    assert cluster.api is not None
    response = cluster.api.post("/api/v2/pools", json={"name": POOL, "slots": POOL_SLOTS})
    assert response.status_code == 201, response.text
    response = cluster.api.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
    assert response.status_code == 200, response.text
    conf = {"input": f"file://{source}", "shards": SHARDS, "run_budget_usd": str(RUN_BUDGET_USD)}
    response = cluster.api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    assert response.status_code == 200, response.text
    return response.json()


def _wait_for_task(cluster: Cluster, run: dict[str, Any], task_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    path = f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/{task_id}"
    while (state := cluster.get(path)["state"]) != "success":
        assert state not in {"failed", "upstream_failed"}, f"{task_id}: {state}"
        assert time.monotonic() < deadline, f"{task_id} did not finish: {state}"
        cluster.check_alive()
        time.sleep(0.2)


def _kill_a_worker_mid_shard(cluster: Cluster, run: dict[str, Any], sizes: dict[int, int]) -> Kill:
    """Wait until a running shard has finished KILL_AFTER or more of its items (and has as many left),
    then SIGKILL its worker's whole process tree; what the checkpoints and the emulator held then."""
    deadline = time.monotonic() + 120
    path = f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances"
    running: dict[int, int] = {}  # map index -> pid of its task process
    polled = 0.0
    while True:
        assert time.monotonic() < deadline, f"no shard was caught mid-way; running: {running}"
        cluster.check_alive()
        if time.monotonic() - polled > 0.3:
            tis = cluster.get(path, task_id="summarize")["task_instances"]
            running = {t["map_index"]: t["pid"] for t in tis if t["state"] == "running" and t["pid"]}
            polled = time.monotonic()
        for map_index, pid in running.items():
            done = len(_journal_records(cluster, map_index))
            worker = cluster.worker_of(pid) if KILL_AFTER <= done <= sizes[map_index] - KILL_AFTER else None
            if worker is not None:
                cluster.kill_worker(worker)
                records = {i: _journal_records(cluster, i) for i in sizes}  # final for a killed shard
                time.sleep(SETTLE_S)  # what the killed processes had sent is all logged now
                return Kill(worker, map_index, len(cluster.emulator.chat_requests()), records)
        time.sleep(0.02)


@pytest.fixture(scope="module")
def outcome(cluster: Cluster) -> Outcome:
    """Run the sharded DAG over a JSONL file and kill a worker mid-shard; the run as it ended."""
    emulator = cluster.emulator
    emulator.reset()
    emulator.latency = LATENCY_S
    source = cluster.storage / "inputs" / "documents.jsonl"
    source.parent.mkdir()
    source.write_text("".join(json.dumps(_document(n)) + "\n" for n in range(ITEMS)))
    started = time.monotonic()
    run = _trigger(cluster, source)

    _wait_for_task(cluster, run, "shard")
    shards = xcom(cluster, run, "shard", "return_value")  # line n of the file is item n, document n
    shard_of = {n: i for i, part in enumerate(shards) for n in range(part["start"], part["stop"])}
    kill = _kill_a_worker_mid_shard(cluster, run, {i: _size(part) for i, part in enumerate(shards)})
    run = cluster.wait_for_run(DAG_ID, run["dag_run_id"], timeout=RUN_TIMEOUT_S)
    elapsed = time.monotonic() - started

    tis = cluster.get(f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
    summarize = sorted((t for t in tis if t["task_id"] == "summarize"), key=lambda t: t["map_index"])
    done = [t for t in summarize if t["state"] == "success"]
    found = Outcome(
        run=run,
        shards=shards,
        shard_of=shard_of,
        kill=kill,
        summarize=summarize,
        requests=emulator.chat_requests(),
        charges={c.client_request_id: c for c in emulator.charges},
        emulator_charges=emulator.charges,
        costs={t["map_index"]: xcom(cluster, run, "summarize", "qwen_cost", t["map_index"]) for t in done},
        batches={t["map_index"]: xcom(cluster, run, "summarize", "qwen_batch", t["map_index"]) for t in done},
        claims={
            t["map_index"]: xcom(cluster, run, "summarize", "qwen_run_claim", t["map_index"]) for t in done
        },
    )
    records = len(kill.records[kill.map_index])
    print(
        f"\n{ITEMS} items in {SHARDS} shards, pool of {POOL_SLOTS}: {kill.worker} killed with shard "
        f"{kill.map_index} at {records}/{_size(shards[kill.map_index])} items (shards killed: "
        f"{sorted(found.killed)}); run {run['state']} in {elapsed:.1f} s"
    )
    return found


def test_the_run_succeeds_after_a_worker_is_killed_mid_shard(outcome: Outcome) -> None:
    states = {t["map_index"]: (t["state"], t["try_number"]) for t in outcome.summarize}
    assert outcome.run["state"] == "success", states
    assert len(outcome.summarize) == SHARDS
    assert all(t["state"] == "success" for t in outcome.summarize), states
    assert outcome.kill.map_index in outcome.killed, states  # retried, on whichever worker
    assert all(t["try_number"] == 1 for t in outcome.summarize if t["map_index"] not in outcome.killed)
    finished = len(outcome.finished_at_kill(outcome.kill.map_index))
    assert KILL_AFTER <= finished <= _size(outcome.shards[outcome.kill.map_index]) - KILL_AFTER


def test_the_retried_shard_sends_no_finished_item_again(outcome: Outcome) -> None:
    # all answered, except perhaps requests in flight when their worker died
    unanswered = [r for r in outcome.requests if r.status != 200]
    assert all(r in outcome.before and outcome.shard_of[_number(r)] in outcome.killed for r in unanswered)
    resent = Counter(_number(r) for r in outcome.after)
    for map_index in outcome.killed:
        finished = outcome.finished_at_kill(map_index)
        assert {outcome.shard_of[n] for n in finished} <= {map_index}
        again = sorted(set(finished) & set(resent))
        assert not again, f"shard {map_index}: finished before the kill and sent again: {again}"
        assert outcome.batches[map_index]["resumed"] == len(finished)
    sent = Counter(_number(r) for r in outcome.requests)
    assert sorted(sent) == list(range(ITEMS))  # every item answered ...
    twice = {n for n, count in sent.items() if count > 1}
    assert all(sent[n] == 2 for n in twice)  # ... once, or twice if in flight at the kill
    assert {outcome.shard_of[n] for n in twice} <= outcome.killed


def test_the_money_adds_up_to_what_the_emulator_charged(outcome: Outcome) -> None:
    answered = {r.client_request_id for r in outcome.requests if r.status == 200}
    assert answered <= set(outcome.charges) <= {r.client_request_id for r in outcome.requests}
    assert len(outcome.charges) == len(outcome.emulator_charges)  # one charge per call: nothing retried
    total = sum((c.usd for c in outcome.charges.values()), Decimal(0))
    spent = reused_usd = lost_usd = Decimal(0)
    for map_index, cost in outcome.costs.items():
        spent += Decimal(cost["usd_spent"])
        if map_index not in outcome.killed:
            assert Decimal(cost["usd_spent"]) == outcome.billed(map_index), (map_index, cost)
            assert cost["estimated"] is False
            assert Decimal(cost["usd_unsettled"]) == 0
            continue
        finished = outcome.finished_at_kill(map_index)
        mine = [r for r in outcome.before if outcome.shard_of[_number(r)] == map_index]
        lost = [r for r in mine if _number(r) not in finished]  # answered, or in flight, unrecorded
        retried = [r for r in outcome.after if outcome.shard_of[_number(r)] == map_index]
        reused = outcome.batches[map_index]["reused"]
        # the checkpoint holds exactly what the killed try paid for the items it finished
        assert reused["requests"] == len(finished)
        assert Decimal(reused["usd_spent"]) == outcome.usd(list(finished.values()))
        # the retry's own try is counted exactly, and is all qwen_cost spent: the killed try wrote none
        (this_try,) = [t for t in cost["tries"] if t["try_number"] == 2]
        assert Decimal(this_try["usd_spent"]) == outcome.usd(retried) == Decimal(cost["usd_spent"])
        # the answers in flight at the kill: charged, never recorded, at most max_concurrency, sent again
        assert len(lost) <= MAX_CONCURRENCY, f"{len(lost)} answers lost at the kill"
        assert {_number(r) for r in lost} <= {_number(r) for r in retried}
        lost_here = outcome.usd(lost)
        assert Decimal(cost["usd_spent"]) + Decimal(reused["usd_spent"]) + lost_here == outcome.billed(
            map_index
        )
        # qwen_cost still counts the killed try, at its last claim: enough for all it was charged
        journaled = [t for t in cost["tries"] if t["try_number"] == 1]
        if mine:  # a claim is journaled before each request: a try that sent none may have none
            assert len(journaled) == 1, cost["tries"]
        for killed_try in journaled:
            assert [e["kind"] for e in killed_try["estimates"]] == ["unfinished"], killed_try
            assert Decimal(killed_try["usd_spent"]) == 0
            assert Decimal(killed_try["usd_unsettled"]) >= Decimal(reused["usd_spent"]) + lost_here
        reused_usd += Decimal(reused["usd_spent"])
        lost_usd += lost_here
    assert spent + reused_usd + lost_usd == total
    print(f"\nbilled {total} USD = qwen_cost {spent} + reused {reused_usd} + lost at the kill {lost_usd}")


def test_the_run_budget_holds_across_the_parallel_shards(outcome: Outcome) -> None:
    from airflow_provider_qwen.client.pricing import PriceTable
    from airflow_provider_qwen.client.request import ChatRequest
    from airflow_provider_qwen.cost.budget import worst_case_usd

    prices = PriceTable()
    worst = sum(
        (worst_case_usd(ChatRequest.model_validate(r.body), prices) for r in outcome.requests), Decimal(0)
    )
    assert worst > RUN_BUDGET_USD  # not a budget out of reach
    billed = sum((c.usd for c in outcome.charges.values()), Decimal(0))
    counted = sum(
        (Decimal(c["usd_spent"]) + Decimal(c["usd_unsettled"]) for c in outcome.costs.values()), Decimal(0)
    )
    assert billed <= counted <= RUN_BUDGET_USD  # the killed try counted at its claim, and still within
    # every shard's claim on the run budget settled at what its qwen_cost counts, all within it
    for map_index, claim in outcome.claims.items():
        cost = outcome.costs[map_index]
        assert claim["instance"] == f"summarize[{map_index}]"
        assert Decimal(claim["claimed_usd"]) == Decimal(claim["at_most_usd"])  # settled
        assert Decimal(claim["claimed_usd"]) == Decimal(cost["usd_spent"]) + Decimal(cost["usd_unsettled"])
    print(f"\nbilled {billed} USD, counted at most {counted}, budget {RUN_BUDGET_USD}, worst case {worst}")


def test_the_pool_capped_the_shards_running_at_once(cluster: Cluster, outcome: Outcome) -> None:
    pool = cluster.get(f"/pools/{POOL}")
    assert pool["slots"] == POOL_SLOTS
    intervals = []
    for ti in outcome.summarize:
        path = f"/dags/{DAG_ID}/dagRuns/{outcome.run['dag_run_id']}/taskInstances/summarize/{ti['map_index']}"
        tries = cluster.get(f"{path}/tries")["task_instances"]
        assert all(t["pool"] == POOL for t in tries)
        intervals += [(t["start_date"], t["end_date"]) for t in tries]
    assert len(intervals) == SHARDS + len(outcome.killed)
    assert all(start and end for start, end in intervals), intervals
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:  # at one instant an end (-1) sorts before a start
        running += step
        peak = max(peak, running)
    assert peak == POOL_SLOTS, intervals  # never more, and the shards did run side by side


def test_the_results_files_hold_every_item_once(cluster: Cluster, outcome: Outcome) -> None:
    from airflow_provider_qwen.batch import results_asset

    run_id = outcome.run["dag_run_id"]
    folder = cluster.storage / "results" / DAG_ID / run_id  # under [qwen] storage_base, shared
    seen: list[int] = []
    for map_index, shard in enumerate(outcome.shards):
        manifest = xcom(cluster, outcome.run, "summarize", "return_value", map_index)
        path = folder / f"summarize-{map_index:05d}.jsonl"
        assert manifest["results_path"] == f"file://{path}"
        assert (manifest["total"], manifest["succeeded"]) == (_size(shard), _size(shard))
        assert (manifest["failed"], manifest["unstarted"]) == (0, 0)
        assert manifest["usd_spent"] == outcome.costs[map_index]["usd_spent"]  # this try's spend
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert manifest["rows"] == len(rows) == _size(shard)
        assert sorted(r["index"] for r in rows) == list(range(shard["start"], shard["stop"]))
        assert all(r["status"] == "ok" and r["error"] is None for r in rows), rows
        assert all(isinstance(r["result"], str) and r["result"] for r in rows)
        seen += [r["index"] for r in rows]
    assert sorted(seen) == list(range(ITEMS))  # the shards' results cover the input once
    parts = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert parts == [f"summarize-{i:05d}.jsonl" for i in range(SHARDS)]

    report = xcom(cluster, outcome.run, "report", "return_value")
    assert (report["total"], report["succeeded"], report["failed"]) == (ITEMS, ITEMS, 0)
    assert report["shards"] == SHARDS
    assert report["results"] == [f"file://{folder}/summarize-{i:05d}.jsonl" for i in range(SHARDS)]
    spent = sum((Decimal(c["usd_spent"]) for c in outcome.costs.values()), Decimal(0))
    assert Decimal(report["usd_spent"]) == spent

    events = cluster.get("/assets/events", source_run_id=run_id, source_dag_id=DAG_ID, limit=100)
    asset = results_asset(f"file://{cluster.storage}/results/{DAG_ID}/")  # the shards' outlet
    uris = Counter(e["uri"] for e in events["asset_events"])
    assert uris == {asset.uri: SHARDS}, events  # one event per shard that succeeded
    left = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
    print(f"\nresults: {len(seen)} rows in {len(parts)} files; left by the killed try: {left}")


def test_no_artefact_of_the_deployment_holds_the_key(cluster: Cluster, outcome: Outcome) -> None:
    leaks = [
        str(path)
        for path in cluster.home.rglob("*")
        if path.is_file() and any(f.encode() in path.read_bytes() for f in KEY_FRAGMENTS)
    ]
    assert not leaks, f"API key written to {leaks}"
    task_logs = list((cluster.home / "logs").rglob("*.log"))
    assert len(task_logs) >= 2 + SHARDS + len(outcome.killed), task_logs  # every try's log was read
