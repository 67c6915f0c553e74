"""Fast generators for the document's pattern-described string formats (schemathesis hooks).

The patterns name every printable character (hundreds of ranges) or bound names with
look-aheads; generating from them directly costs seconds per operation. These strategies
build candidates cheaply and keep those the very same pattern accepts, so every value is
schema-valid exactly as a JSON Schema validator decides.
"""

from __future__ import annotations

import re

import schemathesis
from hypothesis import strategies as st

from remoteappmanager.web.api_models import (
    AdminApplicationCreate,
    AdminGrantCreate,
    AdminUserCreate,
)


def _pattern(model: type, field: str) -> re.Pattern[str]:
    schema = model.model_json_schema()["properties"][field]
    for option in schema.get("anyOf", [schema]):
        if "pattern" in option:
            return re.compile(option["pattern"])
    raise AssertionError(f"{model.__name__}.{field} has no pattern")


_USER = _pattern(AdminUserCreate, "name")
_IMAGE = _pattern(AdminApplicationCreate, "image_name")
_PATH = _pattern(AdminGrantCreate, "volume_source")
_VOLUME = _pattern(AdminGrantCreate, "volume")

_component = st.from_regex(r"\A[a-z0-9]{1,6}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,6}){0,2}\Z")
_segment = st.text(min_size=1, max_size=8).filter(lambda text: "/" not in text)
_path = st.lists(_segment, max_size=4).map(lambda parts: "/" + "/".join(parts))

schemathesis.openapi.format(
    "hub-user-name", st.text(min_size=1, max_size=40).filter(lambda text: bool(_USER.search(text)))
)
schemathesis.openapi.format(
    "docker-image-reference",
    st.builds(
        lambda prefix, parts, padding, tag: prefix + "/".join(parts) + padding + tag,
        st.sampled_from(["", "docker.io/", "localhost/", "registry.example:5000/"]),
        st.lists(_component, min_size=1, max_size=3),
        st.integers(min_value=0, max_value=240).map(lambda n: "a" * n),
        st.sampled_from(["", ":v1", ":" + "t" * 128, "@sha256:" + "0" * 64]),
    ).filter(lambda text: bool(_IMAGE.search(text))),
)
schemathesis.openapi.format(
    "absolute-path-or-empty",
    st.one_of(st.just(""), _path).filter(lambda text: bool(_PATH.search(text))),
)
schemathesis.openapi.format(
    "volume-or-empty",
    st.one_of(
        st.just(""),
        st.builds(
            lambda source, target, mode: f"{source}:{target}:{mode}",
            _path,
            _path,
            st.sampled_from(["ro", "rw"]),
        ),
    ).filter(lambda text: bool(_VOLUME.search(text))),
)
