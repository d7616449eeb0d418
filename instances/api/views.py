"""Thin API views: validate, call a service, shape the response."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from novita_gateway.errors import (
    ApiError,
    InstanceNotFound,
    InvalidInstanceState,
    documented_error,
)
from novita_gateway.negotiation import takes_json_as_is
from novita_gateway.renderers import FastJSONRenderer
from ops.auth import client_of

from .. import history, lookups
from ..models import Instance
from ..novita import catalog
from ..representations import (
    CreateInstanceOut,
    InstanceDetailOut,
    InstanceEventListOut,
    OperationOut,
)
from ..services import commands
from ..status import Status
from . import serializers as s
from .errors import UPSTREAM_RESPONSES

ERRORS = {
    400: documented_error("VALIDATION_ERROR"),
    404: documented_error("INSTANCE_NOT_FOUND"),
    409: documented_error("Name in use, or impossible in this state"),
    **UPSTREAM_RESPONSES,
}


def actor_of(request) -> str:
    user = getattr(request, "user", None)
    return getattr(user, "ident", "") or ""


def get_instance_or_404(instance_id: str, read=lookups.instance_by_id) -> Instance:
    instance = read(instance_id)
    if instance is None:
        raise InstanceNotFound(details=f"Instance with ID '{instance_id[:100]}' does not exist")
    return instance


def get_by_name_or_404(name: str) -> Instance:
    instance = Instance.objects.named(name).first()
    if instance is None:
        raise InstanceNotFound(details=f"Instance with name '{name[:100]}' does not exist")
    return instance


def validated(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class InstanceListCreateView(APIView):
    @extend_schema(
        summary="List instances",
        operation_id="instances_list",
        parameters=[s.ListQuerySerializer],
        responses={
            200: s.InstanceListOut,
            400: ERRORS[400],
            **UPSTREAM_RESPONSES,
        },
    )
    def get(self, request):
        query = validated(s.ListQuerySerializer, request.query_params)
        from ..services import sync

        instances = sync.list_for_api(
            source=query["source"],
            include_novita_only=query["includeNovitaOnly"],
            sync_local_state=query["syncLocalState"],
        )
        return Response({"instances": instances, "total": len(instances)})

    @extend_schema(
        summary="Create an instance",
        operation_id="instances_create",
        description=(
            "Checked against the catalogue before anything is created: an unknown region, a "
            "product not offered in the region, or a template that does not exist is a 400 "
            "`VALIDATION_ERROR` whose details name the field and list the valid `choices` (for "
            "a product, the regions offering it; for a spot create, the regions offering it as "
            "spot). Only when the catalogue cannot be read "
            "(upstream down) is the create accepted and resolved by the worker. Unknown body "
            "fields are a 400."
        ),
        request=s.CreateInstanceSerializer,
        responses={201: CreateInstanceOut, 400: ERRORS[400], 409: ERRORS[409]},
    )
    def post(self, request):
        data = validated(s.CreateInstanceSerializer, request.data)
        problems = catalog.create_problems(
            data["product_name"],
            data["template_id"],
            data["region"],
            data["gpu_num"],
            billing_mode=data.get("billing_mode"),
        )
        if problems:
            raise ApiError("Validation failed", details=problems)
        instance = commands.create_instance(data, actor=actor_of(request))
        body = CreateInstanceOut.render(
            instance,
            message="Instance creation initiated successfully",
            estimated_ready_time=commands.estimated_ready_time(instance),
        )
        return Response(body, status=status.HTTP_201_CREATED)


def detail_body(instance: Instance) -> dict:
    """GET /api/instances/{id}'s body: the instance with what its event trail adds."""
    return InstanceDetailOut.render(instance, **history.billing(instance).as_values())


