"""``emdeblur`` command line: one sub-command per job, each over the same core as the plugin.

Each sub-command lives in its own ``_cli_<name>.py`` module exposing ``add_parser(subparsers)``
(which registers the sub-command and sets ``func``) so that the pieces stay small and separate.
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
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="emdeblur",
        description="Focus QC and GRAN deblurring of electron-microscopy sections.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"napari_emdeblur._cli_{name}")
        except ModuleNotFoundError as e:  # a sub-command not built yet
            if e.name == f"napari_emdeblur._cli_{name}":
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":  # pragma: no cover
    # `python -m napari_emdeblur.cli`: run the package module's main so that the CLIError the
    # sub-commands raise (napari_emdeblur.cli.CLIError) is the class caught here
    from napari_emdeblur.cli import main as _package_main

    sys.exit(_package_main())
