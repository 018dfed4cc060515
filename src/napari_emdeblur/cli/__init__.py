"""``emdeblur`` command line: one sub-command per job, each over the same core as the plugin.

Each sub-command lives in its own module of this package (``cli/<name>.py``) exposing
``add_parser(subparsers)`` (which registers the sub-command and sets ``func``), so that the pieces
stay small and separate; they import :class:`CLIError` from here, and this module imports them
only when the parser is built. ``python -m napari_emdeblur.cli`` runs :func:`main`.
Errors the user can act on (``CLIError``, ``ValueError``, ``OSError``, a damaged journal) end in
a one-line message on stderr (``emdeblur <command>: error: ...``, worded by
:func:`napari_emdeblur.io.errors.user_message`) and a non-zero exit code, never a traceback; so do
bad option values (``argument --tile: ...``, exit 2). Anything else is a bug: one line
``internal error ... (please report)`` and exit code 70. File names that are not valid UTF-8 are
printed with backslash escapes instead of crashing the output.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("score", "correct", "train", "demo", "watch", "batch")


class CLIError(Exception):
    """An error with a message meant for the user; exit code ``code``."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug, not a usage problem


def report_warnings(section) -> None:
    """Print what the reader converted or found suspicious in ``section`` (``metadata['warnings']``),
    one ``warning:`` line each on stderr: accepted input is never changed silently.
    """
    for w in section.metadata.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one line: ``emdeblur score: error: argument --tile: ...``."""

    def error(self, message: str):  # type: ignore[override]
        """Print one line naming the problem (and where help is) and exit with code 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _safe_streams() -> None:
    """Print undecodable file names (surrogate escapes) as backslash escapes, never crash."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            pass


def build_parser() -> argparse.ArgumentParser:
    """The ``emdeblur`` argument parser with every sub-command."""
    from .. import __version__

    parser = Parser(
        prog="emdeblur",
        description="Focus QC and GRAN deblurring of electron-microscopy sections.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``emdeblur`` with ``argv`` (default: the command line); returns the exit code."""
    import sqlite3

    from ..io.errors import user_message

    _safe_streams()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, bad options (the message is printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    prog = f"emdeblur {args.command}"
    try:
        rc = args.func(args)
    except CLIError as e:
        print(f"{prog}: error: {user_message(e)}", file=sys.stderr)
        return e.code
    except (ValueError, OSError) as e:
        print(f"{prog}: error: {user_message(e)}", file=sys.stderr)
        return 1
    except sqlite3.Error as e:  # the output folder's journal
        print(f"{prog}: error: output folder journal: {user_message(e)}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"{prog}: error: out of memory (try smaller tiles or batches, or a smaller input)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one line, no traceback, a distinct exit code
        print(f"{prog}: internal error: {type(e).__name__}: {user_message(e)} (please report this)",
              file=sys.stderr)
        return EXIT_INTERNAL
    return int(rc or 0)

