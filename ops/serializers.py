"""Response shapes of the operational endpoints, for the schema.

The bodies are built by health.py, caching.py and metrics_payloads.py from live figures; these
serializers say what those bodies hold, and the suite checks every body it gets against them
(tests/openapi_conformance.py), fields the schema does not list included.
"""

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

# --- /health ----------------------------------------------------------------------------------

PART_STATES = ["up", "down", "degraded", "misconfigured", "unknown", "not_configured", "disabled"]


class HealthServicesOut(serializers.Serializer):
    novitaApi = serializers.ChoiceField(choices=PART_STATES)
    jobQueue = serializers.ChoiceField(choices=PART_STATES)
    cache = serializers.ChoiceField(choices=PART_STATES)
    migrationService = serializers.ChoiceField(choices=PART_STATES)
    redis = serializers.ChoiceField(choices=PART_STATES)
    database = serializers.ChoiceField(choices=PART_STATES)


class HealthPerformanceOut(serializers.Serializer):
    requestsPerMinute = serializers.FloatField()
    averageResponseTime = serializers.FloatField(help_text="Milliseconds")
    errorRate = serializers.FloatField(help_text="Share of responses with status >= 400")
    jobProcessingRate = serializers.FloatField(help_text="Jobs per minute")


class HealthMemoryOut(serializers.Serializer):
    usedMB = serializers.IntegerField()
    totalMB = serializers.IntegerField()
    externalMB = serializers.IntegerField()
    rss = serializers.IntegerField(help_text="MB")


class CpuOut(serializers.Serializer):
    usage = serializers.FloatField(help_text="Machine CPU busy percent")
    loadAverage = serializers.ListField(child=serializers.FloatField())


class HealthSystemOut(serializers.Serializer):
    memory = HealthMemoryOut()
    cpu = CpuOut()


class CacheConfigurationOut(serializers.Serializer):
    defaultBackend = serializers.ChoiceField(choices=["redis", "file", "fallback"])
    enableFallback = serializers.BooleanField()
    cacheCount = serializers.IntegerField()
    redisConnected = serializers.BooleanField()


class CacheManagerHealthOut(serializers.Serializer):
    available = serializers.BooleanField()
    configuration = CacheConfigurationOut()


class HealthRedisOut(serializers.Serializer):
    available = serializers.BooleanField()
    healthy = serializers.BooleanField()
    cacheManager = CacheManagerHealthOut()


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": PART_STATES},
            "lastChecked": {"type": "string", "format": "date-time"},
            "error": {"type": "string", "description": "Exception class name, never a secret"},
        },
        "required": ["status"],
        # Each check adds its own figures (response time, queue size, heartbeats...).
        "additionalProperties": True,
    }
)
class DependencyField(serializers.JSONField):
    pass


class HealthDependenciesOut(serializers.Serializer):
    redis = DependencyField()
    novitaApi = DependencyField()
    jobQueue = DependencyField()
    cache = DependencyField()
    database = DependencyField()
    scheduler = DependencyField()


class HealthOut(serializers.Serializer):
    status = serializers.ChoiceField(choices=["healthy", "degraded"])
    timestamp = serializers.DateTimeField()
    services = HealthServicesOut()
    uptime = serializers.IntegerField(help_text="Seconds since this process started")
    performance = HealthPerformanceOut()
    system = HealthSystemOut()
    redis = HealthRedisOut()
    dependencies = HealthDependenciesOut()


class UnhealthyOut(serializers.Serializer):
    status = serializers.CharField(help_text="`unhealthy`")
    timestamp = serializers.DateTimeField()
    services = HealthServicesOut()
    uptime = serializers.IntegerField(help_text="Seconds since this process started")


# --- /api/cache/* -----------------------------------------------------------------------------


class CacheStatsEntryOut(serializers.Serializer):
    size = serializers.IntegerField()
    hitRatio = serializers.FloatField(help_text="0..1")
    hits = serializers.IntegerField()
    misses = serializers.IntegerField()
    sets = serializers.IntegerField()


