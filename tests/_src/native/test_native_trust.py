"""The native kernel's cache: nothing is loaded from a place another user could write.

The library is built with a stand-in compiler (a script that writes the real kernel, built once,
to the ``-o`` path) so that each scenario runs the real build path (private temporary file,
mode, atomic rename, checks) in milliseconds; tests/optim/test_fused.py builds with the real
compiler. Foreign ownership is simulated with ``os.chown`` to another uid (the suite may run as
root) and shared folders with ``chmod``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from funcopt._src import native

OTHER_UID = 54321


@pytest.fixture(scope="module")
def real_library() -> Path:
    cxx = native._compiler()
    assert cxx is not None, "the test suite needs a C++ compiler (tests/optim/test_fused.py does too)"
    assert native.native_error() is None, native.native_error()
    return native._build(cxx)  # the cached build of this machine


@pytest.fixture
def fake_cxx(tmp_path: Path, real_library: Path) -> Path:
    """A compiler that 'builds' the kernel by copying the real one, and logs each build."""
    script = tmp_path / "fake-cxx"
    log = tmp_path / "builds.log"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "--version" ]; then echo "fake-cxx 1.0"; exit 0; fi
        out=""
        while [ $# -gt 0 ]; do
          if [ "$1" = "-o" ]; then out="$2"; fi
          shift
        done
        echo "$out" >> "{log}"
        cp "{real_library}" "$out"
        """))
    script.chmod(0o755)
    return script


def _builds(fake_cxx: Path) -> int:
    log = fake_cxx.with_name("builds.log")
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home" / "cache" / "funcopt"
    monkeypatch.setenv("FUNCOPT_CACHE_DIR", str(folder))
    monkeypatch.delenv(native.MARCH_ENV, raising=False)
    monkeypatch.setattr(native, "_private_tmp", [])  # a fresh fallback folder for each test
    return folder


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _assert_private_file(path: Path) -> None:
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid(), (path, st)
    assert not st.st_mode & 0o022, oct(st.st_mode)


def _name(fake_cxx: Path) -> str:
    return native._library_name(str(fake_cxx), native.flags())


def test_a_fresh_cache_folder_is_private_and_the_build_is_renamed_into_place(cache, fake_cxx):
    path = native._build(str(fake_cxx))
    assert path == cache / _name(fake_cxx)
    assert _mode(cache) == 0o700 and _mode(cache.parent) == 0o700  # the folders it created
    _assert_private_file(path)
    built = fake_cxx.with_name("builds.log").read_text().split()
    assert len(built) == 1 and Path(built[0]).parent == cache and Path(built[0]).name != path.name
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary file left behind
    assert native._build(str(fake_cxx)) == path and _builds(fake_cxx) == 1  # loaded from the cache afterwards


@pytest.mark.parametrize("how", ["group-writable", "other-writable", "foreign-owner", "symlink"])
def test_a_cache_folder_others_can_write_is_not_used(cache, fake_cxx, tmp_path, how):
    if how == "symlink":  # the cache folder is a link to a folder someone else chose
        target = tmp_path / "someone-elses"
        target.mkdir(mode=0o700)
        cache.parent.mkdir(parents=True)
        cache.symlink_to(target)
    else:
        cache.mkdir(parents=True, mode=0o700)
    planted = cache / _name(fake_cxx)
    shutil.copy(native.SOURCE, planted)  # any content: it must not be returned
    planted.chmod(0o700)
    if how == "symlink":
        pass
    elif how == "group-writable":
        cache.chmod(0o770)
    elif how == "other-writable":
        cache.chmod(0o707)
    else:
        os.chown(cache, OTHER_UID, -1)
    with pytest.warns(RuntimeWarning, match="is not private"):
        path = native._build(str(fake_cxx))
    assert path.parent != cache and path != planted
    assert path.parent == Path(native._private_tmp[0])
    assert _mode(path.parent) == 0o700 and path.parent.name.startswith("funcopt-native-")
    assert not str(path.parent).endswith(f"funcopt-{os.getuid()}")  # not the old predictable shared path
    _assert_private_file(path)
    assert _builds(fake_cxx) == 1


