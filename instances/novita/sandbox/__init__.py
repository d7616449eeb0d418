"""In-process simulator ("sandbox") of Novita's v1 GPU-instance API, as a package.

- state.py: the Sandbox object (instances, jobs, faults, call record, upstream views and operations)
- server.py: the HTTP layer (upstream routes, /_sandbox control routes)
- ports.py: loopback TCP listeners standing in for instances' tcp ports
- catalog.py: clusters, products and templates served
- base.py: paths, status sequences, the upstream error type, parameter parsing
"""

from .base import (
    API_PREFIX,
    CONTROL_PREFIX,
    DEFAULT_PAGE_NUMBERING,
    NOT_FOUND_MODES,
    PAGE_NUMBERINGS,
    ROUTE_404_MODES,
    UPSTREAM_STATUSES,
    ApiError,
)
from .catalog import CLUSTERS, PRODUCTS, TEMPLATES
from .state import Sandbox

__all__ = [
    "API_PREFIX",
    "CLUSTERS",
    "CONTROL_PREFIX",
    "DEFAULT_PAGE_NUMBERING",
    "NOT_FOUND_MODES",
    "PAGE_NUMBERINGS",
    "ROUTE_404_MODES",
    "PRODUCTS",
    "TEMPLATES",
    "UPSTREAM_STATUSES",
    "ApiError",
    "Sandbox",
]
