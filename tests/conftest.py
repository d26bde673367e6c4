"""Suite-wide settings: nothing in the suite may depend on how fast the machine is."""

from hypothesis import HealthCheck, settings

# Hypothesis' per-example deadline and its too-slow health check measure wall time: a loaded CI
# machine would fail tests that are correct. Examples are still bounded by max_examples.
settings.register_profile("backfill", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("backfill")
