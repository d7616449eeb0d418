"""Settings, all read from the environment (see the README's configuration table)."""

import os
import sys
import tempfile
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env is a convenience for developers; real deployments set the environment.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
TESTING = "pytest" in sys.modules
_INSECURE_DEV_KEY = "django-insecure-dev-only-key-do-not-use-in-production-0123456789"


def _var_dir() -> Path:
    if TESTING and not os.environ.get("VAR_DIR"):
        # Each test run gets its own runtime folder (counters, file caches), inherited by any
        # process a test starts, so concurrent runs never see each other's figures.
        os.environ["VAR_DIR"] = tempfile.mkdtemp(prefix="ngw-test-")
    return Path(env("VAR_DIR", default=str(BASE_DIR / "var")))


# Runtime files (SQLite database, file broker, file cache, generated key) live under var/.
VAR_DIR = _var_dir()
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
# `make install` / `make run` generate one key per checkout, so every manage.py command works
# from a clone without exporting anything; a deployment sets DJANGO_SECRET_KEY instead.
_GENERATED_KEY_FILE = VAR_DIR / "secret_key"
if not SECRET_KEY and _GENERATED_KEY_FILE.is_file():
    SECRET_KEY = _GENERATED_KEY_FILE.read_text().strip()
if not SECRET_KEY:
    if not (DEBUG or TESTING):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DEBUG is false "
            f"(or run `make install`, which generates {_GENERATED_KEY_FILE} for local use)."
        )
    SECRET_KEY = _INSECURE_DEV_KEY

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
PORT = env.int("PORT", default=3000)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "csp",
    "instances",
    "ops",
]

MIDDLEWARE = [
    "ops.middleware.RequestContextMiddleware",
    # Right after the request id: a 429 still carries the id, the envelope and the access log.
    "ops.ratelimit.RateLimitMiddleware",
    "ops.middleware.RejectControlCharactersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "ops.middleware.PageContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Named as Django names them: `check --deploy` looks for these two by name, and skips its
    # session-cookie and CSRF checks without them.
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # The admin's user and messages, skipped on the JSON API (ops.middleware.browser_only).
    "ops.middleware.AuthenticationMiddleware",
    "ops.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: throttles repeated failed admin logins.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = 0.25  # hours
# Lock a (user, IP) pair, and an IP that fails across users; never a user name from any IP,
# which would let anyone lock an operator out.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_ENABLED = not TESTING or env.bool("AXES_ENABLED", default=False)
# Behind a proxy every login would otherwise share the proxy's address: one lock-out for all.
AXES_CLIENT_IP_CALLABLE = "ops.auth.client_ip"

ROOT_URLCONF = "novita_gateway.urls"
WSGI_APPLICATION = "novita_gateway.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
# Connections outlive a request on every backend: opening one (and, on SQLite, re-running the
# pragmas below) was a tenth of a poll's CPU.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let web, worker and beat share one SQLite file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=True)
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["connect_timeout"] = 5
    # Server-side binding lets psycopg prepare a statement the fifth time a connection runs it,
    # so a poll's fixed queries skip parsing and planning (and client-side quoting) on every
    # request. Turn it off behind a pooler in transaction mode, which cannot keep prepared
    # statements (PgBouncer before 1.21).
    if env.bool("DB_SERVER_SIDE_BINDING", default=True):
        options["server_side_binding"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="")

# Named caches. The database is the source of truth, so clearing any of them loses nothing.
CACHE_NAMES = ["instances", "products", "templates", "clusters", "health"]


def _cache(name: str) -> dict:
    if REDIS_URL:
        return {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"ngw:{name}",
            "TIMEOUT": 300,
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
                # Redis down must not break requests: reads miss, writes are dropped.
                "IGNORE_EXCEPTIONS": True,
                # clear() deletes this cache's keys only; django-redis's own is FLUSHDB.
                "CLIENT_CLASS": "ops.caching.PrefixScopedRedisClient",
            },
        }
    return {
        "BACKEND": "ops.caching.FileCache",
        "LOCATION": str(VAR_DIR / "cache" / name),
        "TIMEOUT": 300,
    }


