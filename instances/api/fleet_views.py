"""The fleet view: local records merged with everything upstream lists."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from ..services import snapshot, sync
from . import fleet_serializers as fs
from .errors import UPSTREAM_RESPONSES
from .views import ERRORS, validated


class ComprehensiveInstanceListView(APIView):
    @extend_schema(
        summary="List every instance, local and upstream, merged",
        description=(
            "Every local record merged with one paginated pass over Novita's instance list "
            f"(shared for {snapshot.UPSTREAM_CACHE_SECONDS} s between callers). "
            "Each row says where it comes from (`source`: local, novita, merged) and whether "
            "both sides agree (`dataConsistency`, with `inconsistencies` naming what differs). "
            "`syncLocalState=true` takes a fresh pass and first writes upstream's view into the "
            "local records (each change is an instance event with source `reconcile`)."
        ),
        parameters=[fs.ComprehensiveQuerySerializer],
        responses={
            200: fs.ComprehensiveListOut,
            400: ERRORS[400],
            **UPSTREAM_RESPONSES,
        },
    )
    def get(self, request):
        query = validated(fs.ComprehensiveQuerySerializer, request.query_params)
        return Response(
            sync.fleet(
                source="all",
                include_novita_only=query["includeNovitaOnly"],
                sync_local_state=query["syncLocalState"],
            )
        )
