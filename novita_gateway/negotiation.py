"""Content negotiation that skips DRF's Accept parsing when there is nothing to choose."""

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.settings import api_settings

# What clients send when they take whatever comes (wrk and curl send nothing or */*).
_ANYTHING = {"", "*/*", "application/json"}


def takes_json_as_is(request) -> bool:
    """Whether the client accepts plain JSON with nothing to negotiate: no Accept header, */* or
    application/json, and no `format` override in the query string. `request` is Django's or
    DRF's (both carry META)."""
    return request.META.get("HTTP_ACCEPT", "") in _ANYTHING and (
        # The raw query string, not query_params: parsing it was a twentieth of a poll.
        # A false alarm ("?xformat=") only sends the request through DRF's own path.
        f"{api_settings.URL_FORMAT_OVERRIDE}=" not in request.META.get("QUERY_STRING", "")
    )


class SingleRendererNegotiation(DefaultContentNegotiation):
    """DRF's own negotiation, except that a view with one renderer serves it straight away to a
    client that accepts anything or exactly it: parsing the header was 5% of a poll. Any other
    Accept value, or a `format` override, still goes through DRF (and its 406)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if len(renderers) == 1 and not format_suffix and takes_json_as_is(request):
            renderer = renderers[0]
            return renderer, renderer.media_type
        return super().select_renderer(request, renderers, format_suffix)
