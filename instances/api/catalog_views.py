"""What a client may create: regions, GPU products with prices, templates.

Served from the named caches (clusters, products, templates) for CATALOG_CACHE_SECONDS: a warm
catalogue costs no upstream call. When upstream cannot be read and nothing is cached, the
answer is the usual upstream error (502/503/408).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from novita_gateway.errors import documented_error

from ..novita import catalog
from ..representations import ProductListOut, RegionListOut, TemplateListOut
from .errors import UPSTREAM_RESPONSES
from .views import validated

CACHED = " Served from the gateway's cache (CATALOG_CACHE_SECONDS); a warm cache calls no upstream."


class ProductQuerySerializer(serializers.Serializer):
    region = serializers.CharField(
        required=False, help_text="Only products offered in this region (a code of /api/regions)"
    )
    gpuNum = serializers.IntegerField(
        min_value=1, max_value=8, default=1, help_text="GPUs per instance (prices are for these)"
    )

    def validate_region(self, value):
        codes = catalog.region_codes()
        if value not in codes:
            raise serializers.ValidationError(f"Unknown region; regions: {', '.join(codes)}")
        return value


class RegionListView(APIView):
    @extend_schema(
        summary="List regions",
        operation_id="catalog_regions",
        description="Region codes accepted by `region` on create, and the Novita cluster each "
        "maps to (NOVITA_REGION_CLUSTERS)." + CACHED,
        responses={200: RegionListOut, **UPSTREAM_RESPONSES},
        examples=[
            OpenApiExample(
                "Regions",
                response_only=True,
                value={
                    "regions": [
                        {
                            "id": "CN-HK-01",
                            "name": "CN-HK-01",
                            "clusterId": "cn-hongkong-1",
                            "available": True,
                        },
                        {"id": "AS-SGP-02", "name": None, "clusterId": None, "available": False},
                    ],
                    "total": 2,
                },
            )
        ],
    )
    def get(self, request):
        rows = catalog.list_regions()
        return Response(RegionListOut.render({"regions": rows, "total": len(rows)}))


class ProductListView(APIView):
    @extend_schema(
        summary="List GPU products",
        operation_id="catalog_products",
        description="GPU products by name with on-demand and spot prices per hour (USD, for "
        "`gpuNum` GPUs), whether they can be deployed now, and the regions offering them." + CACHED,
        parameters=[ProductQuerySerializer],
        responses={
            200: ProductListOut,
            400: documented_error("VALIDATION_ERROR"),
            **UPSTREAM_RESPONSES,
        },
        examples=[
            OpenApiExample(
                "Products",
                response_only=True,
                value={
                    "products": [
                        {
                            "name": "RTX 4090 24GB",
                            "gpu": "RTX 4090",
                            "gpuMemoryGb": 24,
                            "gpuNum": 1,
                            "pricePerHour": 0.35,
                            "spotPricePerHour": 0.18,
                            "available": True,
                            "regions": ["CN-HK-01", "US-WEST-01"],
                            "cpuPerGpu": 16,
                            "memoryPerGpuGb": 62,
                        }
                    ],
                    "total": 1,
                },
            )
        ],
    )
    def get(self, request):
        query = validated(ProductQuerySerializer, request.query_params)
        rows = catalog.list_products(region=query.get("region"), gpu_num=query["gpuNum"])
        return Response(ProductListOut.render({"products": rows, "total": len(rows)}))


class TemplateListView(APIView):
    @extend_schema(
        summary="List templates",
        operation_id="catalog_templates",
        description="Templates an instance can be created from (`templateId`): image and the "
        "ports it exposes." + CACHED,
        responses={200: TemplateListOut, **UPSTREAM_RESPONSES},
        examples=[
            OpenApiExample(
                "Templates",
                response_only=True,
                value={
                    "templates": [
                        {
                            "id": "pytorch-jupyter",
                            "name": "PyTorch + Jupyter",
                            "image": "pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime",
                            "ports": [{"port": 8888, "type": "http"}, {"port": 22, "type": "tcp"}],
                            "channel": "official",
                        }
                    ],
                    "total": 1,
                },
            )
        ],
    )
    def get(self, request):
        rows = [t for t in catalog.list_templates() if t.id]
        return Response(TemplateListOut.render({"templates": rows, "total": len(rows)}))
