"""Videos of evaluation episodes: every reason one cannot be written is found before any work,
and writing prints nothing but the result."""

import os
import pathlib

import numpy as np

from pompc_eqx.checkpoint import atomic_write


VIDEO_SUFFIXES = (".gif", ".mp4")
RENDERED_TASKS = ("dmc/", "hb/")


def video_problem(path: pathlib.Path, task: str, size: tuple[int, int]) -> str | None:
    """Why a video of `task` cannot be written to `path`, in one line, or None if it can.

    Cheap checks only (no simulator, no renderer); `render_problem` checks OpenGL.

    **Arguments:**
    - `path`: the video file; its suffix picks the format (`.gif` or `.mp4`).
    - `task`: the run's task name.
    - `size`: frame `(height, width)` in pixels.
    """
    if not task.startswith(RENDERED_TASKS):
        return f"{task} has no renderer: videos need a dmc/ or hb/ task (run without --video)"
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        return f"cannot write {path.name}: give a video file ending in .mp4 or .gif"
    if not path.parent.is_dir():
        return f"cannot write {path}: the folder {path.parent} does not exist"
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg

            imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError):
            return f"writing {path.name} needs ffmpeg: pip install imageio-ffmpeg (or write a .gif)"
        if size[0] % 2 or size[1] % 2:
            # H.264 in yuv420p halves both sizes for colour: odd sizes would be resized.
            return f"an .mp4 needs an even height and width, not {size[0]} x {size[1]}"
    return None


def render_problem(task: str, size: tuple[int, int]) -> str | None:
    """Why frames of `task` cannot be rendered here (e.g. no OpenGL backend), or None.

    Loads the task once and renders one frame (about a second for dm_control tasks).
    """
    import jax

    from pompc_eqx.envs.registry import make_env

    try:
        env = make_env(task, 1)
        env.reset(jax.random.key(0)[None])
        env.render(0, *size)
    except Exception as err:  # each OpenGL backend fails in its own way
        return (
            f"cannot render {task} ({type(err).__name__}: {err}); on a machine without a "
            "display set MUJOCO_GL=egl or MUJOCO_GL=osmesa"
        )
    return None


def write_video(path: pathlib.Path, frames: list[np.ndarray], fps: int) -> None:
    """Write RGB `frames` to `path` atomically (`.gif` loops forever).

    GIF stores frame times in hundredths of a second, so 30 fps plays at 33 fps.
    """
    import imageio.v3 as iio

    # imageio-ffmpeg starts ffmpeg with `preexec_fn=os.setpgrp` (so that Ctrl-C reaches only
    # Python), which makes subprocess call os.fork; with JAX's threads running that forks a
    # multithreaded process and JAX warns of deadlocks. Without it subprocess uses vfork.
    os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        options = {"plugin": "pillow", "duration": 1000 / fps, "loop": 0}
    else:
        # Frames are even-sized (`video_problem`), so no resizing to blocks of 16 is needed.
        options = {"plugin": "FFMPEG", "fps": fps, "macro_block_size": 2}
    with atomic_write(path, "wb") as f:
        iio.imwrite(f, np.stack(frames), extension=suffix, **options)
