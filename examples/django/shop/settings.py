"""Settings of the example shop: a Django project that enqueues Customer.io events with
cio_worker, stored only when the order's transaction commits (README.md)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# An example: set DJANGO_SECRET_KEY and DEBUG off in a real deployment.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "cio_worker.django",  # reads CIO_WORKER, installs the on-commit producer, adds the checks
    "orders",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# cio_worker's settings: the environment variables' names (cio_worker's README, "Settings").
# A key set here wins over the environment; anything left out is read from the environment, so
# CIO_WORKER_REDIS_URL, CIO_WORKER_SANDBOX_URL and the CUSTOMERIO_* credentials can stay there,
# where the workers (which never read Django settings) find the same values.
CIO_WORKER = {
    # How long an enqueue may wait for Redis, seconds.
    "CIO_WORKER_REDIS_TIMEOUT_S": "0.5",
    # This shop only sends events: `check --deploy` needs only the Track API's credentials.
    "CIO_WORKER_CHECK_FAMILIES": ["track"],
    # The integration's own keys, at their defaults:
    "CIO_WORKER_ON_COMMIT": True,  # False: store at the call, even inside a transaction
    "CIO_WORKER_DATABASE": "default",  # the database whose transactions enqueues wait for
}
