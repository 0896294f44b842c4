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
        from commprof.format.text import printable
        print(f"commprof: error: {printable(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("commprof: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except _usage_exceptions() as exc:  # bad flags or arguments: click's own short message
        exc.show()
        return exc.exit_code
    except _exit_exceptions() as exc:
        return int(getattr(exc, "exit_code", 1) or 0)
    return int(result or 0)


def _usage_exceptions() -> tuple[type, ...]:
    """Usage-error classes of the click that typer uses (typer >= 0.20 vendors its own)."""
    classes = []
    try:
        from typer._click.exceptions import ClickException as vendored
        classes.append(vendored)
    except ImportError:
        pass
    try:
        import click
        classes.append(click.ClickException)
    except ImportError:
        pass
    return tuple(classes)


def _exit_exceptions() -> tuple[type, ...]:
    import typer
    classes = [typer.Exit]
    try:
        import click
        classes.append(click.exceptions.Exit)
    except ImportError:
        pass
    return tuple(classes)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
