import os
import shutil
import sys
import tempfile

# Tests run on the CPU, with deterministic float math; x64 is switched on per test where needed.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402

_CACHE_KEY = pytest.StashKey[str]()
_CACHE_ROOT = "FUNCOPT_TESTS_XLA_CACHE_ROOT"


def pytest_configure(config):
    """An XLA compilation cache for the run, in a temporary folder removed at its end.

    Most tests build fresh optimizers whose compiled programs are identical to ones an earlier test
    compiled; the cache hands XLA's result back instead of compiling again (about three quarters of the
    compile time of a typical stateful test). A hit still traces and lowers, and still reports a compile
    event and a ``log_compiles`` line, so the tests that count compiles see the same counts. Each xdist
    worker has its own folder (jax locks a shared one only together with a size limit, whose bookkeeping
    scans the whole folder at every write); the processes a test starts (notebook kernels, the sharding
    checks) use their worker's folder while the worker waits for them. A run never reuses another run's
    programs.
    """
    if "JAX_COMPILATION_CACHE_DIR" in os.environ and _CACHE_ROOT not in os.environ:
        return  # a cache the user chose
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:  # the controller, or a run without xdist
        root = tempfile.mkdtemp(prefix="funcopt-tests-xla-cache-")
        config.stash[_CACHE_KEY] = root
        os.environ[_CACHE_ROOT] = root
        worker = "main"
    else:
        root, worker = os.environ[_CACHE_ROOT], workerinput["workerid"]
    folder = os.path.join(root, worker)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # every program, however quick to compile
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    if "jax" in sys.modules:  # jax read its environment already: tell it directly
        import jax

        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_unconfigure(config):
    root = config.stash.get(_CACHE_KEY, None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


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

    pytest-xdist's ``load`` scheduler gives each worker a consecutive chunk of the items first (a quarter
    of its share: the long tests all land in the first chunk) and then refills whichever worker runs
    short, a few items at a time; so the many short tests that come last even the workers out. Started
    last, one long test could keep a worker busy after the other has finished everything else.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
