import os

# Tests run on the CPU, with deterministic float math; x64 is switched on per test where needed.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402


@pytest.fixture
def compiles():
    """The XLA compilations made while the test runs, as a list that grows (one entry per program)."""
    import jax

    events = []

    def listener(name, *args, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)


def pytest_collection_modifyitems(config, items):
    """The long tests (marked ``slow``) run first.

    pytest-xdist hands the first items out round-robin and the rest to whichever worker is free, so long
    tests started first spread over the workers and the short ones fill the gaps; started last, one long
    test can keep a worker busy after the other has finished everything else.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
