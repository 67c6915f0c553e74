"""The gate's access decision (``services.gate_access``): who gets into a running application.

Pure rules over a target and a caller, so every combination is generated: owner, admin,
a user named by a share or not, a grant whose policy lets others view or not, a confirmed
entry or not. The attacker's attempts come first: another tenant, an admin by flag alone
without confirming, a token (never confirmed), a viewer whose share ended.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from remoteappmanager.adapters.memory_shared_state import InMemoryControlStates
from remoteappmanager.domain.shares import Share, ShareKind, ShareMode
from remoteappmanager.services.access import AuthenticatedUser
from remoteappmanager.services.gate_access import GateAccess, GateTarget
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.services.shares import Shares, SharingRules
from tests.support.session_world import GATE_URL, REALM, make_world

OWNER = "alice"
URL_ID = "0123456789abcdef"


def gate_access(rules: SharingRules | None = None) -> GateAccess:
    world = make_world()
    sessions = Sessions(
        world.runtime,
        world.routes,
        world.workspaces,
        world.host_paths,
        world.probe,
        realm=REALM,
        gate_url=GATE_URL,
        unit_of_work=world.database.unit_of_work,
    )
    shares = Shares(
        sessions,
        world.database.unit_of_work,
        controls=InMemoryControlStates(),
        rules=rules or SharingRules(),
    )
    return GateAccess(sessions, world.database.unit_of_work, shares=shares)


def target(*, allow_view: bool, shares: tuple[Share, ...] = ()) -> GateTarget:
    return GateTarget(
        URL_ID, OWNER, f"/user/{OWNER}/containers/{URL_ID}", "127.0.0.1", 1, allow_view, shares
    )


def share_with(user: str, mode: ShareMode) -> Share:
    return Share(1, URL_ID, ShareKind.USER, user, mode, datetime(2026, 1, 1, tzinfo=UTC))


ACCESS = gate_access()
names = st.sampled_from([OWNER, "bob", "carol"])
modes = st.sampled_from(list(ShareMode))
targets = st.builds(
    lambda allow_view, shared: target(
        allow_view=allow_view, shares=tuple(share_with(n, m) for n, m in shared)
    ),
    st.booleans(),
    st.lists(st.tuples(st.sampled_from(["bob", "carol"]), modes), max_size=2),
)
users = st.builds(AuthenticatedUser, names, st.booleans())


# ------------------------------------------------------------------------------ attempts
@given(users, targets, st.booleans())
def test_another_tenant_gets_in_only_through_a_share_or_a_confirmed_admin_entry(
    user: AuthenticatedUser, app: GateTarget, confirmed: bool
) -> None:
    if user.name == OWNER:
        return
    named = app.allow_view and any(share.subject == user.name for share in app.shares)
    admitted = ACCESS.admits(user, app, confirmed=confirmed)
    assert admitted == (named or (user.admin and confirmed))


def test_the_admin_flag_alone_never_lets_a_token_in() -> None:
    admin = AuthenticatedUser("bob", admin=True)
    app = target(allow_view=False)
    assert ACCESS.may_enter(admin, app)
    assert not ACCESS.admits(admin, app, confirmed=False)  # a token is never confirmed
    assert ACCESS.admits(admin, app, confirmed=True)


def test_a_share_on_a_grant_that_forbids_viewing_lets_nobody_in() -> None:
    app = target(allow_view=False, shares=(share_with("bob", ShareMode.CONTROL),))
    bob = AuthenticatedUser("bob", admin=False)
    assert not ACCESS.admits(bob, app, confirmed=True)
    assert ACCESS.mode_of(bob, app, confirmed=False) is None


def test_an_admin_viewer_whose_share_ended_is_cut_but_a_confirmed_admin_stays() -> None:
    admin = AuthenticatedUser("bob", admin=True)
    unshared = target(allow_view=True)
    assert not ACCESS.still_admits(admin, unshared, was_viewer=True)
    assert ACCESS.still_admits(admin, unshared, was_viewer=False)


def test_a_viewer_whose_share_ended_is_cut() -> None:
    bob = AuthenticatedUser("bob", admin=False)
    assert ACCESS.still_admits(
        bob, target(allow_view=True, shares=(share_with("bob", ShareMode.VIEW),)), was_viewer=True
    )
    assert not ACCESS.still_admits(bob, target(allow_view=True), was_viewer=True)


def test_no_viewer_input_when_the_site_allows_none() -> None:
    access = gate_access(SharingRules(control=False))
    assert not access.input_allowed(URL_ID, "bob", ShareMode.CONTROL)
    assert ACCESS.input_allowed(URL_ID, "bob", ShareMode.CONTROL)
    assert not ACCESS.input_allowed(URL_ID, "bob", ShareMode.VIEW)


# ------------------------------------------------------------------------------ modes
@given(users, targets, st.booleans())
def test_the_owner_and_a_confirmed_admin_have_no_viewer_mode(
    user: AuthenticatedUser, app: GateTarget, confirmed: bool
) -> None:
    mode = ACCESS.mode_of(user, app, confirmed=confirmed)
    if user.name == OWNER or (user.admin and confirmed):
        assert mode is None
    elif mode is not None:
        assert ACCESS.admits(user, app, confirmed=confirmed)
        assert any(s.subject == user.name and s.mode is mode for s in app.shares)


@given(users, targets)
def test_whoever_is_admitted_stays_admitted_while_nothing_changes(
    user: AuthenticatedUser, app: GateTarget
) -> None:
    if ACCESS.admits(user, app, confirmed=False):
        was_viewer = ACCESS.mode_of(user, app, confirmed=False) is not None
        assert ACCESS.still_admits(user, app, was_viewer=was_viewer)
