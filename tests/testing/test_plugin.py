"""The pytest plugin's fixtures work in a user's test suite."""

from __future__ import annotations

import appvitals
from appvitals.testing import Capture


def test_appvitals_capture_fixture(appvitals_capture: Capture) -> None:
    """The shipped appvitals_capture fixture records spans and metrics in memory."""
    with appvitals.span("user.code"):
        appvitals.counter("user.calls").add(2)
    assert appvitals_capture.span("user.code").name == "user.code"
    assert appvitals_capture.metric("user.calls")[0].value == 2
