"""Request bodies name only fields the endpoint knows.

A misspelt or invented field (`{"gpus": 2}` for `gpuNum`) would otherwise be dropped in silence
and the default used; on an API that spends money that must be an error the client sees.
"""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers


def unknown_fields(data, known) -> dict:
    """{name: [message]} for every key of `data` that is not in `known` (empty: none)."""
    if not isinstance(data, Mapping):
        return {}
    known = list(known)
    message = f"Unknown field; expected only: {', '.join(known) or 'no fields'}"
    return {str(key): [message] for key in data if key not in known}


class RejectUnknownFields(serializers.Serializer):
    """A request serializer that refuses fields it does not declare, nested ones included."""

    def to_internal_value(self, data):
        extra = unknown_fields(data, (f.field_name for f in self._writable_fields))
        if extra:
            raise serializers.ValidationError(extra)
        return super().to_internal_value(data)
