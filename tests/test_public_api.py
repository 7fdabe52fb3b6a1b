"""Tests for the package surface: `__all__`, typing marker, the documented names, lazy Celery."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types
from pathlib import Path

import pytest

import cio_worker

# docs/design.md's table of public enqueue functions, copied by hand.
DOCUMENTED_ENQUEUE = [
    "enqueue_identify",
    "enqueue_track",
    "enqueue_track_anonymous",
    "enqueue_page",
    "enqueue_delete",
    "enqueue_merge",
    "enqueue_suppress",
    "enqueue_unsuppress",
    "enqueue_add_device",
    "enqueue_remove_device",
    "enqueue_send_email",
    "enqueue_send_push",
    "enqueue_send_sms",
    "enqueue_broadcast",
]


def public_names(module: types.ModuleType) -> set[str]:
    """Names a user sees in the module: not private, not a submodule, not a __future__ flag."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and type(value).__module__ != "__future__"
    }


class TestAll:
    def test_sorted(self) -> None:
        """`__all__` is in sorted order."""
        assert cio_worker.__all__ == sorted(cio_worker.__all__)

    def test_no_duplicates(self) -> None:
        """`__all__` names each export once."""
        assert len(cio_worker.__all__) == len(set(cio_worker.__all__))

    def test_every_name_exists(self) -> None:
        """Every name in `__all__` is an attribute of the package."""
        missing = [name for name in cio_worker.__all__ if not hasattr(cio_worker, name)]
        assert missing == []

    def test_every_package_object_exported(self) -> None:
        """Every public class and function defined inside cio_worker is in `__all__`."""
        ours = {
            name
            for name in public_names(cio_worker)
            if getattr(getattr(cio_worker, name), "__module__", "").startswith("cio_worker")
        }
        assert ours, "the package should export something"
        assert ours - set(cio_worker.__all__) == set()

    def test_complete(self) -> None:
        """Every public name in the package namespace is listed in `__all__`."""
        assert public_names(cio_worker) - set(cio_worker.__all__) == set()

    def test_version_exported(self) -> None:
        """`__version__` is exported and is a non-empty string."""
        assert "__version__" in cio_worker.__all__
        assert isinstance(cio_worker.__version__, str) and cio_worker.__version__


class TestPackaging:
    def test_py_typed_ships(self) -> None:
        """The PEP 561 marker `py.typed` sits in the package directory."""
        assert (Path(cio_worker.__file__).parent / "py.typed").is_file()


class TestDocumentedNames:
    @pytest.mark.parametrize("name", DOCUMENTED_ENQUEUE)
    def test_enqueue_function_exported(self, name: str) -> None:
        """Each enqueue function from docs/design.md is exported and callable."""
        assert name in cio_worker.__all__
        assert callable(getattr(cio_worker, name))

    @pytest.mark.parametrize("name", DOCUMENTED_ENQUEUE)
    def test_producer_has_method(self, name: str) -> None:
        """`Producer` has a method of the same name for each enqueue function."""
        assert inspect.isfunction(getattr(cio_worker.Producer, name))

    def test_validation_error_is_value_error(self) -> None:
        """`cio_worker.ValidationError` subclasses ValueError (and the package base error)."""
        assert issubclass(cio_worker.ValidationError, ValueError)
        assert issubclass(cio_worker.ValidationError, cio_worker.CioWorkerError)

    @pytest.mark.parametrize(
        "name",
        [
            "ConfigError",
            "EnqueueError",
            "DeliveryError",
            "RetryableError",
            "PermanentError",
            "RateLimitedError",
            "TransportError",
            "ServerError",
            "AuthError",
            "RejectedError",
        ],
    )
    def test_errors_share_base(self, name: str) -> None:
        """Every exported error derives from CioWorkerError, so callers can catch them all."""
        assert issubclass(getattr(cio_worker, name), cio_worker.CioWorkerError)

    def test_settings_and_configure_exported(self) -> None:
        """Settings, Producer and configure are part of the public API."""
        for name in ("Settings", "Producer", "configure"):
            assert name in cio_worker.__all__


class TestLazyCelery:
    def run_python(self, code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )

    def test_import_does_not_import_celery(self) -> None:
        """Importing cio_worker (as a web process does) leaves Celery unimported."""
        result = self.run_python("import cio_worker, sys; assert 'celery' not in sys.modules")
        assert result.returncode == 0, result.stderr

    def test_enqueue_path_does_not_import_celery(self) -> None:
        """Building a Producer and validating a job does not import Celery either."""
        code = (
            "import sys, cio_worker\n"
            "import fakeredis\n"
            "p = cio_worker.Producer(cio_worker.Settings(), redis_client=fakeredis.FakeRedis())\n"
            "try:\n"
            "    p.enqueue_track('', 'e')\n"
            "except cio_worker.ValidationError:\n"
            "    pass\n"
            "assert 'celery' not in sys.modules, 'celery imported'\n"
        )
        result = self.run_python(code)
        assert result.returncode == 0, result.stderr

    def test_app_is_a_lazy_celery_app(self) -> None:
        """`cio_worker.app` is built on first access, and is a Celery app named cio_worker."""
        code = (
            "import sys, cio_worker\n"
            "assert 'celery' not in sys.modules\n"
            "app = cio_worker.app\n"
            "from celery import Celery\n"
            "assert isinstance(app, Celery), type(app)\n"
            "assert app.main == 'cio_worker', app.main\n"
            "assert cio_worker.app is app\n"
        )
        result = self.run_python(code)
        assert result.returncode == 0, result.stderr

    def test_unknown_attribute_raises(self) -> None:
        """Any other missing attribute still raises AttributeError."""
        with pytest.raises(AttributeError, match="no_such_thing"):
            cio_worker.no_such_thing  # noqa: B018 - the lookup itself is the test
