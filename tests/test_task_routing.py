"""Queues by blast radius: cost-control work never shares a queue (or a worker) with work whose
duration a client controls, and every task has soft and hard time limits."""

import re
from pathlib import Path

import pytest
from django.conf import settings

from novita_gateway.celery import app

ROOT = Path(__file__).resolve().parents[1]
COST_CONTROL = {
    "instances.tasks.poll_instance",
    "instances.tasks.monitor_sweep",
    "instances.tasks.auto_stop_sweep",
    "instances.tasks.reconcile",
    "instances.tasks.migration_sweep",
}
CLIENT_CONTROLLED = {"instances.tasks.deliver_webhook", "instances.tasks.probe_instances"}


def our_tasks():
    app.loader.import_default_modules()
    return {
        name: task for name, task in app.tasks.items() if name.startswith(("instances.", "ops."))
    }


def test_every_task_of_ours_is_routed_to_a_worker_queue():
    routes = settings.CELERY_TASK_ROUTES
    for name in our_tasks():
        assert name in routes, f"{name} has no route"
        assert routes[name]["queue"] in settings.WORKER_QUEUES


def test_cost_control_runs_on_its_own_queue_and_outbound_work_never_does():
    routes = settings.CELERY_TASK_ROUTES
    for name in COST_CONTROL:
        assert routes[name]["queue"] == settings.COST_CONTROL_QUEUE
    for name in CLIENT_CONTROLLED & set(our_tasks()):
        assert routes[name]["queue"] != settings.COST_CONTROL_QUEUE


@pytest.mark.parametrize("name", sorted(COST_CONTROL | {"instances.tasks.deliver_webhook"}))
def test_every_task_kind_has_a_soft_and_a_hard_time_limit(name):
    task = our_tasks()[name]
    assert task.soft_time_limit and task.time_limit
    assert task.soft_time_limit < task.time_limit


def test_all_tasks_have_time_limits():
    for name, task in our_tasks().items():
        assert task.soft_time_limit and task.time_limit, name


def test_a_monitor_step_is_killed_before_its_claim_runs_out():
    poll = our_tasks()["instances.tasks.poll_instance"]
    assert poll.time_limit < settings.MONITOR_LEASE_SECONDS


def test_a_delivery_attempt_ends_within_its_time_limit():
    deliver = our_tasks()["instances.tasks.deliver_webhook"]
    assert deliver.soft_time_limit > settings.WEBHOOK_TIMEOUT_SECONDS


@pytest.mark.parametrize("procfile", ["Procfile", "Procfile.sandbox"])
def test_the_procfile_runs_cost_control_on_a_worker_of_its_own(procfile):
    queues_by_line = {}
    for line in (ROOT / procfile).read_text().splitlines():
        name, _, command = line.partition(":")
        if " worker " in command:
            queues_by_line[name] = set(re.search(r"-Q (\S+)", command).group(1).split(","))
    cost = [n for n, q in queues_by_line.items() if settings.COST_CONTROL_QUEUE in q]
    assert len(cost) == 1
    assert queues_by_line[cost[0]] & {settings.WEBHOOK_QUEUE, settings.PROBE_QUEUE} == set()
    consumed = set().union(*queues_by_line.values())
    assert set(settings.WORKER_QUEUES) <= consumed
    assert settings.CELERY_TASK_DEFAULT_QUEUE in queues_by_line[cost[0]]


def test_each_queue_gets_its_own_worker_heartbeat():
    beats = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "ops.tasks.worker_heartbeat"
    ]
    assert sorted(e["options"]["queue"] for e in beats) == sorted(settings.WORKER_QUEUES)
    assert all(e["args"] == (e["options"]["queue"],) for e in beats)
