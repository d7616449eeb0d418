"""Celery task signals feeding the job metrics, so every task counts without opting in.

Outcomes are read from task_postrun's final state rather than from task_failure: postrun is sent
for every run, in a worker and in eager mode alike, while task_failure is skipped when an eager
task's error propagates (state is then unset). Counting in one place also means no run is
counted twice.
"""

import time

from celery import states
from celery.signals import before_task_publish, task_postrun, task_prerun

from . import metrics

# Not failures: a retry is counted when it runs again; ignored and rejected runs did no work.
_NOT_FAILED = frozenset({states.SUCCESS, states.RETRY, states.IGNORED, states.REJECTED})


def _name(sender, task=None) -> str:
    task = task or sender
    return getattr(task, "name", None) or str(task)


@task_prerun.connect(dispatch_uid="ops.metrics.task_prerun")
def _task_started(sender=None, task=None, **kwargs):
    metrics.record_job_started(_name(sender, task))


@task_postrun.connect(dispatch_uid="ops.metrics.task_postrun")
def _task_finished(sender=None, task=None, state=None, **kwargs):
    name = _name(sender, task)
    if state not in _NOT_FAILED:
        metrics.record_job_failed(name)
    metrics.record_job(name, state or states.FAILURE)


@before_task_publish.connect(dispatch_uid="ops.health.enqueued_at")
def _stamp_enqueue_time(headers=None, **kwargs):
    # /health reports how long the oldest waiting task of each queue has waited; Celery's
    # messages carry no publish time of their own.
    if headers is not None:
        headers.setdefault("enqueued_at", time.time())
