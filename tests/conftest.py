import pytest

# Helpers that assert on behalf of tests get pytest's detailed assertion messages too.
pytest.register_assert_rewrite("tests.e2e.liveavatar", "tests.e2e.support")

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.sockets",
    "tests.fixtures.namespace",
]
