"""Request and job metrics, aggregated across processes through shared counters."""

from . import counters


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


def record_request(request, status: int, duration_ms: float) -> None:
    counters.incr_many(
        {
            "requests:total": 1,
            f"requests:{_status_class(status)}": 1,
            "requests:duration_ms_total": int(duration_ms * 1000) / 1000,
        }
    )


def record_job(task_name: str) -> None:
    counters.incr_many({"jobs:total": 1, f"jobs:{task_name}": 1})