CACHES = {"default": _cache("default"), **{n: _cache(n) for n in CACHE_NAMES}}
DJANGO_REDIS_IGNORE_EXCEPTIONS = True
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not TESTING
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security ---------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SECURE_REFERRER_POLICY = "same-origin"
# TLS is usually terminated by a proxy in front of gunicorn; opt in explicitly.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Load-balancer probes often speak plain http; /health carries nothing secret.
SECURE_REDIRECT_EXEMPT = [r"^health$"]
# Content-Security-Policy on pages (admin, API docs): everything from our own origin and no
# inline script (the API docs page loads its start-up script as a file for that reason). Inline
# style stays allowed: Django's admin templates, Swagger UI's page and our admin pages set
# style attributes, and a style cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# The key an operator issues in the admin is shown in a message: kept in the session (server
# side), never in the signed but readable messages cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
# Origins allowed to POST admin forms when a proxy changes the Host (e.g. https://gw.example.com).
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SILENCED_SYSTEM_CHECKS = env.list("SILENCED_SYSTEM_CHECKS", default=[])

# Request bodies above this are answered 413 before parsing.
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=64 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

# --- REST framework -------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["novita_gateway.renderers.FastJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["novita_gateway.parsers.StrictJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "novita_gateway.negotiation.SingleRendererNegotiation",
    "DEFAULT_AUTHENTICATION_CLASSES": ["ops.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["ops.auth.HasApiKeyWhenConfigured"],
    "EXCEPTION_HANDLER": "novita_gateway.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Novita GPU gateway API",
    "DESCRIPTION": (
        "Create, start and stop Novita.ai GPU instances, learn when they are ready, "
        "send last-used heartbeats; idle instances are stopped automatically."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI assets are served by us, not fetched from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # instances/api/urls.InstanceIdConverter: any id, as on the instance's other routes (its
    # regex only keeps the router's fixed words out, and is Python's, not JSON Schema's).
    "PATH_CONVERTER_OVERRIDES": {"instance_id": str},
    "ENUM_NAME_OVERRIDES": {"PartStateEnum": "ops.serializers.PART_STATES"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "ops.schema.document_common_errors",
    ],
}

# --- Celery -----------------------------------------------------------------------------
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": 3600,
        # Publishing must fail fast when Redis is away; sweeps redo what was not sent.
        "socket_timeout": 2,
        "socket_connect_timeout": 2,
    }
else:
    # A broker that needs no server: web, worker and beat exchange messages through files.
    _broker_dir = VAR_DIR / "broker"
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # kombu's default (1 s) lets a worker take only ~concurrency tasks a second: a burst
        # of 50 creates waited 25 s in the queue. Listing the folder 10 times a second is cheap.
        "polling_interval": 0.1,
    }
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Our JSON logging (with secrets masked) applies in workers too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Queues by blast radius. Cost control (monitor, auto-stop, reconcile, migration) never waits
# behind work whose duration a client controls: webhook deliveries (the client's receiver) and
# readiness probes (the client's own instance). The Procfile runs one worker for cost control
# and another for the two outbound queues; every task is routed explicitly (a test checks).
COST_CONTROL_QUEUE = "cost_control"
WEBHOOK_QUEUE = "webhooks"
PROBE_QUEUE = "probes"
WORKER_QUEUES = (COST_CONTROL_QUEUE, PROBE_QUEUE, WEBHOOK_QUEUE)
# Anything unrouted (and messages queued before an upgrade) lands here, which the cost-control
# worker also consumes.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {
    "instances.tasks.poll_instance": {"queue": COST_CONTROL_QUEUE},
    "instances.tasks.monitor_sweep": {"queue": COST_CONTROL_QUEUE},
    "instances.tasks.auto_stop_sweep": {"queue": COST_CONTROL_QUEUE},
    "instances.tasks.reconcile": {"queue": COST_CONTROL_QUEUE},
    "instances.tasks.migration_sweep": {"queue": COST_CONTROL_QUEUE},
    "instances.tasks.probe_instances": {"queue": PROBE_QUEUE},
    "instances.tasks.deliver_webhook": {"queue": WEBHOOK_QUEUE},
    "instances.tasks.deliver_due_webhooks": {"queue": WEBHOOK_QUEUE},
    # The heartbeat is sent to each queue by beat (see the schedule), so each is watched.
    "ops.tasks.worker_heartbeat": {"queue": COST_CONTROL_QUEUE},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Upstream (Novita) ------------------------------------------------------------------
