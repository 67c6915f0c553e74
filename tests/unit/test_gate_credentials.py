"""The gate's credential, cookie and header rules, as an attacker would try to get round them."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remoteappmanager.web.auth import SESSION_COOKIE, STATE_COOKIE_PREFIX, XSRF_COOKIE
from remoteappmanager.web.gate.credentials import (
    GATE_COOKIE,
    GatePass,
    authorization_token,
    confine_set_cookie,
    connection_options,
    cookie_pairs,
    expired_gate_cookie,
    forwarded_authorization,
    gate_set_cookie,
    is_service_cookie,
    pins_a_header,
    read_gate_pass,
    request_origin,
    serialise_origin,
    sort_cookies,
)
from remoteappmanager.web.gate.credentials import (
    cookie_values as values_of_cookie,
)

BASE = b"/user/alice/containers/abc123/"
HUB_COOKIES = [
    "jupyterhub-hub-login",
    "jupyterhub-session-id",
    "jupyterhub-user-alice",
    "jupyterhub-user-alice-oauth-state",
    "service-remoteapp",
    "service-other-oauth-state",
    "_xsrf",
]
OUR_COOKIES = [GATE_COOKIE, SESSION_COOKIE, XSRF_COOKIE, STATE_COOKIE_PREFIX + "abc"]
PREFIXES = ["", "__Host-", "__Secure-", "__host-", "__SECURE-", "__Secure-__Host-"]

# Cookie names as browsers send them: token characters, no '=' or ';'.
cookie_names = st.text(
    alphabet=string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1, max_size=20
)
cookie_values = st.text(alphabet=string.ascii_letters + string.digits + "-_.", max_size=20)
service_names = st.sampled_from(HUB_COOKIES + OUR_COOKIES)
prefixes = st.sampled_from(PREFIXES)


# ------------------------------------------------------------------------------ cookies
@pytest.mark.parametrize("name", HUB_COOKIES + OUR_COOKIES)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_hub_and_service_cookie_is_recognised_with_any_prefix(name: str, prefix: str) -> None:
    assert is_service_cookie(prefix + name)
    assert is_service_cookie((prefix + name).upper())


@pytest.mark.parametrize("name", ["theme", "app-session", "JSESSIONID", "__Host-app", "xsrf"])
def test_application_cookies_are_not_service_cookies(name: str) -> None:
    assert not is_service_cookie(name)


@given(
    st.lists(
        st.one_of(
            st.tuples(cookie_names, cookie_values),
            st.tuples(st.tuples(prefixes, service_names).map("".join), cookie_values),
        ),
        max_size=8,
    ),
    st.integers(min_value=1, max_value=3),
)
def test_no_service_cookie_ever_reaches_the_application(
    pairs: list[tuple[str, str]], headers: int
) -> None:
    crumbs = [f"{name}={value}" for name, value in pairs]
    split = [crumbs[i::headers] for i in range(headers)]
    _gate, forwarded = sort_cookies("; ".join(part) for part in split)
    sent = forwarded.split("; ") if forwarded else []
    for crumb in sent:
        name = crumb.partition("=")[0]
        assert name, crumb
        assert not is_service_cookie(name)
    expected = [f"{name}={value}".strip() for name, value in pairs if not is_service_cookie(name)]
    assert sorted(sent) == sorted(c for c in expected if c.partition("=")[0].strip())


def test_the_gate_cookie_is_read_only_unprefixed() -> None:
    gate, forwarded = sort_cookies(
        [f"a=1; __Host-{GATE_COOKIE}=forged; {GATE_COOKIE}=real", f"{GATE_COOKIE}=second; =x; y"]
    )
    assert gate == ["real", "second"]
    assert forwarded == "a=1"


# ------------------------------------------------------------------------------ Set-Cookie
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"app=1", b"app=1; Path=" + BASE),
        (b"app=1; Path=/", b"app=1; Path=" + BASE),
        (b"app=1; path=/user/alice/", b"app=1; Path=" + BASE),
        (b"app=1; Path=/user/alice/containers/abc1234/", b"app=1; Path=" + BASE),
        (b"app=1; Path=" + BASE + b"sub/", b"app=1; Path=" + BASE + b"sub/"),
        (b"app=1; Path=" + BASE + b"../../bob/", b"app=1; Path=" + BASE),
        (b"app=1; Path=" + BASE + b"%2e%2e/", b"app=1; Path=" + BASE),
        (b"app=1; Path=" + BASE + b"x; Path=/", b"app=1; Path=" + BASE),
        (b"app=1; Path=/; Path=" + BASE + b"x", b"app=1; Path=" + BASE + b"x"),
        (
            b"app=1; Domain=example.org; HttpOnly; Max-Age=5; domain=.evil",
            b"app=1; HttpOnly; Max-Age=5; Path=" + BASE,
        ),
        (b"__Secure-app=1; Secure", b"__Secure-app=1; Secure; Path=" + BASE),
    ],
)
def test_application_cookies_are_confined_to_the_application(
    header: bytes, expected: bytes
) -> None:
    assert confine_set_cookie(header, BASE) == expected


@pytest.mark.parametrize(
    "header",
    [
        b"=x; Path=/",
        b"nameless; Path=/",
        b" =x",
        b"__Host-app=1; Path=/; Secure",
        b"__Host-jupyterhub-hub-login=x; Path=/; Secure",
        b"jupyterhub-hub-login=x; Path=/hub/",
        b"remoteapp-session=planted; Path=/services/remoteapp/",
        b"Remoteapp-Gate=planted",
        b"_xsrf=planted",
        b"__Secure-service-remoteapp=x",
    ],
)
def test_nameless_and_service_cookies_from_applications_are_dropped(header: bytes) -> None:
    assert confine_set_cookie(header, BASE) is None


@given(
    st.binary(max_size=80).filter(lambda b: b"\r" not in b and b"\n" not in b and b"\0" not in b)
)
def test_any_set_cookie_is_dropped_or_lands_inside_the_application(header: bytes) -> None:
    confined = confine_set_cookie(header, BASE)
    if confined is None:
        return
    attributes = [part.strip() for part in confined.split(b";")]
    name = attributes[0].partition(b"=")[0].strip()
    assert name
    assert not is_service_cookie(name.decode("latin-1"))
    paths = [a for a in attributes[1:] if a.lower().startswith(b"path")]
    domains = [a for a in attributes[1:] if a.lower().startswith(b"domain")]
    assert domains == []
    # Browsers use the last Path attribute: it is the one the gate wrote, inside the app.
    assert paths[-1].startswith(b"Path=" + BASE)
    assert b".." not in paths[-1]


# ------------------------------------------------------------------------------ Authorization
@pytest.mark.parametrize(
    "header",
    ["token abc", "Bearer abc", "BEARER abc", "bearer  abc ", "Token\tabc", "Negotiate abc", "x"],
)
def test_no_token_scheme_is_forwarded(header: str) -> None:
    assert forwarded_authorization(header) is None


@given(st.text(max_size=40))
def test_forwarded_authorization_is_basic_or_digest_only(header: str) -> None:
    forwarded = forwarded_authorization(header)
    if forwarded is not None:
        assert forwarded.strip().split(" ")[0].lower() in {"basic", "digest"}
        assert authorization_token(forwarded) is None


def test_the_token_schemes_carry_a_hub_token() -> None:
    assert authorization_token("token abc") == "abc"
    assert authorization_token("Bearer  abc ") == "abc"
    assert authorization_token("Basic abc") is None
    assert authorization_token("Bearer ") is None
    assert forwarded_authorization("Basic dXNlcjpwdw==") == "Basic dXNlcjpwdw=="


# ------------------------------------------------------------------------------ Connection
@pytest.mark.parametrize(
    "value",
    [
        b"content-length",
        b"Content-Length",
        b"keep-alive, TRANSFER-ENCODING",
        b"close,host",
        b" , Cookie ,",
        b"authorization",
        b"set-cookie",
        b"x-forwarded-for",
    ],
)
def test_a_connection_header_may_not_drop_framing_or_credentials(value: bytes) -> None:
    assert pins_a_header(connection_options(value))


@pytest.mark.parametrize("value", [b"keep-alive", b"close", b"Upgrade", b"x-hop, te", b""])
def test_ordinary_connection_options_are_fine(value: bytes) -> None:
    assert not pins_a_header(connection_options(value))


# ------------------------------------------------------------------------------ Origin
@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://Hub.Example.org", "https://hub.example.org"),
        ("https://hub.example.org:443", "https://hub.example.org"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("HTTP://localhost:80", "http://localhost"),
        ("null", None),
        ("", None),
        ("https://hub.example.org/path", None),
        ("https://user@hub.example.org", None),
        ("ftp://hub.example.org", None),
        ("https://hub.example.org:99999", None),
        (None, None),
    ],
)
def test_origins_are_compared_in_serialised_form(origin: str | None, expected: str | None) -> None:
    assert serialise_origin(origin) == expected


def test_the_request_origin_comes_from_host_and_scheme() -> None:
    assert request_origin("127.0.0.1:8000", None) == "http://127.0.0.1:8000"
    assert request_origin("hub.example.org", "https") == "https://hub.example.org"
    assert request_origin("hub.example.org:443", "https, http") == "https://hub.example.org"
    assert request_origin("hub.example.org", "wss") == "https://hub.example.org"
    assert request_origin("127.0.0.1:8000", "ws") == "http://127.0.0.1:8000"
    assert request_origin(None, "https") is None
    assert request_origin("hub.example.org", "gopher") is None


def test_one_cookie_parser_reads_every_pair_as_sent() -> None:
    headers = ['a=1; b="2"; =x; flag;  c = 3 ', "a=4"]
    assert list(cookie_pairs(headers)) == [
        ("a", "1", "a=1"),
        ("b", '"2"', 'b="2"'),
        ("", "x", "=x"),
        ("", "", "flag"),
        ("c", "3", "c = 3"),
        ("a", "4", "a=4"),
    ]
    assert values_of_cookie(headers, "a") == ["1", "4"]
    assert values_of_cookie(headers, "b") == ["2"]
    assert values_of_cookie(headers, "flag") == []


@given(st.lists(st.text(alphabet=' ;=ab"-', max_size=30), max_size=3))
def test_the_service_and_the_gate_read_the_gate_cookie_alike(headers: list[str]) -> None:
    gate_values, _ = sort_cookies(headers)
    assert [v.strip('"') for v in gate_values] == values_of_cookie(headers, GATE_COOKIE)


# ---------------------------------------------------------------------------- the gate cookie
ids = st.text(st.characters(codec="ascii", exclude_characters=" "), min_size=1, max_size=40)


@given(ids, ids, st.booleans())
def test_a_gate_pass_reads_back_as_it_was_made(session_id: str, url_id: str, ok: bool) -> None:
    made = GatePass(session_id, url_id, ok)
    assert read_gate_pass(made.payload()) == made


@given(ids, ids, ids)
def test_a_gate_pass_for_one_application_names_no_other(
    session_id: str, url_id: str, other: str
) -> None:
    read = read_gate_pass(GatePass(session_id, url_id).payload())
    assert read is not None
    assert (read.url_id == other) == (url_id == other)
    assert not read.confirmed


@given(st.text(st.sampled_from("ab entr"), max_size=30) | st.text(max_size=60))
def test_a_pass_is_confirmed_only_by_a_payload_that_says_exactly_so(payload: str) -> None:
    read = read_gate_pass(payload)
    words = payload.split(" ")
    if read is None:
        assert not words[0]
        return
    assert read.session_id == words[0]
    assert read.url_id == (words[1] if len(words) > 1 else "")
    assert read.confirmed == (words[2:] == ["entered"])


@pytest.mark.parametrize(
    ("session_id", "url_id"), [("", "x"), ("a b", "x"), ("a", ""), ("a", "x y")]
)
def test_a_gate_pass_with_an_empty_or_spaced_id_is_refused(session_id: str, url_id: str) -> None:
    with pytest.raises(ValueError, match="names a login session"):
        GatePass(session_id, url_id).payload()


@given(st.sampled_from(["/user/a/containers/x", "/user/b%20c/containers/y"]), st.booleans())
def test_the_gate_cookie_is_host_only_http_only_and_scoped_to_the_application(
    urlpath: str, secure: bool
) -> None:
    made = gate_set_cookie("v", urlpath, max_age=60, secure=secure)
    attributes = [part.strip().lower() for part in made.split(";")]
    assert attributes[0] == f"{GATE_COOKIE}=v"
    assert f"path={urlpath.lower()}/" in attributes
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert ("secure" in attributes) == secure
    assert not any(part.startswith("domain") for part in attributes)
    gone = expired_gate_cookie(urlpath)
    assert gone.startswith(f'{GATE_COOKIE}="";')
    assert "max-age=0" in gone.lower()
    assert gone.endswith(f"Path={urlpath}/")
