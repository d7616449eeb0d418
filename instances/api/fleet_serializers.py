"""The comprehensive listing's query (input) and documented response shape (output)."""

from rest_framework import serializers

from ..representations import InstanceSummaryOut


class ComprehensiveQuerySerializer(serializers.Serializer):
    includeNovitaOnly = serializers.BooleanField(
        default=True, help_text="Include instances that exist upstream but are not managed here"
    )
    syncLocalState = serializers.BooleanField(
        default=False,
        help_text="Write upstream's view into the local records first (recorded as events)",
    )


class ComprehensiveInstanceOut(InstanceSummaryOut):
    # A listing row: a local record's summary (merged with upstream's view), or an instance
    # only upstream knows. Rows are built by services/sync.py; this is their schema.

    id = serializers.CharField(help_text="Our id; the upstream id for Novita-only instances")
    name = serializers.CharField(allow_null=True)
    source = serializers.ChoiceField(choices=["local", "novita", "merged"])
    dataConsistency = serializers.ChoiceField(choices=["consistent", "inconsistent", "unknown"])
    inconsistencies = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="What differs: status, name, gpuNum, clusterId, imageUrl, or existence "
        "(managed here, not listed upstream)",
    )
    novitaInstanceId = serializers.CharField(allow_null=True)
    novitaStatus = serializers.CharField(required=False, allow_null=True)
    gpuNum = serializers.IntegerField(allow_null=True)
    region = serializers.CharField(allow_null=True)
    clusterId = serializers.CharField(allow_null=True)
    clusterName = serializers.CharField(allow_null=True)
    productName = serializers.CharField(allow_null=True)
    cpuNum = serializers.CharField(allow_null=True)
    memory = serializers.CharField(allow_null=True)
    imageUrl = serializers.CharField(allow_null=True)
    createdAt = serializers.DateTimeField(allow_null=True)
    lastSyncedAt = serializers.DateTimeField(allow_null=True)


class SourcesOut(serializers.Serializer):
    local = serializers.IntegerField()
    novita = serializers.IntegerField()
    merged = serializers.IntegerField()


class PerformanceOut(serializers.Serializer):
    totalRequestTime = serializers.FloatField(help_text="Milliseconds")
    novitaApiTime = serializers.FloatField(help_text="Milliseconds fetching (or reading cached)")
    localDataTime = serializers.FloatField(help_text="Milliseconds in the database")
    mergeProcessingTime = serializers.FloatField(help_text="Milliseconds merging")
    cacheHitRatio = serializers.FloatField(help_text="Share of listings served from the cache")
    cacheHit = serializers.BooleanField(help_text="This listing was served from the cache")
    upstreamPages = serializers.IntegerField(help_text="Upstream pages fetched for this listing")


class ComprehensiveListOut(serializers.Serializer):
    instances = ComprehensiveInstanceOut(many=True)
    total = serializers.IntegerField()
    sources = SourcesOut()
    performance = PerformanceOut()
