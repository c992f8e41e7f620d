"""Off-screen rendering (videos of MuJoCo envs) on a machine without a display.

MuJoCo renders through the OpenGL backend named by MUJOCO_GL; unset, it uses GLFW, which
needs a display, and on a headless machine the first frame ends in mujoco.FatalError.
`choose_headless_gl` picks EGL or OSMesa there instead; applications call it (drl's main),
libraries do not, since it changes the process environment. Where rendering still fails,
`RenderError` says in one line what to install or set.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import traceback
import warnings
from collections.abc import Iterator, MutableMapping

from envs.errors import EnvError, first_line

LIBRARIES = {"egl": ("libEGL.so.1", "libEGL.so"), "osmesa": ("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so")}
"""The shared library each headless backend needs, by MUJOCO_GL name, in order of preference."""

ADVICE = (
    "install libegl1 (EGL: GPU or Mesa) or libosmesa6 (software), "
    "or set MUJOCO_GL to a backend that works here (egl, osmesa; glfw needs a display)"
)
_GL_CODE = (
    "/OpenGL/",
    "/glfw/",
    "/mujoco/egl/",
    "/mujoco/osmesa/",
    "/mujoco/glfw/",
    "/mujoco/rendering/",
    "/mujoco_rendering.py",
)
"""Where in a traceback an OpenGL failure comes from: PyOpenGL, GLFW, MuJoCo's GL contexts and
renderers, Gymnasium's MuJoCo renderer (not the MuJoCo envs themselves: their own errors are theirs)."""


def loadable(names: tuple[str, ...]) -> bool:
    """Whether one of the shared libraries `names` loads in this process."""
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def choose_headless_gl(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """On Linux with MUJOCO_GL unset and no display (neither DISPLAY nor WAYLAND_DISPLAY),
    set MUJOCO_GL, and PYOPENGL_PLATFORM to match, to egl if libEGL loads, else to osmesa if
    libOSMesa loads. Returns the backend it chose, None if it changed nothing."""
    if not sys.platform.startswith("linux") or environ.get("MUJOCO_GL"):
        return None
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    platform = environ.get("PYOPENGL_PLATFORM", "").lower()
    candidates = [platform] if platform in LIBRARIES else list(LIBRARIES)  # PyOpenGL's platform is set: keep it
    for backend in candidates:
        if loadable(LIBRARIES[backend]):
            environ["MUJOCO_GL"] = backend
            environ["PYOPENGL_PLATFORM"] = backend
            return backend
    return None


def is_render_failure(exc: BaseException) -> bool:
    """Whether `exc` is a failure of OpenGL: raised by PyOpenGL or GLFW, by or from within
    code that renders with OpenGL (`_GL_CODE`), or MuJoCo's FatalError (it fails that way
    when it has no OpenGL context)."""
    kind = type(exc)
    if kind.__module__.split(".")[0] in ("OpenGL", "glfw"):
        return True
    if kind.__module__.split(".")[0] == "mujoco" and kind.__name__ == "FatalError":
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return any(marker in frame.filename.replace("\\", "/") for frame in frames for marker in _GL_CODE)


class RenderError(EnvError):
    """An env's frames could not be rendered (for a video); the message says what to install or set."""


def render_error(env_id: str, exc: BaseException) -> RenderError:
    """The one-line RenderError for `exc`, a failure of OpenGL (`is_render_failure`) while rendering `env_id`."""
    summary = " ".join(first_line(exc).split())[:120]
    backend = os.environ.get("MUJOCO_GL")
    using = f"MUJOCO_GL={backend}" if backend else "MUJOCO_GL unset"
    return RenderError(f"cannot render {env_id}: OpenGL failed ({type(exc).__name__}: {summary}; {using}); {ADVICE}")


@contextlib.contextmanager
def render_failures(env_id: str) -> Iterator[None]:
    """Within it, a failure of OpenGL becomes `render_error`'s one line, and GLFW's own warnings
    (no display) stay quiet: that line says what to do."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="glfw")
        try:
            yield
        except Exception as exc:
            if is_render_failure(exc):
                raise render_error(env_id, exc) from exc
            raise
