"""Response shapes: each serializer in instances/representations.py is what goes on the wire."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework import serializers

from instances import representations as r
from instances.models import Instance
from instances.status import Status

NOW = timezone.now()


def _drf_body(shape, obj) -> dict:
    """What DRF's generic Serializer.to_representation makes of `obj`, with the empty optional
    fields left out as the shapes promise."""
    full = serializers.Serializer.to_representation(shape(), obj)
    optional = {name for name, field in shape().fields.items() if not field.required}
    return {k: v for k, v in full.items() if not (k in optional and v in (None, ""))}


INSTANCES = [
    Instance(
        name="full",
        product_name="RTX 4090 24GB",
        template_id="t",
        status=Status.READY,
        novita_instance_id="nov-1",
        port_mappings=[
            {"port": 8888, "endpoint": "http://127.0.0.1:1", "type": "http"},
            {"port": 22, "endpoint": None, "type": "tcp"},
        ],
        connection_details={"ssh": "ssh root@127.0.0.1", "jupyter": ""},
        created_at=NOW,
        ready_at=NOW,
        last_used_at=NOW,
        auto_stop_at=NOW + timedelta(minutes=20),
        stopped_at=NOW,
        failure_reason="boom",
        auto_stop_minutes=7,
    ),
    Instance(
        name="bare",
        product_name="RTX 4090 24GB",
        template_id="t",
        status=Status.CREATING,
        created_at=NOW,
        auto_stop_at=NOW,
    ),
]


@pytest.mark.parametrize("instance", INSTANCES, ids=lambda i: i.name)
@pytest.mark.parametrize("shape", [r.InstanceSummaryOut, r.InstanceDetailOut, r.WebhookInstanceOut])
def test_bodies_are_exactly_what_the_serializer_declares(shape, instance):
    assert shape.render(instance) == _drf_body(shape, instance)


def test_empty_optional_fields_are_left_out_not_sent_as_null():
    body = r.InstanceDetailOut.render(INSTANCES[1])
    assert not {"readyAt", "lastUsedAt", "stoppedAt", "failureReason"} & set(body)
    # Auto-stop cannot act on a creating instance: no deadline is shown.
    assert "autoStopAt" not in body
    assert body["novitaInstanceId"] is None  # required, so sent even when empty


def test_detail_shows_threshold_deadline_and_only_filled_connection_details():
    body = r.InstanceDetailOut.render(INSTANCES[0])
    assert body["autoStopMinutes"] == 7.0
    assert body["autoStopAt"].endswith("Z")
    assert body["connectionDetails"] == {"ssh": "ssh root@127.0.0.1"}
    assert body["stoppedAt"] == body["readyAt"]


def test_keyword_values_complete_what_the_object_does_not_carry():
    body = r.OperationOut.render(INSTANCES[0], message="ok", estimated_ready_time=NOW)
    assert body["message"] == "ok"
    assert body["estimatedReadyTime"].endswith("Z")
    assert "estimatedReadyTime" not in r.OperationOut.render(INSTANCES[0], message="ok")


def test_a_missing_required_value_is_an_error_not_a_silent_gap():
    with pytest.raises(AttributeError):
        r.OperationOut.render(INSTANCES[0])  # no message
