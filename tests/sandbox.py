"""The sandbox with the gateway's Novita client pointed at it, for tests that run the gateway's
own code against a simulated upstream in this process."""

import contextlib

from instances.novita.client import reset_client
from instances.novita.sandbox import Sandbox


@contextlib.contextmanager
def gateway_on_sandbox(settings, **options):
    """Serve a Sandbox(**options) on 127.0.0.1 and point settings and the client at it."""
    options.setdefault("api_key", "sandbox-key")
    sb = Sandbox(**options).serve(host="127.0.0.1")
    settings.NOVITA_API_BASE_URL = sb.api_base_url
    settings.NOVITA_API_KEY = sb.api_key
    reset_client()
    try:
        yield sb
    finally:
        sb.shutdown()
        reset_client()
