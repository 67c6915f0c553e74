"""The REST API's plumbing: a route registry, pydantic I/O and the generated OpenAPI 3.1 document.

Every API route is declared once as an ``ApiOperation`` (method, path under ``{svc}api/``,
handler, request and response models); the registry installs them on the router and derives
``{svc}api/openapi.json`` from the same declarations, so the document cannot drift from what
is served. A module adds its routes with a ``register(registry)`` function.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Generic, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from remoteappmanager.domain.errors import InvalidRequest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_Model = TypeVar("_Model", bound=BaseModel)
_Source = TypeVar("_Source")

OPENAPI_VERSION = "3.1.0"
# Requests carry a mapping id and a few short strings: anything larger is not ours.
MAX_BODY_BYTES = 16 * 1024
# A listing with its icons is ~25 kB: this bounds the answer cache at ~25 MB.
DEFAULT_CACHED_ANSWERS = 1024
_SCHEMA_REF = "#/components/schemas/{model}"
_METHODS = ("get", "put", "post", "delete", "patch")


class ApiError(BaseModel):
    """Every error answer of the API."""

    model_config = ConfigDict(extra="forbid")

    type: str
    message: str


@dataclass(frozen=True, slots=True)
class ApiOperation:
    """One route of the API and what the OpenAPI document says about it.

    ``path`` is relative to ``{svc}api/`` with aiohttp/OpenAPI placeholders
    (``v1/containers/{url_id}/``); ``responses`` maps each success status to its body model
    (None: no body); ``errors`` lists the error statuses it may answer (besides 500);
    ``headers`` documents response headers per status (e.g. ``Location`` on 201);
    ``path`` placeholders each need a ``PathParameter`` in ``path_parameters`` (the pattern
    the handler checks); ``query`` lists the required query arguments, each a JSON document
    validated by a model; ``query_fields`` the optional plain ones, each with its JSON
    Schema; ``other_content`` documents further media types of the success answer (CSV).
    """

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    responses: Mapping[int, type[BaseModel] | None]
    request: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    headers: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    public: bool = False
    description: str = ""
    path_parameters: Mapping[str, PathParameter] = field(default_factory=dict)
    query: Mapping[str, QueryParameter] = field(default_factory=dict)
    query_fields: Mapping[str, QueryField] = field(default_factory=dict)
    other_content: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueryField:
    """An optional query argument holding one plain value; ``schema`` is exactly what its
    handler accepts (anything else is a 400)."""

    description: str
    schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PathParameter:
    """A path placeholder: what it names, and the pattern its handler accepts."""

    description: str
    pattern: str
    max_length: int


@dataclass(frozen=True, slots=True)
class QueryParameter:
    """A query argument that carries a JSON document validated by ``model``."""

    description: str
    model: type[BaseModel]
    required: bool = True


class ApiRegistry:
    """The API's routes; ``install`` them, and serve ``document()`` as ``openapi.json``."""

    def __init__(self, *, title: str, version: str, description: str = "") -> None:
        self._title = title
        self._version = version
        self._description = description
        self._operations: dict[tuple[str, str], ApiOperation] = {}

    def add(self, operation: ApiOperation) -> None:
        key = (operation.method.upper(), operation.path)
        if operation.method.lower() not in _METHODS:
            raise ValueError(f"unsupported method {operation.method}")
        if key in self._operations:
            raise ValueError(f"{key[0]} {key[1]} is registered twice")
        if any(o.operation_id == operation.operation_id for o in self._operations.values()):
            raise ValueError(f"operation id {operation.operation_id} is registered twice")
        if set(_path_parameters(operation.path)) != set(operation.path_parameters):
            raise ValueError(f"{key[0]} {key[1]}: every path placeholder needs its pattern")
        self._operations[key] = operation

    @property
    def operations(self) -> tuple[ApiOperation, ...]:
        return tuple(self._operations.values())

    def install(self, router: web.UrlDispatcher, api_prefix: str) -> None:
        """Add every operation under ``api_prefix`` (``{svc}api/``)."""
        for operation in self._operations.values():
            router.add_route(
                operation.method.upper(),
                api_prefix + operation.path,
                operation.handler,
                name=operation.operation_id,
            )

    def document(self, api_prefix: str) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the registered operations, served at ``api_prefix``."""
        _, definitions = models_json_schema(
            _models_of(self._operations.values()), ref_template=_SCHEMA_REF
        )
        schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
        paths: dict[str, dict[str, Any]] = {}
        for operation in sorted(self._operations.values(), key=lambda o: (o.path, o.method)):
            item = paths.setdefault(api_prefix + operation.path, {})
            item[operation.method.lower()] = self._operation_object(operation)
        return {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": self._title,
                "version": self._version,
                "description": self._description,
            },
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    "hubToken": {
                        "type": "apiKey",
                        "in": "header",
                        "name": "Authorization",
                        "description": "`token <JupyterHub API token>`",
                    },
                    "sessionCookie": {
                        "type": "apiKey",
                        "in": "cookie",
                        "name": "remoteapp-session",
                        "description": "Browser session; changes also need the `_xsrf` "
                        "cookie's value in the `X-XSRFToken` header.",
                    },
                },
            },
        }

    def _operation_object(self, operation: ApiOperation) -> dict[str, Any]:
        responses: dict[str, Any] = {}
        for status, model in sorted(operation.responses.items()):
            response: dict[str, Any] = {"description": HTTPStatus(status).phrase}
            if model is not None:
                response["content"] = {"application/json": {"schema": _ref(model)}}
                for media_type, schema in operation.other_content.items():
                    response["content"][media_type] = {"schema": dict(schema)}
            headers = operation.headers.get(status)
            if headers:
                response["headers"] = {
                    name: {"description": text, "schema": {"type": "string"}}
                    for name, text in headers.items()
                }
            responses[str(status)] = response
        for status in sorted({*operation.errors, 500}):
            responses[str(status)] = {
                "description": HTTPStatus(status).phrase,
                "content": {"application/json": {"schema": _ref(ApiError)}},
            }
            error_headers = operation.headers.get(status)
            if error_headers:
                responses[str(status)]["headers"] = {
                    name: {"description": text, "schema": {"type": "string"}}
                    for name, text in error_headers.items()
                }
        result: dict[str, Any] = {
            "operationId": operation.operation_id,
            "summary": operation.summary,
            "tags": [operation.tag],
            "responses": responses,
        }
        if operation.description:
            result["description"] = operation.description
        parameters = (
            [
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "description": operation.path_parameters[name].description,
                    "schema": {
                        "type": "string",
                        "pattern": operation.path_parameters[name].pattern,
                        "maxLength": operation.path_parameters[name].max_length,
                    },
                }
                for name in _path_parameters(operation.path)
            ]
            + [
                {
                    "name": name,
                    "in": "query",
                    "required": parameter.required,
                    "description": parameter.description,
                    "content": {"application/json": {"schema": _ref(parameter.model)}},
                }
                for name, parameter in operation.query.items()
            ]
            + [
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": query_field.description,
                    "schema": dict(query_field.schema),
                }
                for name, query_field in operation.query_fields.items()
            ]
        )
        if parameters:
            result["parameters"] = parameters
        if operation.request is not None:
            result["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(operation.request)}},
            }
        result["security"] = [] if operation.public else [{"hubToken": []}, {"sessionCookie": []}]
        return result


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _SCHEMA_REF.format(model=model.__name__)}


def _models_of(
    operations: Iterable[ApiOperation],
) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    # Requests are described as they are validated, answers as they are serialised.
    found: dict[str, tuple[type[BaseModel], JsonSchemaMode]] = {
        ApiError.__name__: (ApiError, "serialization")
    }
    for operation in operations:
        used: list[tuple[type[BaseModel] | None, JsonSchemaMode]] = [
            (operation.request, "validation"),
            *((parameter.model, "validation") for parameter in operation.query.values()),
            *((model, "serialization") for model in operation.responses.values()),
        ]
        for model, mode in used:
            if model is None:
                continue
            known = found.setdefault(model.__name__, (model, mode))
            if known != (model, mode):
                raise ValueError(f"two API models (or uses of one) are named {model.__name__}")
    return list(found.values())


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


# ------------------------------------------------------------------------------ request / response
async def parse_body(request: web.Request, model: type[_Model]) -> _Model:
    """The request's JSON body as ``model``; ``InvalidRequest`` (400) for anything else."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise InvalidRequest(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise InvalidRequest(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    if not body.strip():
        raise InvalidRequest("the request needs a JSON body")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest(_describe(exc)) from None


