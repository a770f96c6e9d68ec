"""The namespace harness fixtures (`netns`, `devserver`) for the dev server tests."""

from tests.fixtures.netns import devserver, netns

__all__ = ["devserver", "netns"]
