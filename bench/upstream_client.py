"""Per-call overhead of NovitaClient against a bare requests.Session, on the loopback sandbox.

Both sides fetch the same get-instance URL from the same in-process sandbox, in alternating
blocks so that drift (CPU frequency, the server's thread pool warming up) hits both equally.
Ours additionally runs the breaker bookkeeping, error mapping, JSON parsing and dataclass
building; the bare side only receives the bytes.

Run: .venv/bin/python bench/upstream_client.py [calls-per-side]   (default 2000)
Target: our median within 1.3x of bare.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from instances.novita.client import NovitaClient  # noqa: E402
from instances.novita.sandbox import Sandbox  # noqa: E402

API_KEY = "bench-key"
BLOCK = 50
WARMUP = 200
TARGET_RATIO = 1.3


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def summary(name: str, samples_ns: list[int]) -> tuple[float, float]:
    values = sorted(s / 1000 for s in samples_ns)  # microseconds
    median = statistics.median(values)
    p99 = percentile(values, 0.99)
    print(
        f"  {name:<14} n={len(values):>5}  median={median:8.1f} us  p99={p99:8.1f} us  "
        f"mean={statistics.fmean(values):8.1f} us"
    )
    return median, p99


def main() -> int:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    calls = max(calls, 1000)
    sb = Sandbox(api_key=API_KEY, step_seconds=0.05).serve(host="127.0.0.1", port=0)
    try:
        client = NovitaClient(sb.api_base_url, API_KEY, read_retries=0)
        instance_id = client.create_instance(
            name="bench",
            product_id="4090.16c.62g-hk-a",
            gpu_num=1,
            rootfs_size=20,
            image_url="pytorch/pytorch:latest",
            ports="8888/http,22/tcp",
        )
        url = f"{sb.api_base_url}/v1/gpu/instance?instanceId={instance_id}"

        bare = requests.Session()
        bare.headers.update(
            {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        )
        timeout = client.timeout

        def ours_once() -> None:
            client.get_instance(instance_id)

        def bare_once() -> None:
            response = bare.get(url, timeout=timeout)
            response.raise_for_status()

        for _ in range(WARMUP):
            ours_once()
            bare_once()
        sb.reset_calls()

        ours_ns: list[int] = []
        bare_ns: list[int] = []
        clock = time.perf_counter_ns
        while len(ours_ns) < calls:
            n = min(BLOCK, calls - len(ours_ns))
            # Alternate which side goes first so neither always runs on a "cold" block.
            order = (
                (ours_once, bare_once) if len(ours_ns) // BLOCK % 2 == 0 else (bare_once, ours_once)
            )
            for fn in order:
                sink = ours_ns if fn is ours_once else bare_ns
                for _ in range(n):
                    start = clock()
                    fn()
                    sink.append(clock() - start)

        served = sb.call_count()
        print(f"get_instance against the loopback sandbox ({sb.base_url}), blocks of {BLOCK}:")
        ours_median, ours_p99 = summary("NovitaClient", ours_ns)
        bare_median, bare_p99 = summary("bare Session", bare_ns)
        ratio = ours_median / bare_median
        print(f"  ratio ours/bare: median {ratio:.2f}x, p99 {ours_p99 / bare_p99:.2f}x")
        print(
            f"  requests served by the sandbox in the measured run: {served} (expected {2 * calls})"
        )
        verdict = "OK" if ratio <= TARGET_RATIO else "ABOVE TARGET"
        print(f"  target: median within {TARGET_RATIO}x of bare -> {verdict}")
        return 0
    finally:
        sb.shutdown()


if __name__ == "__main__":
    sys.exit(main())
