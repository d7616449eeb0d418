"""A WSGI app that answers with the serving process's pid: which web worker took a connection."""

import os

BODY = str(os.getpid()).encode()


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
