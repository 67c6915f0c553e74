"""MkDocs hook: the configuration reference, generated from ``remoteappmanager.settings``.

A page holding the line ``<!-- settings-reference -->`` gets, in its place, a summary table and
one entry per field of ``Settings``: the environment variable(s) read (from the field's
``validation_alias``, else the ``REMOTEAPP_`` prefix), the TOML key, the type, the default and
the description. It is rebuilt at every build, so it cannot fall behind the code.
"""

from __future__ import annotations

import enum
import html
import json
import types
import typing
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- settings-reference -->"
# Fields whose values JupyterHub hands a service; listed in their own table.
HUB_PREFIX = "jupyterhub_"

_BOOLEAN_WORDS = "`true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`)"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    try:
        reference = render_reference()
    except Exception as exc:  # a broken import or field must fail the build, legibly
        raise PluginError(f"cannot generate the configuration reference: {exc!r}") from exc
    return markdown.replace(MARKER, reference)


# ------------------------------------------------------------------------------ the facts
def variable_names(name: str, info: Any, env_prefix: str) -> list[str]:
    """The environment variables a field is read from, in the order they are tried."""
    from pydantic import AliasChoices

    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        # Upper-case choices are environment variables; the lower-case one is the field's
        # own name, accepted in the TOML file.
        names = [c for c in alias.choices if isinstance(c, str) and c.upper() == c]
        if names:
            return names
    if isinstance(alias, str):
        return [alias.upper()]
    return [(env_prefix + name).upper()]


def reference_rows() -> list[dict[str, Any]]:
    """One row per ``Settings`` field, rendered as Markdown cells (also used by the tests)."""
    from remoteappmanager.settings import Settings

    env_prefix = str(Settings.model_config.get("env_prefix", ""))
    rows = []
    for name, info in Settings.model_fields.items():
        variables = variable_names(name, info, env_prefix)
        rows.append(
            {
                "field": name,
                "variables": variables,
                "toml": f"`{name}`",
                "type": _type_of(info),
                "default": _default_of(info),
                "description": _cell(info.description or ""),
            }
        )
    return rows


# ------------------------------------------------------------------------------ rendering
def render_reference() -> str:
    from remoteappmanager.settings import CONFIG_FILE_VARIABLE

    rows = reference_rows()
    service = [row for row in rows if not row["field"].startswith(HUB_PREFIX)]
    hub = [row for row in rows if row["field"].startswith(HUB_PREFIX)]
    parts = [
        f"Generated from `remoteappmanager.settings.Settings` ({len(rows)} settings). "
        "Where a setting lists several variables, the first one that is set wins. "
        "Variable names are not case-sensitive. Values in the TOML file named by "
        f"`{CONFIG_FILE_VARIABLE}` apply where no variable is set.",
        "",
        "| Variable | Default |",
        "|---|---|",
        *(f"| [`{row['variables'][0]}`](#{_anchor(row)}) | {row['default']} |" for row in rows),
        "",
        "### The service's own settings",
        "",
        *(_entry(row) for row in service),
        "### Settings JupyterHub hands a service",
        "",
        "A hub-managed service receives these from the hub; set them yourself only when the "
        "service runs on its own (outside the hub's control).",
        "",
        *(_entry(row) for row in hub),
    ]
    return "\n".join(parts)


def _anchor(row: dict[str, Any]) -> str:
    return str(row["variables"][0]).lower()


def _entry(row: dict[str, Any]) -> str:
    variables = row["variables"]
    lines = [f"#### `{variables[0]}` {{#{_anchor(row)}}}", ""]
    if row["description"]:
        lines += [row["description"], ""]
    facts = []
    if len(variables) > 1:
        also = ", then ".join(f"`{v}`" for v in variables[1:])
        facts.append(f"- **Also read from:** {also}, when `{variables[0]}` is not set")
    facts += [
        f"- **TOML key:** {row['toml']}",
        f"- **Type:** {row['type']}",
        f"- **Default:** {row['default']}",
    ]
    return "\n".join([*lines, *facts, "", ""])


def _type_of(info: Any) -> str:
    from pydantic import SecretStr

    annotation = info.annotation
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        (annotation,) = [a for a in args if a is not type(None)]

    constraints: list[str] = []
    for item in info.metadata:
        for attribute, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attribute, None)
            if value is not None:
                constraints.append(f"{sign} {value:g}")
        pattern = getattr(item, "pattern", None)
        if pattern is not None:
            constraints.append(f"matching `{pattern}`")

    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        text = " or ".join(f"`{member.value}`" for member in annotation)
    elif annotation is SecretStr:
        text = "secret string (never logged or shown)"
    elif annotation is bool:
        text = _BOOLEAN_WORDS
    elif annotation is float:
        text = "number"
    elif annotation is int:
        text = "integer"
    elif annotation is str:
        text = "string"
    elif annotation is Path:
        text = "path"
    elif typing.get_origin(annotation) is dict:
        text = "JSON object (a table in TOML)"
    elif typing.get_origin(annotation) in (tuple, list):
        text = "list (a JSON list or comma-separated values; an array in TOML)"
    else:
        raise ValueError(f"no description for the type {annotation!r} of {info!r}")
    if constraints:
        text += ", " + ", ".join(constraints)
    if optional:
        text += ", optional"
    # Pipes here sit inside code spans, which tables leave alone.
    return " ".join(text.split())


def _default_of(info: Any) -> str:
    from pydantic_core import PydanticUndefined

    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, dict | list | tuple):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    """A description as Markdown prose: one line, ``<name>`` shown rather than taken as HTML."""
    return html.escape(" ".join(text.split()), quote=False)