NOVITA_API_KEY = env("NOVITA_API_KEY", default="")
NOVITA_INTERNAL_API_KEY = env("NOVITA_INTERNAL_API_KEY", default="")
NOVITA_API_BASE_URL = env(
    "NOVITA_API_BASE_URL", default="https://api.novita.ai/gpu-instance/openapi"
)
NOVITA_INTERNAL_API_BASE_URL = env("NOVITA_INTERNAL_API_BASE_URL", default="")
NOVITA_CONNECT_TIMEOUT = env.float("NOVITA_CONNECT_TIMEOUT", default=3.05)
NOVITA_READ_TIMEOUT = env.float("NOVITA_READ_TIMEOUT", default=10.0)
# Wall-clock bound of one upstream attempt (connect + headers + body); unset: connect + read.
NOVITA_TOTAL_TIMEOUT = env.float("NOVITA_TOTAL_TIMEOUT", default=None)
NOVITA_READ_RETRIES = env.int("NOVITA_READ_RETRIES", default=2)
NOVITA_CIRCUIT_FAILURE_THRESHOLD = env.int("NOVITA_CIRCUIT_FAILURE_THRESHOLD", default=5)
NOVITA_CIRCUIT_RESET_SECONDS = env.int("NOVITA_CIRCUIT_RESET_SECONDS", default=60)
CATALOG_CACHE_SECONDS = env.int("CATALOG_CACHE_SECONDS", default=300)
# Region code -> Novita cluster (id or name) overrides, "CN-HK-01=cn-hongkong-1,US-WEST-01=a|b";
# parsed and defaulted by instances.novita.catalog (DEFAULT_REGION_CLUSTERS).
NOVITA_REGION_CLUSTERS = env("NOVITA_REGION_CLUSTERS", default="")

# --- Webhooks ---------------------------------------------------------------------------
WEBHOOK_SECRET = env("WEBHOOK_SECRET", default="")
WEBHOOK_ALLOWED_HOSTS = env.list("WEBHOOK_ALLOWED_HOSTS", default=[])
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
# How long a delivery waits behind an earlier one of the same instance (services/webhooks.py).
WEBHOOK_ORDER_WAIT_SECONDS = env.float("WEBHOOK_ORDER_WAIT_SECONDS", default=90.0)

# --- Client access ----------------------------------------------------------------------
GATEWAY_API_KEYS = env.list("GATEWAY_API_KEYS", default=[])
# With DEBUG off and no key configured (here or issued in the admin) the API answers 401, unless
# this says an open API is really wanted (`make run` on the sandbox sets it, and says so).
ALLOW_OPEN_API = env.bool("ALLOW_OPEN_API", default=False)
# Off by default under pytest (every test client is 127.0.0.1); the rate-limit tests set it.
RATE_LIMIT_PER_MINUTE = env.int("RATE_LIMIT_PER_MINUTE", default=0 if TESTING else 100)
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

