"""The floor for bench/polling_saturation.py: a WSGI app that answers every request with one fixed
JSON body (a real poll's, read from the file named by STATIC_BODY_FILE), doing nothing else."""

import os
from pathlib import Path

BODY = Path(os.environ["STATIC_BODY_FILE"]).read_bytes()
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
