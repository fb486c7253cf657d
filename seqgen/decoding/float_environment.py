"""Denormals as zero while ONNX Runtime runs seqgen's graphs, and only then.

seqgen's sessions treat denormals as zero (ONNX Runtime's ``session.set_denormal_as_zero``):
a shortlisted translator's masked log-softmax is 7x slower on denormals. ONNX Runtime does it
by setting the FTZ/DAZ flags of the CPU thread that *creates* the session, and leaves them
set: the caller's own arithmetic (numpy's, say) would flush subnormal numbers to zero after
``seqgen.load``, while a session run from another thread (the translator's workers, a
server's decoding thread) would not get the flags at all.

So the environment ONNX Runtime leaves after creating a session (C's ``fenv_t``: on x86 the
MXCSR register, FTZ and DAZ included) is kept (:func:`creating_sessions`), the creating
thread gets its own back, and every run installs the kept environment for its duration on
whichever thread runs it (:func:`running_sessions`).

ONNX Runtime sets the flags at a process's first session only: where another library opened
an ONNX Runtime session before seqgen's first, nothing is kept and seqgen's runs keep the
caller's environment (denormals as they are). Decoding test_2016_flickr measured the same
either way (int8 de->en, beam 5: 293 and 292 sentences/s), so seqgen does not set the flags
itself (which would mean writing the CPU's control register by platform).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

# Larger than C's fenv_t on every platform (glibc x86-64: 32 bytes; macOS arm64: 16).
_ENVIRONMENT_BYTES = 256


def _load_math_library() -> ctypes.CDLL:
    """glibc's libm by its usual name, else whatever ctypes.util finds (which runs
    ldconfig in a subprocess: milliseconds of every start)."""
    try:
        return ctypes.CDLL("libm.so.6")
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("m") or find_library("c"))


def _math_library() -> ctypes.CDLL | None:
    """The C library holding ``fegetenv``/``fesetenv``, or None where there is none."""
    try:
        library = _load_math_library()
        library.fegetenv.argtypes = library.fesetenv.argtypes = [ctypes.c_void_p]
        return library
    except (OSError, AttributeError, TypeError):
        return None


_LIBRARY = _math_library()
_SESSION_ENVIRONMENT: ctypes.Array | None = None  # what creating a session left


def _current() -> ctypes.Array:
    environment = ctypes.create_string_buffer(_ENVIRONMENT_BYTES)
    assert _LIBRARY is not None
    _LIBRARY.fegetenv(environment)
    return environment


@contextlib.contextmanager
def creating_sessions() -> Iterator[None]:
    """Create sessions in the block; keep the environment they leave, restore the caller's."""
    global _SESSION_ENVIRONMENT
    if _LIBRARY is None:
        yield
        return
    saved = _current()
    try:
        yield
        left = _current()
        # ONNX Runtime sets the flags on the first session's creation only: keep what changed.
        if left.raw != saved.raw:
            _SESSION_ENVIRONMENT = left
    finally:
        _LIBRARY.fesetenv(saved)


@contextlib.contextmanager
def running_sessions() -> Iterator[None]:
    """Run sessions in the block under the kept environment; then restore the caller's."""
    if _LIBRARY is None or _SESSION_ENVIRONMENT is None:
        yield
        return
    saved = _current()
    _LIBRARY.fesetenv(_SESSION_ENVIRONMENT)
    try:
        yield
    finally:
        _LIBRARY.fesetenv(saved)
