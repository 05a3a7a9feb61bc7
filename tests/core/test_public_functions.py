"""edgekit.bundle and edgekit.profile are plain functions; their subpackages have names of their own, so importing
those never rebinds the public names to modules."""
from __future__ import annotations

import inspect


def test_bundle_and_profile_stay_functions_after_their_subpackages_load():
    import edgekit.bundling
    import edgekit.profiling

    assert inspect.isfunction(edgekit.bundle) and inspect.isfunction(edgekit.profile)
    assert edgekit.Bundle is edgekit.bundling.Bundle
    assert edgekit.ProfileReport is edgekit.profiling.ProfileReport
    assert edgekit.ProfileInterrupted is edgekit.profiling.ProfileInterrupted
