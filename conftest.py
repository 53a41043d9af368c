"""Repository-only wiring for bindlab's own suite. The plugin itself (fixtures, markers,
``scale`` deselection, host guard) comes from the installed package's ``pytest11`` entry
point, exactly as in a downstream project."""

from __future__ import annotations

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the test extras are not installed: the property tests skip
    pass
else:
    # Property and fuzz tests stay bounded to seconds: no per-example deadline (a namespace
    # costs milliseconds on a noisy runner), a fixed example budget.
    settings.register_profile(
        "bindlab", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.load_profile("bindlab")

# tests/downstream/project is another project's suite: ci/run downstream runs it from a wheel
collect_ignore = ["tests/downstream"]
