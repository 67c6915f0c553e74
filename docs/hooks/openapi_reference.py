"""MkDocs hook: the REST API reference, generated from the service's OpenAPI document.

``build_openapi_document()`` builds the document the service serves at
``{svc}api/openapi.json`` without serving anything: the web application is assembled by the
composition root as in production, with in-memory stand-ins for the hub, the Docker engine,
the proxy and the disk (nothing is opened or contacted), and its route registry is asked for
the document. A page holding the line ``<!-- openapi-reference -->`` gets, in its place, every
path and method with its parameters, request body and responses, then every schema.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- openapi-reference -->"
ERRORS_MARKER = "<!-- error-reference -->"
# What the service's own prefix is shown as in the reference.
PREFIX_SHOWN = "{svc}"
_BUILD_PREFIX = "/services/remoteapp/"
# Variables the settings would read: the build must not depend on the shell it runs in.
_SETTINGS_VARIABLE_PREFIXES = ("REMOTEAPP_", "JUPYTERHUB_", "CONFIGPROXY_", "DOCKER_")
_METHOD_ORDER = ("get", "post", "put", "patch", "delete")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **_: Any) -> str:
    if ERRORS_MARKER in markdown:
        try:
            markdown = markdown.replace(ERRORS_MARKER, render_errors())
        except Exception as exc:
            raise PluginError(f"cannot generate the error reference: {exc!r}") from exc
    if MARKER in markdown:
        try:
            reference = render_reference(build_openapi_document())
        except Exception as exc:  # a broken API module must fail the build, legibly
            raise PluginError(f"cannot generate the REST API reference: {exc!r}") from exc
        markdown = markdown.replace(MARKER, reference)
    return markdown


def render_errors() -> str:
    """The error types of the API: ``type``, HTTP status and meaning, from the code."""
    from remoteappmanager.domain.errors import RemoteAppError
    from remoteappmanager.web.errors import ERROR_STATUS, WIRE_NAME

    lines = ["| `type` | Status | Meaning |", "|---|---|---|"]
    for error, status in sorted(ERROR_STATUS.items(), key=lambda item: item[1]):
        if error is RemoteAppError:
            continue
        meaning = (error.__doc__ or "").strip().splitlines()[0] if error.__doc__ else ""
        lines.append(f"| `{WIRE_NAME[error]}` | {status} | {_cell(meaning)} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the document
def build_openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the REST API, for the default prefix (``/services/remoteapp/``)."""
    with _without_settings_variables():
        from remoteappmanager import bootstrap
        from remoteappmanager.adapters.memory_identity import InMemoryIdentityProvider
        from remoteappmanager.adapters.memory_probe import InMemoryReadinessProbe
        from remoteappmanager.adapters.memory_runtime import InMemoryRouteTable, InMemoryRuntime
        from remoteappmanager.adapters.memory_workspaces import (
            InMemoryHostPaths,
            InMemoryWorkspaces,
        )
        from remoteappmanager.settings import Settings
        from remoteappmanager.web.app import create_app
        from remoteappmanager.web.keys import API_REGISTRY, URLS

        # Placeholders: the service refuses to be built without tokens, and none is used.
        settings = Settings(
            database_url="sqlite+aiosqlite:///:memory:",
            configproxy_auth_token="unused",  # noqa: S106
            jupyterhub_api_token="unused",  # noqa: S106
            jupyterhub_service_prefix=_BUILD_PREFIX,
        )
        deps = bootstrap.build(
            settings,
            identity=InMemoryIdentityProvider(),
            runtime=InMemoryRuntime(),
            routes=InMemoryRouteTable(),
            probe=InMemoryReadinessProbe(),
            workspaces=InMemoryWorkspaces(),
            host_paths=InMemoryHostPaths(),
        )
        app = create_app(deps)
        document: dict[str, Any] = app[API_REGISTRY].document(app[URLS].api)
        return document


@contextlib.contextmanager
def _without_settings_variables() -> Iterator[None]:
    saved = {
        name: value
        for name, value in os.environ.items()
        if name.upper().startswith(_SETTINGS_VARIABLE_PREFIXES)
    }
    for name in saved:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(saved)


