"""Test-wide settings: Hypothesis without per-example deadlines.

The suite runs on small shared machines whose speed varies by 2x or more
from one run to the next; a deadline would turn that into flaky failures
without saying anything about lanspan.
"""

from hypothesis import settings

settings.register_profile("lanspan", deadline=None)
settings.load_profile("lanspan")
