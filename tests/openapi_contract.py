"""Customer.io's published OpenAPI specs, turned into request validators for contract tests.

The specs are copies kept in the repository, in `tests/specs/` (its README says where each one is
published). If one is missing the calling test FAILS: a contract test that silently skips checks
nothing. For the App API, `tests/specs` holds the published request schemas of the operations
cio_worker sends (sends, broadcast triggers, people search), wrapped unchanged in a minimal
OpenAPI 3.1 document (`customerio-app-api.requests.openapi.json`), so one validator reads every API.

All the specs are OpenAPI 3.1, whose schemas are JSON Schema 2020-12; `$ref`s are resolved inside
the document through a `referencing` registry. OpenAPI 3.0's `nullable` is translated too, should a
spec ever fall back to 3.0. On top of plain JSON Schema this module enforces two OpenAPI rules:

- `readOnly` properties must not be sent in a request (OpenAPI 3.1 §4.8.24.1 / JSON Schema
  validation §9.4);
- the few `format`s the specs use for our fields are checked: `date-time` (RFC 3339), `ulid`,
  `unix timestamp`, `email`, `json` (a string holding a JSON document).

Where a published schema is wrong or unsatisfiable, `_PATCHES` adjusts it, each patch with its
reason and evidence, and each checking first that the flaw is still there: once Customer.io fixes
the spec, the patch fails loudly and should be deleted.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

#: The in-repo copies of Customer.io's published documents (tests/specs/README.md).
SPECS_DIR = Path(__file__).parent / "specs"
TRACK_SPEC = "customerio-track-api.openapi.json"
PIPELINES_SPEC = "customerio-pipelines-api.openapi.json"
APP_SPEC = "customerio-app-api.requests.openapi.json"
WEBHOOKS_SPEC = "customerio-reporting-webhooks.openapi.json"

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


class SpecError(AssertionError):
    """The spec itself is missing or no longer looks as this module expects."""


# -- formats -------------------------------------------------------------------------------------

_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_RFC3339.match(value))


@_FORMATS.checks("ulid")
@_FORMATS.checks("ULID")
def _is_ulid(value: object) -> bool:
    return not isinstance(value, str) or bool(_ULID.match(value))


@_FORMATS.checks("unix timestamp")
@_FORMATS.checks("Unix timestamp")
def _is_unix_seconds(value: object) -> bool:
    # Ten digits at most: milliseconds would be a silent 50,000-year error.
    return not isinstance(value, int) or 0 <= value <= 9_999_999_999


@_FORMATS.checks("json")
def _is_json(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


@_FORMATS.checks("email")
def _is_email(value: object) -> bool:
    if not isinstance(value, str):
        return True
    local, at, domain = value.rpartition("@")
    return bool(at and local and domain and " " not in value)


# -- readOnly in requests ------------------------------------------------------------------------


def _read_only(
    validator: Any, read_only: bool, instance: object, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    # A keyword validator runs only on a value that is present, so reaching here with
    # readOnly: true means a read-only property was sent.
    if read_only:
        yield ValidationError("is read-only: it must not be sent in a request")


RequestValidator = validators.extend(Draft202012Validator, {"readOnly": _read_only})


# -- OpenAPI 3.0 -> JSON Schema ------------------------------------------------------------------


def _from_openapi30(node: Any) -> Any:
    """`nullable: true` (3.0 only) as JSON Schema's `type: [..., "null"]`."""
    if isinstance(node, list):
        return [_from_openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _from_openapi30(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


# -- the spec ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecOperation:
    """One operation of a spec, matched from a concrete request."""

    spec: OpenApiSpec
    method: str
    template: str  # the spec's path key, e.g. /api/v1/customers/{identifier}
    pointer: str  # JSON pointer to the operation object

    @property
    def node(self) -> dict[str, Any]:
        return self.spec.resolve(self.pointer)

    @property
    def body_schema_pointer(self) -> str | None:
        """Pointer to the application/json request schema, or None if the operation has no body."""
        body = self.node.get("requestBody")
        if body is None:
            return None
        pointer = f"{self.pointer}/requestBody"
        while "$ref" in body:
            pointer = body["$ref"].removeprefix("#")
            body = self.spec.resolve(pointer)
        if "application/json" not in body.get("content", {}):
            raise SpecError(f"{self}: request body is not application/json")
        return f"{pointer}/content/application~1json/schema"

    def body_errors(self, body: object) -> list[str]:
        """Every way `body` breaks the operation's request schema (empty: it conforms)."""
        pointer = self.body_schema_pointer
        if pointer is None:
            return [] if body is None else [f"{self} takes no request body, got {body!r}"]
        return self.spec.errors_against(pointer, body)

    def header_errors(self, headers: Mapping[str, str]) -> list[str]:
        """Header parameters: required ones present, each value valid against its schema."""
        sent = {name.lower(): value for name, value in headers.items()}
        errors: list[str] = []
        for pointer, param in self.spec.parameters(self):
            if param.get("in") != "header":
                continue
            name = param["name"].lower()
            if name not in sent:
                if param.get("required"):
                    errors.append(f"header {param['name']} is required")
                continue
            errors += self.spec.errors_against(f"{pointer}/schema", sent[name])
        return errors

    def __str__(self) -> str:
        return f"{self.spec.name}: {self.method.upper()} {self.template}"


class OpenApiSpec:
    """A parsed, patched spec with a registry for its `$ref`s."""

    def __init__(self, name: str, document: dict[str, Any]) -> None:
        self.name = name
        if str(document.get("openapi", "")).startswith("3.0"):
            document = _from_openapi30(document)
        self.document = _patched(name, document)
        self.uri = f"urn:openapi:{name}"
        resource = Resource.from_contents(self.document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(self.uri, resource)

    def resolve(self, pointer: str) -> Any:
        node: Any = self.document
        for part in pointer.lstrip("/").split("/") if pointer.strip("/") else []:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def errors_against(self, pointer: str, instance: object) -> list[str]:
        """Messages of every validation error of `instance` against the schema at `pointer`."""
        validator = RequestValidator(
            {"$ref": f"{self.uri}#{pointer}"}, registry=self.registry, format_checker=_FORMATS
        )
        return [_describe(error) for error in validator.iter_errors(instance)]

    def _server_prefix(self, path_pointer: str, method: str) -> str:
        path_item = self.resolve(path_pointer)
        servers = (
            path_item[method].get("servers") or path_item.get("servers") or self.document["servers"]
        )
        prefixes = {urlsplit(server["url"]).path.rstrip("/") for server in servers}
        if len(prefixes) != 1:
            raise SpecError(f"{self.name}: servers of {path_pointer} disagree on a base path")
        return prefixes.pop()

    def operation(self, method: str, path: str) -> SpecOperation:
        """The operation a request `method path` (path as sent, query ignored) is an instance of.

        Literal segments beat templated ones, as OpenAPI requires; an ambiguity is an error.
        """
        method = method.lower()
        path = path.split("?")[0]
        found: list[tuple[int, str, str]] = []
        for template, item in self.document["paths"].items():
            if method not in item:
                continue
            pointer = "/paths/" + template.replace("~", "~0").replace("/", "~1")
            full = self._server_prefix(pointer, method) + template
            pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(full)) + "$"
            if re.match(pattern, path):
                found.append((template.count("{"), template, f"{pointer}/{method}"))
        if not found:
            raise SpecError(f"{self.name}: no operation matches {method.upper()} {path}")
        found.sort()
        if len(found) > 1 and found[0][0] == found[1][0]:
            raise SpecError(
                f"{self.name}: {method.upper()} {path} matches {found[0][1]} and {found[1][1]}"
            )
        _, template, pointer = found[0]
        return SpecOperation(self, method, template, pointer)

    def parameters(self, op: SpecOperation) -> Iterator[tuple[str, dict[str, Any]]]:
        """(pointer, parameter) of path-level then operation-level parameters, `$ref`s followed."""
        path_pointer = op.pointer.rsplit("/", 1)[0]
        for owner in (path_pointer, op.pointer):
            for index, param in enumerate(self.resolve(owner).get("parameters", [])):
                pointer = f"{owner}/parameters/{index}"
                while "$ref" in param:
                    pointer = param["$ref"].removeprefix("#")
                    param = self.resolve(pointer)
                yield pointer, param

    def operations(self) -> Iterator[tuple[str, str]]:
        """(METHOD, template) of every operation in the spec."""
        for template, item in self.document["paths"].items():
            for method in _METHODS:
                if method in item:
                    yield method.upper(), template


def _describe(error: ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "(body)"
    text = f"{where}: {error.message}"
    if error.context:  # oneOf/anyOf: say why each branch failed
        reasons = sorted({_describe(sub) for sub in error.context})
        text += " [" + "; ".join(reasons) + "]"
    return text


# -- patches for flaws in the published specs ----------------------------------------------------


def _p(*parts: str) -> str:
    return "/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


_JSON_SCHEMA = ("requestBody", "content", "application/json", "schema")


def _patch_merge_customers(document: dict[str, Any]) -> None:
    """Track v1 merge_customers: make the `primary`/`secondary` oneOf branches exclusive.

    Each branch (`id`, `email`, `cio_id`) is `{type: object, maxProperties: 1, properties: {<key>}}`
    with no `required`, so any one-key object, `{"id": "42"}` included, matches all three branches
    and `oneOf` can never pass: the spec rejects its own example. The evident intent is "exactly one
    of id/email/cio_id"; each branch gets `required: [<its key>]`. maxProperties stays.
    """
    schema = _resolve(document, _p("paths", "/api/v1/merge_customers", "post", *_JSON_SCHEMA))
    for side in ("primary", "secondary"):
        for branch in schema["properties"][side]["oneOf"]:
            (key,) = branch["properties"]
            _expect("required" not in branch, f"merge_customers {side}.{key} now has `required`")
            branch["required"] = [key]


def _patch_pipelines_track(document: dict[str, Any]) -> None:
    """Pipelines /track: custom events exclude the semantic event names.

    A custom event accepts any `event` name, so a semantic event (`User Deleted`...) matches both
    "Custom event" and its own branch and fails the top-level `oneOf`. The spec clearly means the
    semantic branches to own their names: the custom branches get
    `not: {event in <the semantic names listed by the spec's own branches>}`.
    """
    schemas = document["components"]["schemas"]
    branches = schemas["track"]["oneOf"]
    (custom,) = [branch for branch in branches if branch.get("title") == "Custom event"]
    semantic: list[str] = []
    for branch in branches:
        if "$ref" in branch:
            semantic += _resolve(document, branch["$ref"][1:])["properties"]["event"]["enum"]
    _expect(bool(semantic), "Pipelines track lists no semantic events any more")
    _expect("not" not in custom, "Pipelines custom events now exclude names themselves")
    custom["not"] = {"required": ["event"], "properties": {"event": {"enum": semantic}}}


def _patch_pipelines_type(document: dict[str, Any]) -> None:
    """Pipelines `type`: required by the call schemas, yet marked `readOnly` in two places.

    `/track`'s custom events and every item of `/batch` list `type` in `required` (enum: the
    call's own type), while `common_fields.type` (mixed into the single calls) and `alias.type`
    say `readOnly`, "set by Customer.io based on the endpoint". A request cannot satisfy both. We
    follow `required`: every call carries `type` = its endpoint's own type, exactly what
    Customer.io's own Pipelines libraries send (`cdp-analytics-python/analytics/client.py` puts
    `type` in every message). Sending the value the server would set modifies nothing, which is
    all `readOnly` forbids (JSON Schema validation §9.4). So `readOnly` is dropped from those two
    `type`s only; every other read-only property (receivedAt, version...) stays enforced, and the
    `enum`s still refuse a `type` that contradicts the endpoint.
    """
    schemas = document["components"]["schemas"]
    for owner in (schemas["common_fields"], schemas["alias"]):
        prop = owner["properties"]["type"]
        _expect(prop.get("readOnly") is True, "Pipelines `type` is no longer readOnly")
        del prop["readOnly"]
    custom = next(b for b in schemas["track"]["oneOf"] if b.get("title") == "Custom event")
    for user_kind in custom["oneOf"]:
        _expect("type" in user_kind["allOf"][0]["required"], "Pipelines track: type not required")


def _patch_pipelines_batch_alias(document: dict[str, Any]) -> None:
    """Pipelines /batch: the published item list omits `alias`; Customer.io accepts it.

    The batch item `anyOf` lists identify, track, page, screen and group, not alias. Yet both of
    Customer.io's own server-side Pipelines libraries send *every* call, alias included, inside
    `/v1/batch`: customerio/cdp-analytics-python (`analytics/client.py` `alias()` builds
    `{"type": "alias", "userId", "previousId", ...}`, `analytics/request.py` posts it as
    `{"batch": [msg]}` to `/v1/batch`) and customerio/cdp-analytics-js (its node publisher posts
    every queued event, alias included, to `/v1/batch`). So an alias item is read as the single
    `/alias` call's schema plus its `type`.
    """
    items = document["components"]["schemas"]["batch"]["properties"]["batch"]["items"]
    titles = [branch.get("title") for branch in items["anyOf"]]
    _expect("Alias" not in titles, "the Pipelines batch schema now lists alias")
    items["anyOf"].append(
        {
            "title": "Alias",
            "allOf": [
                {"$ref": "#/components/schemas/alias"},
                {"type": "object", "required": ["type"]},
            ],
        }
    )


def _patch_pipelines_batch_anonymous(document: dict[str, Any]) -> None:
    """Pipelines /batch: the "Anonymous User" branches forget to require `anonymousId`.

    Inside `batch.items`, track/page/screen/group each offer `oneOf` "Known User" (requires
    `userId`) and "Anonymous User", whose `required` lacks `anonymousId` (the single calls'
    "Anonymous User" branches do require it). So every known-user item matches both branches
    and `oneOf` refuses it: the schema would refuse any batch of identified events. The
    anonymous branches get `anonymousId` in `required`, as in the single calls.
    """
    items = document["components"]["schemas"]["batch"]["properties"]["batch"]["items"]
    patched = 0
    for branch in items["anyOf"]:
        for alternative in branch.get("oneOf", ()):
            if alternative.get("title") != "Anonymous User":
                continue
            own = alternative["allOf"][0]
            if "anonymousId" in own["properties"] and "anonymousId" not in own["required"]:
                own["required"] = [*own["required"], "anonymousId"]
                patched += 1
    _expect(patched > 0, "Pipelines batch anonymous branches now require anonymousId")


def _patch_app_one_of(document: dict[str, Any]) -> None:
    """App API: alternatives under `oneOf` overlap, so they are read as `anyOf`.

    E.g. a broadcast trigger's "Default audience" branch accepts any object, so a body with `ids`
    matches it and "IDs" both; an email with a template and subject matches "With template" and
    "Without template". `oneOf` would refuse the spec's own examples.
    """
    count = 0

    def walk(node: Any) -> None:
        nonlocal count
        if isinstance(node, dict):
            if "oneOf" in node:
                node["anyOf"] = node.pop("oneOf")
                count += 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document["paths"])
    _expect(count > 0, "the App API request schemas no longer use oneOf")


def _patch_app_push_to(document: dict[str, Any]) -> None:
    """App /v1/send/push `to`: the enum's `$device_token` is a placeholder, not a value.

    The description reads "One of `all`, `last_used`, or a custom device token"; the enum lists
    `all`, `last_used` and the literal `$device_token`. It is read as: `all`, `last_used` or any
    non-empty token. (`to` is also `required` though it "defaults to `all`": we always send it.)
    """
    schema = _resolve(document, _p("paths", "/v1/send/push", "post", *_JSON_SCHEMA))
    (branch,) = [part for part in schema["allOf"] if "to" in part.get("properties", {})]
    to = branch["properties"]["to"]
    _expect("$device_token" in to.get("enum", ()), "push `to` enum changed")
    del to["enum"]
    to["minLength"] = 1


def _resolve(document: dict[str, Any], pointer: str) -> Any:
    node: Any = document
    for part in pointer.lstrip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _expect(condition: bool, flaw_gone: str) -> None:
    if not condition:
        raise SpecError(f"spec changed ({flaw_gone}): re-check the patch in openapi_contract.py")


def _patch_app_default_audience(document: dict[str, Any]) -> None:
    """App broadcast triggers: "Default audience" means *no* audience key.

    Its description is "the default set of recipients defined in the UI", but the branch accepts
    any object, so (read as `anyOf`) it would let any `ids`, `emails`... through unchecked. It gets
    `not` any of the audience keys the other branches require, making the branches exclusive.
    """
    schema = _resolve(
        document, _p("paths", "/v1/campaigns/{broadcast_id}/triggers", "post", *_JSON_SCHEMA)
    )
    branches = schema.get("anyOf") or schema["oneOf"]
    (default,) = [b for b in branches if b.get("title") == "Default audience"]
    _expect("not" not in default, "broadcast Default audience now excludes audience keys")
    keys = [b["allOf"][0]["required"][0] for b in branches if b is not default]
    _expect(
        sorted(keys) == sorted(["recipients", "emails", "ids", "per_user_data", "data_file_url"]),
        "broadcast audience branches changed",
    )
    default["not"] = {"anyOf": [{"required": [key]} for key in keys]}


_PATCHES: dict[str, tuple[Callable[[dict[str, Any]], None], ...]] = {
    TRACK_SPEC: (_patch_merge_customers,),
    PIPELINES_SPEC: (
        _patch_pipelines_track,
        _patch_pipelines_type,
        _patch_pipelines_batch_anonymous,
        _patch_pipelines_batch_alias,
    ),
    APP_SPEC: (_patch_app_one_of, _patch_app_push_to, _patch_app_default_audience),
}


def _patched(name: str, document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    for patch in _PATCHES.get(name, ()):
        patch(document)
    return document


# -- loading -------------------------------------------------------------------------------------


def load_document(name: str) -> dict[str, Any]:
    """The raw spec `name`; FAILS the calling test (never skips) if the spec dir is missing."""
    path = SPECS_DIR / name
    if not SPECS_DIR.is_dir():
        pytest.fail(
            f"Customer.io OpenAPI specs not found: {SPECS_DIR} does not exist. The contract tests "
            "read the copies kept in the repository (tests/specs, see its README).",
            pytrace=False,
        )
    if not path.is_file():
        pytest.fail(f"Customer.io OpenAPI spec missing: {path}", pytrace=False)
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


@functools.cache
def load_spec(name: str) -> OpenApiSpec:
    return OpenApiSpec(name, load_document(name))


def track_spec() -> OpenApiSpec:
    return load_spec(TRACK_SPEC)


def pipelines_spec() -> OpenApiSpec:
    return load_spec(PIPELINES_SPEC)


def app_spec() -> OpenApiSpec:
    """The App API's published request schemas for sends, broadcast triggers, people search."""
    return load_spec(APP_SPEC)


def spec_for(api: str) -> OpenApiSpec:
    """The spec of one of cio_worker's APIs: `track`, `pipelines` or `app`."""
    return {"track": track_spec, "pipelines": pipelines_spec, "app": app_spec}[api]()


def request_errors(
    api: str, method: str, path: str, body: object, headers: Mapping[str, str] | None = None
) -> list[str]:
    """Every way one request breaks its API's published contract (empty: it conforms)."""
    spec_op = spec_for(api).operation(method, path)
    problems = spec_op.body_errors(body) + spec_op.header_errors(headers or {})
    return [f"{spec_op}: {problem}" for problem in problems]


def path_segment(value: str) -> str:
    """How the official clients encode an identifier in a path (PY `quote(x, safe="")`)."""
    return quote(value, safe="")
