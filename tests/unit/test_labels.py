"""Image labels → ImageMetadata."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from remoteappmanager.domain.labels import (
    LABEL_NAMESPACE,
    MAX_ICON_LENGTH,
    AppType,
    env_variable_name,
    parse_image_labels,
)

NS = LABEL_NAMESPACE


def test_all_labels() -> None:
    icon = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really").decode()
    metadata = parse_image_labels(
        "simphony/paraview:1.0",
        {
            NS + "ui_name": "ParaView",
            NS + "icon_128": icon,
            NS + "description": "Visualise data",
            NS + "type": "webapp",
            NS + "env.x11-width": "",
            NS + "env.x11-height": "whatever",
            NS + "env.startupdata": "",
            NS + "env.my_var": "",
            "org.opencontainers.image.title": "ignored",
        },
    )
    assert metadata.name == "simphony/paraview:1.0"
    assert metadata.ui_name == "ParaView"
    assert metadata.icon_128 == icon
    assert metadata.description == "Visualise data"
    assert metadata.type is AppType.WEB
    assert metadata.env == {"X11_WIDTH", "X11_HEIGHT", "STARTUPDATA", "MY_VAR"}


def test_no_labels_at_all() -> None:
    for labels in (None, {}):
        metadata = parse_image_labels("busybox:latest", labels)
        assert metadata.ui_name == "busybox:latest"
        assert metadata.icon_128 == ""
        assert metadata.description == ""
        assert metadata.type is AppType.VNC
        assert metadata.env == frozenset()


def test_blank_ui_name_falls_back_to_the_image_name() -> None:
    assert parse_image_labels("img", {NS + "ui_name": "   "}).ui_name == "img"


def test_unknown_type_means_vncapp() -> None:
    assert parse_image_labels("img", {NS + "type": "desktop"}).type is AppType.VNC
    assert parse_image_labels("img", {NS + "type": "VNCAPP"}).type is AppType.VNC
    assert parse_image_labels("img", {NS + "type": " WebApp "}).type is AppType.WEB


def test_invalid_icons_are_dropped() -> None:
    for bad in ("not base64!", "abc", "====", "a" * (MAX_ICON_LENGTH + 4)):
        assert parse_image_labels("img", {NS + "icon_128": bad}).icon_128 == ""


def test_a_wrapped_icon_is_kept_without_its_line_breaks() -> None:
    icon = base64.b64encode(bytes(range(200))).decode()
    wrapped = "\n".join(icon[i : i + 60] for i in range(0, len(icon), 60))
    assert parse_image_labels("img", {NS + "icon_128": wrapped}).icon_128 == icon


def test_env_names_that_cannot_be_variables_are_ignored() -> None:
    labels = {NS + f"env.{name}": "" for name in ("x11-width", "a=b", "has space", "", "9lives")}
    assert parse_image_labels("img", labels).env == {"X11_WIDTH"}


@given(st.dictionaries(st.text(max_size=40), st.text(max_size=200), max_size=10))
def test_any_labels_parse_without_error(labels: dict[str, str]) -> None:
    metadata = parse_image_labels("img", {NS + key: value for key, value in labels.items()})
    assert metadata.ui_name
    assert isinstance(metadata.type, AppType)
    if metadata.icon_128:
        base64.b64decode(metadata.icon_128, validate=True)
    for variable in metadata.env:
        assert variable.replace("_", "a").isalnum()
        assert variable.isupper() or not any(c.isalpha() for c in variable)
        assert variable.isascii()


@given(st.from_regex(r"[a-z][a-z0-9-]{0,30}", fullmatch=True))
def test_env_names_are_upper_case_with_underscores(name: str) -> None:
    variable = env_variable_name(name)
    assert variable == name.upper().replace("-", "_")
