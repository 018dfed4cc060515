"""``emdeblur`` command line: one sub-command per job, each over the same core as the plugin.

Each sub-command lives in its own module of this package (``cli/<name>.py``) exposing
``add_parser(subparsers)`` (which registers the sub-command and sets ``func``), so that the pieces
stay small and separate; they import :class:`CLIError` from here, and this module imports them
only when the parser is built. ``python -m napari_emdeblur.cli`` runs :func:`main`.
Errors the user can act on (``CLIError``, ``ValueError``, ``OSError``) end in a one-line
message on stderr and a non-zero exit code, never a traceback.
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


def build_parser() -> argparse.ArgumentParser:
    """The ``emdeblur`` argument parser with every sub-command."""
    from .. import __version__

    parser = argparse.ArgumentParser(
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except CLIError as e:
        print(f"emdeblur {args.command}: error: {e}", file=sys.stderr)
        return e.code
    except (ValueError, OSError) as e:
        print(f"emdeblur {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"emdeblur {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)

