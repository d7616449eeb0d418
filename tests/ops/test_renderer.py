"""The API's JSON renderer writes exactly what DRF's own JSONRenderer writes."""

from decimal import Decimal

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.exceptions import ErrorDetail
from rest_framework.renderers import JSONRenderer

from novita_gateway.renderers import FastJSONRenderer

BODIES = [
    {"id": "inst_1", "status": "ready", "gpuNum": 1, "pricePerHour": 0.35, "readyAt": None},
    {"instances": [{"name": "é—ü 日本", "portMappings": [{"port": 8888}]}], "total": 1},
    {"note": "line\u2028and\u2029paragraph separators, <script>&"},
    {"error": {"code": "VALIDATION_ERROR", "details": [ErrorDetail("bad", code="invalid")]}},
    {"lazy": gettext_lazy("This field is required.")},
    {"money": Decimal("1.50"), "huge": 2**70, "negative": -(2**63)},
    [1, 2.5, True, False, None, "x"],
    {"nested": {"deep": [[{"a": []}]]}, "empty": {}},
]


@pytest.mark.parametrize("body", BODIES)
def test_api_json_is_byte_for_byte_what_drf_writes(body):
    assert FastJSONRenderer().render(body) == JSONRenderer().render(body)


def test_an_indent_the_client_asks_for_is_honoured():
    body = {"a": [1, 2]}
    media = "application/json; indent=2"
    assert FastJSONRenderer().render(body, media) == JSONRenderer().render(body, media)
    assert b"\n  " in FastJSONRenderer().render(body, media)


def test_no_data_renders_an_empty_body():
    assert FastJSONRenderer().render(None) == b""
