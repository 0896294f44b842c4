"""The ``commprof`` command line.  :func:`main` is the only place errors become exit codes."""
from __future__ import annotations

import sys

from commprof.errors import CommprofError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``commprof`` script."""
    from commprof.cli.app import app
    try:
        result = app(args=argv, prog_name="commprof", standalone_mode=False)
    except CommprofError as exc:
        print(f"commprof: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("commprof: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except _click_exceptions() as exc:
        exc.show()
        return exc.exit_code
    return int(result or 0)


def _click_exceptions():
    import click
    return (click.ClickException,)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