class InstanceDetailView(APIView):
    def dispatch(self, request, *args, **kwargs):
        # A client's poll is the request the gateway serves most. When it presents a valid key,
        # takes plain JSON and names an instance that exists, nothing is left for DRF to decide,
        # and its request wrapping, negotiation and rendering were a tenth of the poll's CPU; so
        # the answer is written here, the same bytes and headers DRF would write. Anything else
        # (no key, a bad key, another Accept, an unknown id, another method) goes through DRF.
        if request.method == "GET" and takes_json_as_is(request) and client_of(request):
            instance = lookups.instance_for_poll(kwargs["instance_id"])
            if instance is not None:
                response = HttpResponse(
                    FastJSONRenderer().render(detail_body(instance)),
                    content_type=FastJSONRenderer.media_type,
                )
                response["Allow"] = ", ".join(self.allowed_methods)
                return response
        return super().dispatch(request, *args, **kwargs)

    @extend_schema(
        summary="Get an instance's status and details",
        operation_id="instances_retrieve",
        description=(
            "Served from the gateway's database: polling causes no upstream call. Besides the "
            "contract's fields it says why the instance has its status (`statusReason`), its "
            "price (`pricePerHour`), and its billed time and estimated cost so far "
            "(`billedSeconds`, `costSoFar`)."
        ),
        responses={200: InstanceDetailOut, 404: ERRORS[404]},
    )
    def get(self, request, instance_id):
        return Response(detail_body(get_instance_or_404(instance_id, lookups.instance_for_poll)))

    @extend_schema(
        summary="Terminate an instance",
        operation_id="instances_terminate",
        description=(
            "Deletes the instance upstream (GPU and disks stop being billed) and ends in "
            "`terminated`. Answers 202 with status `stopping` while upstream removes it. "
            "Idempotent: a retried DELETE while termination is under way answers 202 with the "
            "same `operationId` and no second upstream call, and a DELETE of an instance that "
            "is already terminated answers 200 with its current state (status `terminated`). "
            "Its name is free for a new instance once it is terminated."
        ),
        request=None,
        responses={
            200: OpenApiResponse(OperationOut, description="Already terminated"),
            202: OperationOut,
            404: ERRORS[404],
            409: ERRORS[409],
            **UPSTREAM_RESPONSES,
        },
    )
    def delete(self, request, instance_id):
        instance = get_instance_or_404(instance_id)
        if instance.status == Status.TERMINATED:
            return Response(_operation(instance, "Instance is already terminated"))
        instance = commands.delete_instance(instance, actor=actor_of(request))
        return Response(
            _operation(instance, "Instance termination initiated successfully"),
            status=status.HTTP_202_ACCEPTED,
        )


class InstanceEventsView(APIView):
    @extend_schema(
        summary="List an instance's events (its audit trail)",
        operation_id="instances_events",
        description=(
            "Every status change and decision recorded for the instance, newest first: what "
            "changed, who acted (`source`, `actor`) and why (`reason`). Paginated like the "
            "instance list: the items with `total`, plus `page` and `pageSize`."
        ),
        parameters=[s.PageQuerySerializer],
        responses={200: InstanceEventListOut, 400: ERRORS[400], 404: ERRORS[404]},
    )
    def get(self, request, instance_id):
        query = validated(s.PageQuerySerializer, request.query_params)
        instance = get_instance_or_404(instance_id)
        events, total = history.events_page(
            instance.id, page=query["page"], page_size=query["pageSize"]
        )
        return Response(
            InstanceEventListOut.render(
                {
                    "events": events,
                    "total": total,
                    "page": query["page"],
                    "page_size": query["pageSize"],
                }
            )
        )


def _operation(instance: Instance, message: str, *, with_eta: bool = False) -> dict:
    if with_eta:
        eta = commands.estimated_ready_time(instance)
        return OperationOut.render(instance, message=message, estimated_ready_time=eta)
    return OperationOut.render(instance, message=message)


def _start(request, instance: Instance, data: dict) -> Response:
    instance = commands.start_instance(
        instance,
        health_check_config=data.get("healthCheckConfig"),
        target_port=data.get("targetPort"),
        webhook_url=data.get("webhookUrl"),
        actor=actor_of(request),
    )
    return Response(
        _operation(instance, "Instance start initiated successfully", with_eta=True),
        status=status.HTTP_202_ACCEPTED,
    )


def _stop(request, instance: Instance, data: dict) -> Response:
    stopped = commands.stop_instance(
        instance, webhook_url=data.get("webhookUrl"), actor=actor_of(request)
    )
    if stopped is None:
        raise InvalidInstanceState.changed_meanwhile()
    return Response(_operation(stopped, "Instance stop initiated successfully"))


START_DOC = extend_schema(
    summary="Start an instance",
    operation_id="instances_start",
    description="Starts a stopped instance; follow it to `ready` by polling or webhook.",
    request=s.StartInstanceSerializer,
    responses={202: OperationOut, **ERRORS},
)
STOP_DOC = extend_schema(
    summary="Stop an instance",
    operation_id="instances_stop",
    request=s.StopInstanceSerializer,
    responses={200: OperationOut, **ERRORS},
)


class StartInstanceView(APIView):
    @START_DOC
    def post(self, request, instance_id):
        data = validated(s.StartInstanceSerializer, request.data)
        return _start(request, get_instance_or_404(instance_id), data)


class StopInstanceView(APIView):
    @STOP_DOC
    def post(self, request, instance_id):
        data = validated(s.StopInstanceSerializer, request.data)
        return _stop(request, get_instance_or_404(instance_id), data)


class StartByNameView(APIView):
    @extend_schema(
        summary="Start an instance by name",
        operation_id="instances_start_by_name",
        request=s.StartByNameSerializer,
        responses={202: OperationOut, **ERRORS},
    )
    def post(self, request):
        data = validated(s.StartByNameSerializer, request.data)
        return _start(request, get_by_name_or_404(data["instanceName"]), data)


class StopByNameView(APIView):
    @extend_schema(
        summary="Stop an instance by name",
        operation_id="instances_stop_by_name",
        request=s.StopByNameSerializer,
        responses={200: OperationOut, **ERRORS},
    )
    def post(self, request):
        data = validated(s.StopByNameSerializer, request.data)
        return _stop(request, get_by_name_or_404(data["instanceName"]), data)