class CacheManagerOut(serializers.Serializer):
    cacheNames = serializers.ListField(child=serializers.CharField())
    stats = serializers.DictField(child=CacheStatsEntryOut(), help_text="Per cache name")


class CacheSizeRatioOut(serializers.Serializer):
    size = serializers.IntegerField()
    hitRatio = serializers.FloatField()


class InstanceServiceCacheOut(serializers.Serializer):
    instanceDetailsCache = CacheSizeRatioOut()


class CacheServicesOut(serializers.Serializer):
    instance = InstanceServiceCacheOut()


class CacheSummaryOut(serializers.Serializer):
    totalCaches = serializers.IntegerField()
    totalEntries = serializers.IntegerField()
    totalHits = serializers.IntegerField()
    totalMisses = serializers.IntegerField()
    overallHitRatio = serializers.FloatField()


class CacheStatsOut(serializers.Serializer):
    timestamp = serializers.DateTimeField()
    cacheManager = CacheManagerOut()
    services = CacheServicesOut()
    summary = CacheSummaryOut()


class CacheClearIn(serializers.Serializer):
    cacheName = serializers.ChoiceField(choices=settings.CACHE_NAMES, required=False)


class MessageOut(serializers.Serializer):
    message = serializers.CharField()
    timestamp = serializers.DateTimeField()


# --- /api/metrics -----------------------------------------------------------------------------


class CountRateOut(serializers.Serializer):
    count = serializers.IntegerField()
    rate = serializers.FloatField(help_text="Per minute")


class ProcessedRateOut(serializers.Serializer):
    processed = serializers.IntegerField()
    rate = serializers.FloatField(help_text="Per minute")


class RequestMetricsOut(serializers.Serializer):
    total = CountRateOut()
    byStatus = serializers.DictField(
        child=serializers.IntegerField(), help_text="Responses per status class (2xx, 4xx...)"
    )


class JobMetricsOut(serializers.Serializer):
    total = ProcessedRateOut()
    byType = serializers.DictField(child=serializers.IntegerField())


class ProcessMemoryOut(serializers.Serializer):
    heapUsed = serializers.IntegerField(help_text="Bytes private to this process")
    heapTotal = serializers.IntegerField(help_text="Bytes resident")
    external = serializers.IntegerField(help_text="Bytes shared")
    rss = serializers.IntegerField(help_text="Bytes resident")


class SystemMetricsOut(serializers.Serializer):
    memory = ProcessMemoryOut()
    cpu = CpuOut()
    uptime = serializers.IntegerField(help_text="Seconds")


class CacheMetricsOut(serializers.Serializer):
    hitRatio = serializers.FloatField()
    totalSize = serializers.IntegerField()


class MetricsDataOut(serializers.Serializer):
    requests = RequestMetricsOut()
    jobs = JobMetricsOut()
    system = SystemMetricsOut()
    cache = CacheMetricsOut()


class MetricsOut(serializers.Serializer):
    status = serializers.CharField(help_text="`success`")
    timestamp = serializers.DateTimeField()
    data = MetricsDataOut()


class SummaryPerformanceOut(serializers.Serializer):
    requestsPerMinute = serializers.FloatField()
    averageResponseTimeMs = serializers.FloatField()
    errorRatePercent = serializers.FloatField()


class SummaryJobsOut(serializers.Serializer):
    processingRatePerMinute = serializers.FloatField()


class SummarySystemOut(serializers.Serializer):
    memoryUsageMB = serializers.IntegerField()
    cpuUsagePercent = serializers.FloatField()
    uptimeSeconds = serializers.IntegerField()


class SummaryCacheOut(serializers.Serializer):
    hitRatePercent = serializers.FloatField()
    totalSize = serializers.IntegerField()


class MetricsSummaryDataOut(serializers.Serializer):
    performance = SummaryPerformanceOut()
    jobs = SummaryJobsOut()
    system = SummarySystemOut()
    cache = SummaryCacheOut()


class MetricsSummaryOut(serializers.Serializer):
    status = serializers.CharField(help_text="`success`")
    timestamp = serializers.DateTimeField()
    data = MetricsSummaryDataOut()
