"""Which configurables an image offers, and the validation of hostile user input."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from remoteappmanager.domain.configurables import (
    MAX_HEIGHT,
    MAX_WIDTH,
    MIN_HEIGHT,
    MIN_WIDTH,
    RESOLUTION,
    STARTUP_DATA,
    Configuration,
    offered_configurables,
    parse_resolution,
    validate_configurables,
    validate_startupdata,
)
from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.labels import AppType, ImageMetadata
from remoteappmanager.domain.models import Policy, Volume, VolumeMode


def image(*env: str) -> ImageMetadata:
    return ImageMetadata("img", "Img", "", "", AppType.VNC, frozenset(env))


X11 = image("X11_WIDTH", "X11_HEIGHT", "X11_DEPTH")
EVERYTHING = image("X11_WIDTH", "X11_HEIGHT", "STARTUPDATA")
HOME_AND_DATA = Policy(
    allow_home=True, allow_startup_data=True, volume=Volume("/srv/data", "/data", VolumeMode.RO)
)


# ---------------------------------------------------------------------------- offered
def test_resolution_needs_both_width_and_height() -> None:
    assert offered_configurables(X11, Policy()) == (RESOLUTION,)
    assert offered_configurables(image("X11_WIDTH"), Policy()) == ()
    assert offered_configurables(image(), Policy()) == ()


def test_startupdata_needs_the_image_and_the_policy() -> None:
    assert offered_configurables(EVERYTHING, HOME_AND_DATA) == (RESOLUTION, STARTUP_DATA)
    assert offered_configurables(EVERYTHING, Policy(allow_home=True)) == (RESOLUTION,)
    assert offered_configurables(X11, HOME_AND_DATA) == (RESOLUTION,)


# ---------------------------------------------------------------------------- resolution
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1920x1080", (1920, 1080)),
        ("320x200", (320, 200)),
        ("7680x4320", (7680, 4320)),
        ("Window", None),
        ("", None),
        (None, None),
    ],
)
def test_good_resolutions(value: object, expected: tuple[int, int] | None) -> None:
    assert parse_resolution(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "1920X1080",
        "1920x1080\n",
        " 1920x1080",
        "1920*1080",
        "1920x",
        "x1080",
        "-1920x1080",
        "+1920x1080",
        "1920x1080x16",
        "\uff11\uff19\uff12\uff10x1080",  # full-width digits
        "\u0663\u0662\u0660x200",  # Arabic-Indic digits
        "319x200",
        "320x199",
        "7681x4320",
        "7680x4321",
        "99999x99999",
        "0x0",
        "window",
        1920,
        ["1920x1080"],
        {"w": 1},
        True,
    ],
)
def test_bad_resolutions(value: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_resolution(value)


@given(st.integers(MIN_WIDTH, MAX_WIDTH), st.integers(MIN_HEIGHT, MAX_HEIGHT))
def test_every_resolution_in_bounds_is_accepted(width: int, height: int) -> None:
    assert parse_resolution(f"{width}x{height}") == (width, height)


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_resolutions_out_of_bounds_are_refused(width: int, height: int) -> None:
    assume(not (MIN_WIDTH <= width <= MAX_WIDTH and MIN_HEIGHT <= height <= MAX_HEIGHT))
    with pytest.raises(InvalidRequest):
        parse_resolution(f"{width}x{height}")


@given(st.text(max_size=30))
def test_any_text_is_either_a_bounded_resolution_or_refused(value: str) -> None:
    try:
        result = parse_resolution(value)
    except InvalidRequest:
        return
    if result is not None:
        width, height = result
        assert MIN_WIDTH <= width <= MAX_WIDTH
        assert MIN_HEIGHT <= height <= MAX_HEIGHT
        assert value == f"{width}x{height}"


# ---------------------------------------------------------------------------- startupdata
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/workspace/run.in", "/workspace/run.in"),
        ("/workspace/a/./b//c.txt", "/workspace/a/b/c.txt"),
        ("/data/input.vtk", "/data/input.vtk"),
        ("/workspace", "/workspace"),
        ("/data/", "/data"),
    ],
)
def test_startupdata_inside_the_mounts(value: str, expected: str) -> None:
    assert validate_startupdata(value, HOME_AND_DATA) == expected


@pytest.mark.parametrize(
    "value",
    [
        "relative/path",
        "/etc/passwd",
        "/workspace/../etc/passwd",
        "/workspacex/file",
        "/datafile",
        "/",
        "",
        "/workspace/a\x00b",
        "/workspace/a\nb",
        "/workspace/" + "a" * 2000,
        42,
        None,
    ],
)
def test_startupdata_outside_the_mounts_is_refused(value: object) -> None:
    with pytest.raises(InvalidRequest):
        validate_startupdata(value, HOME_AND_DATA)


def test_startupdata_with_only_a_volume_or_only_a_home() -> None:
    volume_only = Policy(allow_startup_data=True, volume=Volume("/s", "/data", VolumeMode.RW))
    assert validate_startupdata("/data/x", volume_only) == "/data/x"
    with pytest.raises(InvalidRequest, match="inside /data"):
        validate_startupdata("/workspace/x", volume_only)
    home_only = Policy(allow_home=True, allow_startup_data=True)
    with pytest.raises(InvalidRequest, match="inside /workspace"):
        validate_startupdata("/data/x", home_only)
    with pytest.raises(InvalidRequest, match="mounts no data"):
        validate_startupdata("/data/x", Policy(allow_startup_data=True))


path_segments = st.lists(
    st.sampled_from(["a", "b", "..", ".", "", "workspace", "data", "etc", "x y", "ü"]),
    max_size=8,
)


@given(path_segments)
def test_accepted_startupdata_is_normalised_and_inside_a_mount(segments: list[str]) -> None:
    value = "/" + "/".join(segments)
    try:
        result = validate_startupdata(value, HOME_AND_DATA)
    except InvalidRequest:
        return
    assert result == posixpath.normpath(result)
    assert ".." not in result.split("/")
    assert result in {"/workspace", "/data"} or result.startswith(("/workspace/", "/data/"))


# ---------------------------------------------------------------------------- the whole input
def test_the_rest_api_shape() -> None:
    raw = {
        "resolution": {"resolution": "1280x800"},
        "startupdata": {"startupdata": "/workspace/case.json"},
    }
    configuration = validate_configurables(raw, EVERYTHING, HOME_AND_DATA)
    assert configuration == Configuration((1280, 800), "/workspace/case.json")
    assert configuration.environment() == {
        "X11_WIDTH": "1280",
        "X11_HEIGHT": "800",
        "STARTUPDATA": "/workspace/case.json",
    }


def test_bare_values_and_nothing() -> None:
    assert validate_configurables({"resolution": "1280x800"}, X11, Policy()) == Configuration(
        (1280, 800)
    )
    assert validate_configurables(None, X11, Policy()) == Configuration()
    assert validate_configurables({}, X11, Policy()) == Configuration()
    assert Configuration().environment() == {}


def test_a_default_resolution_is_fine_even_when_not_offered() -> None:
    assert validate_configurables({"resolution": "Window"}, image(), Policy()) == Configuration()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"colour": "blue"}, "unknown configurable"),
        ({"resolution": {"resolution": "1x1"}}, "out of bounds"),
        ({"resolution": {"resolution": "800x600", "depth": 8}}, "unknown fields"),
        ({"startupdata": {"startupdata": "/etc/shadow"}}, "must lie inside"),
        ("resolution=800x600", "must be an object"),
        (["resolution"], "must be an object"),
    ],
)
def test_bad_input(raw: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        validate_configurables(raw, EVERYTHING, HOME_AND_DATA)


def test_configurables_that_are_not_offered_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="startup data is not offered"):
        validate_configurables({"startupdata": "/workspace/x"}, EVERYTHING, Policy(allow_home=True))
    with pytest.raises(InvalidRequest, match="startup data is not offered"):
        validate_configurables({"startupdata": "/workspace/x"}, X11, HOME_AND_DATA)
    with pytest.raises(InvalidRequest, match="does not offer a choice of resolution"):
        validate_configurables({"resolution": "800x600"}, image("STARTUPDATA"), HOME_AND_DATA)


@given(
    st.dictionaries(
        st.text(max_size=15),
        st.one_of(
            st.none(),
            st.text(max_size=30),
            st.integers(),
            st.dictionaries(st.text(max_size=15), st.text(max_size=30), max_size=3),
        ),
        max_size=4,
    )
)
def test_hostile_input_is_accepted_only_when_valid(raw: dict[str, object]) -> None:
    try:
        configuration = validate_configurables(raw, EVERYTHING, HOME_AND_DATA)
    except InvalidRequest:
        return
    assert set(raw) <= {RESOLUTION, STARTUP_DATA}
    if configuration.resolution is not None:
        width, height = configuration.resolution
        assert MIN_WIDTH <= width <= MAX_WIDTH
        assert MIN_HEIGHT <= height <= MAX_HEIGHT
    if configuration.startupdata is not None:
        assert configuration.startupdata.startswith(("/workspace", "/data"))