@pytest.mark.parametrize("how", ["foreign-owner", "group-writable", "other-writable", "symlink"])
def test_a_library_file_that_fails_the_checks_is_removed_and_rebuilt(cache, fake_cxx, tmp_path, how):
    cache.mkdir(parents=True, mode=0o700)
    planted = cache / _name(fake_cxx)
    elsewhere = tmp_path / "elsewhere.so"
    elsewhere.write_bytes(b"planted")
    if how == "symlink":
        planted.symlink_to(elsewhere)
    else:
        planted.write_bytes(b"planted")
        if how == "foreign-owner":
            planted.chmod(0o700)
            os.chown(planted, OTHER_UID, -1)
        else:
            planted.chmod(0o720 if how == "group-writable" else 0o702)
    path = native._build(str(fake_cxx))
    assert path == planted and _builds(fake_cxx) == 1
    _assert_private_file(path)
    assert path.read_bytes() != b"planted"
    assert elsewhere.read_bytes() == b"planted"  # a symlink's target is never written through


def test_a_shared_parent_folder_is_refused_unless_sticky(cache, fake_cxx):
    shared = cache.parent.parent
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    with pytest.warns(RuntimeWarning, match="writable by other users"):
        path = native._build(str(fake_cxx))
    assert cache not in path.parents and path.parent == Path(native._private_tmp[0])
    shared.chmod(0o1777)  # sticky, as /tmp: no one can rename another user's folder in it
    assert native._build(str(fake_cxx)) == cache / _name(fake_cxx)


def test_an_unusable_cache_folder_falls_back_to_a_fresh_private_temporary_folder(cache, fake_cxx):
    cache.parent.mkdir(parents=True)
    cache.write_text("")  # a file where the folder should be: nothing to distrust, just unusable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = native._build(str(fake_cxx))
    folder = Path(native._private_tmp[0])
    assert path.parent == folder and _mode(folder) == 0o700 and os.lstat(folder).st_uid == os.getuid()
    _assert_private_file(path)


def test_a_failed_build_shows_the_compiler_messages(cache, tmp_path, monkeypatch):
    failing = tmp_path / "failing-cxx"
    failing.write_text(textwrap.dedent("""\
        #!/bin/sh
        if [ "$1" = "--version" ]; then echo "failing-cxx 1.0"; exit 0; fi
        echo "fused_adam.cc:12:3: error: 'xla' has not been declared" >&2
        exit 1
        """))
    failing.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"(?s)exit status 1.*-ffp-contract=off.*'xla' has not been declared"):
        native._build(str(failing))
    assert [p.name for p in cache.iterdir()] == []  # the temporary file is gone
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CXX", str(failing))
    assert "'xla' has not been declared" in native.native_error()


def test_flags_are_reproducible_unless_asked_otherwise(monkeypatch):
    monkeypatch.delenv(native.MARCH_ENV, raising=False)
    assert "-ffp-contract=off" in native.flags() and "-w" not in native.flags()
    assert not any(f.startswith("-march") for f in native.flags())
    monkeypatch.setenv(native.MARCH_ENV, "native")
    assert native.flags()[-1] == "-march=native"


def test_a_planted_library_is_never_loaded(tmp_path, fake_cxx):
    # end to end, in a fresh process (this one has registered its kernels already): a library with the
    # expected name, planted in a cache folder others can write, would create a marker file when loaded
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    marker = tmp_path / "planted-code-ran"
    source = tmp_path / "planted.c"
    source.write_text(f'#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                      f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    planted = cache / _name(fake_cxx)
    subprocess.run([native._compiler(), "-shared", "-fPIC", "-x", "c", str(source), "-o", str(planted)], check=True)
    cache.chmod(0o777)
    code = ("import warnings; from funcopt._src import native\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    assert native.native_error() is None, native.native_error()\n"
            "assert any('is not private' in str(x.message) for x in w), [str(x.message) for x in w]\n")
    env = dict(os.environ, FUNCOPT_CACHE_DIR=str(cache), CXX=str(fake_cxx), JAX_PLATFORMS="cpu")
    env.pop(native.MARCH_ENV, None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).parents[3])
    assert done.returncode == 0, done.stderr[-3000:]
    assert not marker.exists(), "the planted library was loaded"
    assert _builds(fake_cxx) == 1  # the kernel was built elsewhere instead
