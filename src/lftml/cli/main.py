"""The ``lftml`` command. Subcommands live in sibling modules; this file wires them together and
turns :class:`lftml.errors.LftmlError` into a one-line message and exit status 2."""

from __future__ import annotations

import logging
import os
import sys

import typer
from typer.core import TyperGroup

from lftml.cli.common import UsageError, normalize_argv
from lftml.errors import LftmlError


def _usage_error(ctx: typer.Context, exc: UsageError) -> None:
    """A click usage error as one line (``error: ...; see 'lftml CMD --help'``), exit status 2."""
    where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
    typer.echo(f"error: {exc.format_message().strip()} (see '{where} --help')", err=True)
    ctx.exit(2)


class _Group(TyperGroup):
    """Top-level group: joins multi-value options (``--shape 32 32``) before click parses them."""

    def parse_args(self, ctx, args):  # type: ignore[override]
        try:
            return super().parse_args(ctx, normalize_argv(list(args)))
        except UsageError as exc:
            _usage_error(ctx, exc)

    def invoke(self, ctx):  # type: ignore[override]
        """User errors become one line on stderr and exit status 2 (also under CliRunner)."""
        try:
            return super().invoke(ctx)
        except LftmlError as exc:
            typer.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except UsageError as exc:  # a subcommand's bad option or value
            _usage_error(ctx, exc)
        except OSError as exc:  # an I/O failure no command turned into a message itself
            if isinstance(exc, BrokenPipeError) and _stdout_closed():
                _silence_stdout()  # stdout closed by its reader (`lftml analyze f.h5 | head -1`): not an error
                ctx.exit(0)
            from lftml.safeio import write_error

            typer.echo(f"error: {write_error(exc, getattr(exc, 'filename', None) or 'a file', 'access')}", err=True)
            ctx.exit(2)
        except MemoryError:
            typer.echo("error: out of memory; use a smaller lattice, fewer chains or a smaller batch", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:  # a command without its own interrupt message
            leaf = ctx.meta.get(_LEAF)
            if leaf is not None and any(p.name == "resume" for p in leaf.params):
                typer.echo("interrupted: the output file holds everything completed so far (continue with the same "
                           "command plus --resume)", err=True)
            else:
                typer.echo("interrupted: every output is written whole or not at all; rerun the command", err=True)
            ctx.exit(130)

    def resolve_command(self, ctx, args):  # type: ignore[override]
        """Also note the command that will run (through sub-groups: ``rbm train``) for the interrupt message."""
        name, cmd, rest = super().resolve_command(ctx, args)
        leaf, tail = cmd, list(rest)
        while hasattr(leaf, "get_command") and tail and not tail[0].startswith("-"):  # a group (typer vendors click)
            sub = leaf.get_command(ctx, tail[0])
            if sub is None:
                break
            leaf, tail = sub, tail[1:]
        ctx.meta[_LEAF] = leaf
        return name, cmd, rest


_LEAF = "lftml.command"  # ctx.meta key (meta is shared by a context and its children)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll reports an error on its write end)."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again on the
    closed pipe (the Python docs' recipe for SIGPIPE-free programs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


app = typer.Typer(
    name="lftml",
    cls=_Group,
    help="Lattice field theory meets machine learning: phi^4 engine, RBMs, diffusion models, complex Langevin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from lftml import __version__

        typer.echo(f"lftml {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Lattice field theory meets machine learning: phi^4 engine, RBMs, diffusion models, complex Langevin."""


def _register() -> None:
    from lftml.cli import engine, rbm, diffusion, complex_langevin, scan

    engine.register(app)
    scan.register(app)
    app.add_typer(rbm.app, name="rbm")
    app.add_typer(diffusion.app, name="diffusion")
    app.add_typer(complex_langevin.app, name="cl")


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from lftml.devices import keep_freed_memory

    keep_freed_memory()  # torch's MB-sized CPU buffers otherwise cost a page-fault storm per use
    try:
        app(args=argv, prog_name="lftml")
    except SystemExit as exc:
        if exc.code == 130:
            _exit_interrupted()
        raise


def _exit_interrupted() -> None:
    """Exit with status 130 after an interrupt the command has already cleaned up after.

    Under ``python -m`` CPython (3.11) ends the process with SIGINT, not with the status passed to
    ``sys.exit``, once a ``KeyboardInterrupt`` has passed out of any ``exec`` of a string, even one
    caught later: a SIGTERM landing in a dataclass being created by a lazy import (torch imports
    torch._dynamo on the first optimizer) made ``lftml rbm train`` exit -2 instead of 130 now and
    then. Every writer has released its lock and removed its temporary files by now, so the
    streams are flushed and the process leaves with ``os._exit(130)``.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(130)


if __name__ == "__main__":
    main()