def parse_query_json(
    request: web.Request, name: str, model: type[_Model], *, example: str = ""
) -> _Model:
    """Query argument ``name``, a JSON document, as ``model``; ``InvalidRequest`` (400) if it
    is missing or anything else. ``example`` shows callers what is expected."""
    shown = f" (e.g. ?{name}={example})" if example else ""
    raw = request.query.get(name)
    if raw is None or not raw.strip():
        raise InvalidRequest(f"the {name} query argument is required{shown}")
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequest(f"the {name} query argument is longer than {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        described = _describe(exc, f"the {name} query argument", name)
        raise InvalidRequest(described + shown) from None


def _describe(exc: ValidationError, what: str = "the request body", top: str = "body") -> str:
    # The client's input is not echoed back: only where it is wrong and why.
    first = exc.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return f"{what} is not valid JSON"
    where = ".".join(str(part) for part in first["loc"]) or top
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    """``model`` serialised as the API's JSON answer."""
    return web.Response(
        body=model.model_dump_json().encode(), status=status, content_type="application/json"
    )


@dataclass(frozen=True, slots=True)
class _CachedAnswer(Generic[_Source]):
    source: _Source
    body: bytes
    etag: str


class AnswerCache(Generic[_Source]):
    """Serialised JSON answers by key (a user), each reused while what it was built from is
    equal to what the service gives now.

    Comparing the source (frozen domain values, mostly the very same cached objects) costs a
    fraction of building and serialising the models again, and needs no invalidation hooks:
    whatever changes what an answer shows (a start, a stop, a crash seen in the engine's
    listing, a grant, an image's labels) changes its source. The least recently used answers
    are dropped beyond ``max_entries``.
    """

    def __init__(self, max_entries: int = DEFAULT_CACHED_ANSWERS) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._answers: OrderedDict[str, _CachedAnswer[_Source]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def response(
        self,
        request: web.Request,
        key: str,
        source: _Source,
        build: Callable[[_Source], BaseModel],
    ) -> web.Response:
        """The answer for ``source`` (built only when it changed), or 304 if the client has it."""
        answer = self._answers.get(key)
        if answer is not None and answer.source == source:
            self._answers.move_to_end(key)
        else:
            body = build(source).model_dump_json().encode()
            etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
            answer = _CachedAnswer(source, body, etag)
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self._max_entries:
                self._answers.popitem(last=False)
        headers = {"ETag": answer.etag}
        if _matches(request.headers.get("If-None-Match"), answer.etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=answer.body, content_type="application/json", headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    # Weak comparison (RFC 9110 13.1.2): a W/ prefix still names the same answer.
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in if_none_match.split(","))


def openapi_handler(document: Mapping[str, Any]) -> Handler:
    """A handler serving ``document`` (rendered once)."""
    body = json.dumps(document, separators=(",", ":")).encode()

    async def openapi(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    return openapi
