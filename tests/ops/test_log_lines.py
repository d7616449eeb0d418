"""The log handler: whole lines from any number of threads, never interleaved."""

import json
import logging
import os
import threading

from ops.logging import JsonFormatter, LineHandler


def _lines_through_a_pipe(messages_per_thread: int, threads: int, size: int) -> list[str]:
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    handler = LineHandler(stream)
    handler.setFormatter(JsonFormatter())
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_end, 65536), b""))
    )
    reader.start()

    def log(n: int) -> None:
        for i in range(messages_per_thread):
            record = logging.LogRecord("t", logging.INFO, __file__, 1, "%s", (str(n) * size,), None)
            record.fields = {"thread": n, "i": i}
            handler.handle(record)

    workers = [threading.Thread(target=log, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stream.close()
    reader.join()
    os.close(read_end)
    return b"".join(chunks).decode().splitlines()


def test_lines_from_many_threads_arrive_whole_and_in_order_per_thread():
    lines = _lines_through_a_pipe(messages_per_thread=300, threads=8, size=150)
    records = [json.loads(line) for line in lines]  # a torn line would not parse
    assert len(records) == 8 * 300
    for n in range(8):
        mine = [r["i"] for r in records if r["thread"] == n]
        assert mine == list(range(300))
        assert all(r["msg"] == str(n) * 150 for r in records if r["thread"] == n)


def test_lines_longer_than_an_atomic_pipe_write_arrive_whole_too():
    lines = _lines_through_a_pipe(messages_per_thread=20, threads=4, size=20_000)
    assert len(lines) == 80
    assert all(len(json.loads(line)["msg"]) == 20_000 for line in lines)


def test_a_web_workers_lean_log_records_write_the_same_line(monkeypatch):
    # wsgi.py turns off the caller, thread and process lookups for the web's log records:
    # the JSON line must not have needed any of them.
    def line() -> dict:
        logger = logging.getLogger("novita_gateway.access")
        record = logger.makeRecord(logger.name, logging.INFO, "f.py", 1, "GET %s", ("/x",), None)
        record.fields = {"status": 200}
        return json.loads(JsonFormatter().format(record))

    full = line()
    for name, value in [
        ("_srcfile", None),
        ("logThreads", False),
        ("logProcesses", False),
        ("logMultiprocessing", False),
    ]:
        monkeypatch.setattr(logging, name, value)
    lean = line()
    assert lean.pop("ts")[:16] == full.pop("ts")[:16]
    assert lean == full
    assert lean["msg"] == "GET /x" and lean["status"] == 200
