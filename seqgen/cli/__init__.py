"""The ``seqgen`` command line: parse, call the Python API, print.

The group is here; the commands every task shares (train, evaluate, export, bench) are in
``commands.py``, and each task's own command (``generate``, ``translate``) in its folder
(``seqgen.tasks.<task>.cli``), found through the task registry. Heavy imports (torch)
happen inside the commands, so ``seqgen --help`` is instant. Every
:class:`~seqgen.errors.SeqgenError` and usage error becomes one line on stderr with a
non-zero exit code; no traceback reaches the user.
"""

from __future__ import annotations

import logging
import sys

import click

from seqgen.cli import commands
from seqgen.errors import SeqgenError
from seqgen.memory import keep_freed_memory
from seqgen.task import registered_tasks
from seqgen.version import __version__

# click >= 8.2 reports a bare ``seqgen`` as this usage error whose message is the whole help.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class SeqgenGroup(click.Group):
    """A click group whose errors are one line on stderr, never a traceback, and whose task
    commands (``generate``, ``translate``, ...) come from the task registry, imported when
    asked for (click's lazy-loading group)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(
            [*super().list_commands(ctx), *(t.command for t in registered_tasks().values())]
        )

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        for task in registered_tasks().values():
            if task.command == name:
                return task.hook("command")
        return super().get_command(ctx, name)

    def main(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.WARNING, format="seqgen: %(levelname)s: %(message)s")
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)  # type: ignore[arg-type]
        except _NO_ARGS_IS_HELP as error:
            error.show()  # the help text as click prints it, not as an "error: Usage: ..." line
            sys.exit(error.exit_code)
        except click.ClickException as error:
            click.echo(f"seqgen: error: {error.format_message()}", err=True)
            sys.exit(error.exit_code)
        except SeqgenError as error:
            click.echo(f"seqgen: error: {error}", err=True)
            sys.exit(1)
        except (click.Abort, KeyboardInterrupt):
            click.echo("seqgen: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=SeqgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="seqgen")
def main() -> None:
    """Train, run and ship recurrent sequence models: generators, translators and
    classifiers."""


for _command in commands.COMMANDS:
    main.add_command(_command)


def run() -> None:
    """Console-script entry point. The command owns its process, so malloc may keep what
    it frees (:mod:`seqgen.memory`); a program that imports seqgen keeps its own settings."""
    keep_freed_memory()
    main()


if __name__ == "__main__":
    run()