# --- Background work --------------------------------------------------------------------
AUTO_STOP_ENABLED = env.bool("AUTO_STOP_ENABLED", default=True)
AUTO_STOP_CHECK_INTERVAL_MINUTES = env.float("AUTO_STOP_CHECK_INTERVAL_MINUTES", default=5)
AUTO_STOP_INACTIVITY_THRESHOLD_MINUTES = env.float(
    "AUTO_STOP_INACTIVITY_THRESHOLD_MINUTES", default=20
)
AUTO_STOP_WARNING_MINUTES = env.float("AUTO_STOP_WARNING_MINUTES", default=2)
MONITOR_INTERVAL_SECONDS = env.float("MONITOR_INTERVAL_SECONDS", default=5)
# How long a claimed instance is left to its worker before another may take it (the
# recovery delay after a worker dies mid-step); must exceed the longest monitor step.
MONITOR_LEASE_SECONDS = env.float("MONITOR_LEASE_SECONDS", default=90)
RECONCILE_INTERVAL_SECONDS = env.float("RECONCILE_INTERVAL_SECONDS", default=60)
# The sweeps record a few thousand runs a day; older ones are dropped (0 keeps them all).
SWEEP_RUN_RETENTION_DAYS = env.int("SWEEP_RUN_RETENTION_DAYS", default=14)
MIGRATION_ENABLED = env.bool("MIGRATION_ENABLED", default=True)
MIGRATION_TIMEOUT_MINUTES = env.float("MIGRATION_TIMEOUT_MINUTES", default=30)

# --- Health and metrics -----------------------------------------------------------------
METRICS_ENABLED = env.bool("METRICS_ENABLED", default=True)
HEALTH_UPSTREAM_TIMEOUT_SECONDS = env.float("HEALTH_UPSTREAM_TIMEOUT_SECONDS", default=2.0)
HEALTH_UPSTREAM_CACHE_SECONDS = env.int("HEALTH_UPSTREAM_CACHE_SECONDS", default=10)
HEALTH_WORKER_MAX_AGE_SECONDS = env.int("HEALTH_WORKER_MAX_AGE_SECONDS", default=60)

# --- Logging ----------------------------------------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_context": {"()": "ops.logging.RequestContextFilter"}},
    "formatters": {"json": {"()": "ops.logging.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "ops.logging.LineHandler",
            "formatter": "json",
            "filters": ["request_context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Our own one-line-per-request log replaces Django's.
        "django.server": {"level": "WARNING"},
        "django.request": {"level": "ERROR"},
        "urllib3": {"level": "WARNING"},
        # Celery announces every task received and succeeded; beat's sweeps make that noise.
        "celery": {"level": "WARNING"},
    },
}

# --- Beat schedule: every periodic job, in one place -------------------------------------
CELERY_BEAT_SCHEDULE = {
    "monitor-sweep": {
        "task": "instances.tasks.monitor_sweep",
        "schedule": MONITOR_INTERVAL_SECONDS,
        "options": {"expires": MONITOR_INTERVAL_SECONDS * 2},
    },
    "auto-stop-sweep": {
        "task": "instances.tasks.auto_stop_sweep",
        "schedule": AUTO_STOP_CHECK_INTERVAL_MINUTES * 60,
        "options": {"expires": AUTO_STOP_CHECK_INTERVAL_MINUTES * 60},
    },
    "reconcile": {
        "task": "instances.tasks.reconcile",
        "schedule": RECONCILE_INTERVAL_SECONDS,
        "options": {"expires": RECONCILE_INTERVAL_SECONDS},
    },
    "probe-sweep": {
        "task": "instances.tasks.probe_instances",
        "schedule": MONITOR_INTERVAL_SECONDS,
        "options": {"expires": MONITOR_INTERVAL_SECONDS * 2},
    },
    "deliver-due-webhooks": {
        "task": "instances.tasks.deliver_due_webhooks",
        "schedule": 10.0,
        "options": {"expires": 20.0},
    },
    "migration-sweep": {
        "task": "instances.tasks.migration_sweep",
        "schedule": 30.0,
        "options": {"expires": 60.0},
    },
    # One heartbeat per queue, run by whichever worker consumes it: /health sees each worker.
    **{
        f"worker-heartbeat-{queue}": {
            "task": "ops.tasks.worker_heartbeat",
            "schedule": 15.0,
            "args": (queue,),
            "options": {"expires": 30.0, "queue": queue},
        }
        for queue in WORKER_QUEUES
    },
}