# ------------------------------------------------------------------------------ rendering
def render_reference(document: Mapping[str, Any]) -> str:
    info = document.get("info", {})
    schemas = document.get("components", {}).get("schemas", {})
    lines = [
        f"Generated from the OpenAPI {document.get('openapi', '')} document of "
        f"{_text(info.get('title', ''))} {_text(info.get('version', ''))}. "
        f"`{PREFIX_SHOWN}` stands for the service's prefix (`{_BUILD_PREFIX}` by default).",
        "",
    ]
    if info.get("description"):
        lines += [_text(info["description"]), ""]
    lines += _security(document), ""

    by_tag: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
    for path, item in document.get("paths", {}).items():
        for method in sorted(item, key=_method_rank):
            operation = item[method]
            tag = (operation.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append((_shown_path(path), method, operation))

    for tag, operations in by_tag.items():
        lines += [f"## Operations: {_text(tag)}", ""]
        lines += ["| Method | Path | Summary |", "|---|---|---|"]
        for path, method, operation in operations:
            anchor = _operation_anchor(operation, method, path)
            lines.append(
                f"| `{method.upper()}` | [`{path}`](#{anchor}) "
                f"| {_cell(operation.get('summary', ''))} |"
            )
        lines.append("")
        for path, method, operation in operations:
            lines += _operation(path, method, operation)

    if schemas:
        requests = _request_schemas(document)
        lines += ["## Schemas", ""]
        for name in sorted(schemas):
            lines += _schema(name, schemas[name], closed=name in requests)
    return "\n".join(lines)


def _security(document: Mapping[str, Any]) -> str:
    schemes = document.get("components", {}).get("securitySchemes", {})
    if not schemes:
        return ""
    parts = []
    for name, scheme in schemes.items():
        where = f"the `{scheme.get('name', '')}` {scheme.get('in', '')}"
        description = scheme.get("description", "")
        parts.append(
            f"- **{_text(name)}**: {where}" + (f": {_text(description)}" if description else "")
        )
    return "Operations that need a caller accept either of:\n\n" + "\n".join(parts)


def _operation(path: str, method: str, operation: Mapping[str, Any]) -> list[str]:
    anchor = _operation_anchor(operation, method, path)
    lines = [f"### `{method.upper()} {path}` {{#{anchor}}}", ""]
    if operation.get("summary"):
        lines += [_text(operation["summary"]) + ".", ""]
    if operation.get("description"):
        lines += [_text(operation["description"]), ""]
    security = operation.get("security")
    if security == []:
        lines += ["Authentication: none.", ""]
    elif security:
        names = " or ".join(f"**{_text(next(iter(entry)))}**" for entry in security if entry)
        lines += [f"Authentication: {names}.", ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| Parameter | In | Type | Required |", "|---|---|---|---|"]
        for parameter in parameters:
            lines.append(
                f"| `{parameter['name']}` | {parameter.get('in', '')} "
                f"| {_type(_parameter_schema(parameter))} "
                f"| {'yes' if parameter.get('required') else 'no'} |"
            )
        lines.append("")
    body = operation.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            lines += [f"Request body (`{media}`): {_type(content.get('schema', {}))}.", ""]
    responses = operation.get("responses", {})
    if responses:
        lines += ["| Status | Meaning | Body | Headers |", "|---|---|---|---|"]
        for status in sorted(responses):
            response = responses[status]
            bodies = [
                f"{_type(content.get('schema', {}))}"
                for content in response.get("content", {}).values()
            ]
            headers = [
                f"`{name}`: {_cell(header.get('description', ''))}"
                for name, header in response.get("headers", {}).items()
            ]
            lines.append(
                f"| {status} | {_cell(response.get('description', ''))} "
                f"| {', '.join(bodies) or 'none'} | {'<br>'.join(headers)} |"
            )
        lines.append("")
    return lines


def _request_schemas(document: Mapping[str, Any]) -> set[str]:
    """Names of the schemas requests are validated against (directly or nested)."""
    schemas = document.get("components", {}).get("schemas", {})
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, Mapping):
            reference = node.get("$ref")
            if isinstance(reference, str):
                name = reference.rsplit("/", 1)[-1]
                if name not in found:
                    found.add(name)
                    visit(schemas.get(name, {}))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    for item in document.get("paths", {}).values():
        for operation in item.values():
            visit(operation.get("requestBody", {}))
    return found


def _schema(name: str, schema: Mapping[str, Any], *, closed: bool) -> list[str]:
    lines = [f"### {name} {{#{_schema_anchor(name)}}}", ""]
    if schema.get("description"):
        lines += [_text(schema["description"]), ""]
    properties = schema.get("properties")
    if properties:
        required = set(schema.get("required", []))
        lines += ["| Field | Type | Required | Description |", "|---|---|---|---|"]
        for field, field_schema in properties.items():
            description = field_schema.get("description", "").strip()
            if "default" in field_schema:
                if description and not description.endswith("."):
                    description += "."
                default = json.dumps(field_schema["default"])
                description = f"{description} Default: `{default}`.".strip()
            lines.append(
                f"| `{field}` | {_type(field_schema)} "
                f"| {'yes' if field in required else 'no'} | {_cell(description)} |"
            )
        lines.append("")
        if closed and schema.get("additionalProperties") is False:
            lines += ["Other fields are refused (400).", ""]
    elif schema.get("type") or schema.get("anyOf") or schema.get("enum"):
        lines += [f"Type: {_type(schema)}.", ""]
    return lines


def _type(schema: Mapping[str, Any]) -> str:
    """A JSON schema as a short Markdown phrase, with links to the named schemas."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{_schema_anchor(name)})"
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return " or ".join(_type(part) for part in schema[combinator])
    if "allOf" in schema:
        return " and ".join(_type(part) for part in schema["allOf"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " or ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(_type({**schema, "type": one}) for one in kind)
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, Mapping):
            return f"object (string keys → {_type(values)})"
        return "object"
    if kind is None:
        return "any"
    text = {"string": "string", "integer": "integer", "number": "number"}.get(kind, kind)
    constraints = []
    if "format" in schema:
        constraints.append(schema["format"])
    if "pattern" in schema and "format" not in schema:
        pattern = str(schema["pattern"])
        # Long patterns (every printable character, look-ahead bounds) are for machines: they
        # stay in openapi.json.
        shown = "`" not in pattern and "|" not in pattern and len(pattern) <= 80
        constraints.append(f"matching `{pattern}`" if shown else "matching a pattern")
    if "minLength" in schema:
        constraints.append(_characters("at least", schema["minLength"]))
    if "maxLength" in schema:
        constraints.append(_characters("at most", schema["maxLength"]))
    return f"{text} ({', '.join(constraints)})" if constraints else text


# ------------------------------------------------------------------------------ helpers
def _parameter_schema(parameter: Mapping[str, Any]) -> Mapping[str, Any]:
    """A parameter's schema, or that of its JSON content (a JSON document in the query)."""
    if "schema" in parameter:
        return dict(parameter["schema"])
    for content in parameter.get("content", {}).values():
        return dict(content.get("schema", {}))
    return {}


def _characters(bound: str, count: int) -> str:
    return f"{bound} {count} character" + ("" if count == 1 else "s")


def _shown_path(path: str) -> str:
    return PREFIX_SHOWN + path[len(_BUILD_PREFIX) :] if path.startswith(_BUILD_PREFIX) else path


def _operation_anchor(operation: Mapping[str, Any], method: str, path: str) -> str:
    identifier = operation.get("operationId") or f"{method}-{path}"
    return "op-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(identifier)).strip("-")


def _schema_anchor(name: str) -> str:
    return "schema-" + re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")


def _method_rank(method: str) -> int:
    return _METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER)


def _text(text: str) -> str:
    """Prose from the document: HTML-escaped outside code spans, one line."""
    pieces = []
    position = 0
    for match in _CODE_SPAN.finditer(text):
        pieces.append(html.escape(text[position : match.start()], quote=False))
        pieces.append(match.group(0))
        position = match.end()
    pieces.append(html.escape(text[position:], quote=False))
    return " ".join("".join(pieces).split())


def _cell(text: str) -> str:
    """Prose for a table cell: as ``_text``, with pipes outside code spans escaped."""
    pieces = []
    position = 0
    escaped = _text(text)
    for match in _CODE_SPAN.finditer(escaped):
        pieces.append(escaped[position : match.start()].replace("|", "\\|"))
        pieces.append(match.group(0))
        position = match.end()
    pieces.append(escaped[position:].replace("|", "\\|"))
    return "".join(pieces)
