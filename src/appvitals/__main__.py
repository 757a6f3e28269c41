"""``python -m appvitals``: the same as the ``appvitals`` command."""

from __future__ import annotations

from appvitals.cli import main

# Guarded because tooling (doctest collection, pkgutil walks) imports every module.
if __name__ == "__main__":
    raise SystemExit(main())
