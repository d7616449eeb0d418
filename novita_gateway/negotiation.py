"""Content negotiation that skips DRF's Accept parsing when there is nothing to choose."""

from rest_framework.negotiation import DefaultContentNegotiation

# What clients send when they take whatever comes (wrk and curl send nothing or */*).
_ANYTHING = {"", "*/*", "application/json"}


class SingleRendererNegotiation(DefaultContentNegotiation):
    """DRF's own negotiation, except that a view with one renderer serves it straight away to a
    client that accepts anything or exactly it: parsing the header was 5% of a poll. Any other
    Accept value, or a `format` override, still goes through DRF (and its 406)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if (
            len(renderers) == 1
            and not format_suffix
            and request.META.get("HTTP_ACCEPT", "") in _ANYTHING
            # The raw query string, not query_params: parsing it was a twentieth of a poll.
            # A false alarm ("?xformat=") only sends the request through DRF's own path.
            and f"{self.settings.URL_FORMAT_OVERRIDE}=" not in request.META.get("QUERY_STRING", "")
        ):
            renderer = renderers[0]
            return renderer, renderer.media_type
        return super().select_renderer(request, renderers, format_suffix)
