"""What every sniper_d2 command-line tool shares: user errors end the program with one line.

Numpy only (the statistics and planning tools run without torch).
"""

import sys

__all__ = ["user_errors", "run_main"]


def user_errors():
    """Exception types that describe a problem with the user's inputs (config, data, files we wrote),
    each with a message naming the file and the problem."""
    from .coco import DatasetError
    from .config import ConfigError
    from .data.image_io import ImageReadError
    from .io import ArtifactError

    return (DatasetError, ArtifactError, ImageReadError, ConfigError, FileNotFoundError, KeyError)


def run_main(main_func, program, *args):
    """Call ``main_func(*args)``; a user error exits with ``<program>: error: <message>`` (status 1)."""
    try:
        return main_func(*args)
    except user_errors() as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError quotes its str()
        sys.exit(f"{program}: error: {message}")
