"""Rebuild `customerio-app-api.requests.openapi.json` from the `arcade-customerio-api` wheel.

Customer.io publishes its App API reference at https://docs.customer.io/integrations/api/app/;
the request schemas of that reference ship inside the `arcade-customerio-api` package
(`arcade_customerio_api/wrapper_tools/<Tool>.json`, field `http_endpoint.request_body_spec`,
the operation's OpenAPI `requestBody` as a JSON string). Only the operations cio_worker sends are
kept; their schemas are copied verbatim (the quirks are handled in tests/openapi_contract.py).

    pip download --no-deps arcade-customerio-api==0.2.1 -d /tmp/arcade
    python tests/specs/extract_app_api.py /tmp/arcade/arcade_customerio_api-0.2.1-py3-none-any.whl

The package is only read here: it is not, and must not become, a dependency of cio_worker.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

#: The tools whose request bodies cio_worker sends: sends, broadcast triggers, people search.
TOOLS = (
    "SendTransactionalEmail",
    "SendTransactionalPushNotification",
    "SendTransactionalSms",
    "TriggerBroadcastMessage",
    "FilterPeopleInWorkspace",
)
OUT = Path(__file__).with_name("customerio-app-api.requests.openapi.json")


def extract(wheel: Path) -> dict[str, object]:
    """A minimal OpenAPI 3.1 document: one operation per tool, its requestBody as published."""
    paths: dict[str, dict[str, object]] = {}
    with zipfile.ZipFile(wheel) as archive:
        for tool in TOOLS:
            document = json.loads(archive.read(f"arcade_customerio_api/wrapper_tools/{tool}.json"))
            endpoint = document["http_endpoint"]
            path = urlsplit(endpoint["url"]).path
            paths.setdefault(path, {})[endpoint["http_method"].lower()] = {
                "operationId": tool,
                "requestBody": json.loads(endpoint["request_body_spec"]),
            }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Customer.io App API: request schemas of the operations cio_worker sends",
            "version": wheel.name,
            "x-source": {
                "reference": "https://docs.customer.io/integrations/api/app/",
                "package": "https://pypi.org/project/arcade-customerio-api/",
                "files": "arcade_customerio_api/wrapper_tools/<operationId>.json, "
                "http_endpoint.request_body_spec",
            },
        },
        "servers": [{"url": "https://api.customer.io"}, {"url": "https://api-eu.customer.io"}],
        "paths": paths,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(extract(Path(sys.argv[1])), indent=1) + "\n", encoding="utf-8")
