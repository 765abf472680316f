"""Every command's options follow docs/cli.md (walks the real Typer/click command tree, not a list).

Rules checked for each visible option of each (sub)command:
  * names are lower case with hyphens (``--n-configs``; no ``--S``, no ``--nConfigs``, no ``_``);
  * banned spellings of documented concepts: ``--png``/``--strip``/``--figure`` (use ``--plot``),
    ``--n``/``--num``/``--samples`` (use ``--n-configs``), ``--output``/``-o`` for files (``--out``),
    ``--force`` (``--overwrite``), ``--no-resume`` (resume is opt-in);
  * ``--resume`` and ``--overwrite`` are flags that default to off;
  * ``--device`` defaults to ``auto``; ``--seed`` is an integer option;
  * ``--json`` is a flag; ``--progress/--no-progress`` defaults to the terminal rule (None).
Old spellings may stay one release as *hidden* options (a deprecation line on use); they are not
flagged. Commands whose owners are still converting them are in ``KNOWN_OFFENDERS`` with the owning
subsystem; the integrator shrinks that list as branches merge (an entry that no longer offends fails).
"""

from __future__ import annotations

import re

import pytest
import typer.main

from lftml.cli.main import app

NAME_RE = re.compile(r"^--[a-z0-9]+(-[a-z0-9]+)*$")
BANNED = {
    "--png": "--plot", "--strip": "--plot", "--figure": "--plot", "--n": "--n-configs", "--num": "--n-configs",
    "--samples": "--n-configs", "--output": "--out", "--force": "--overwrite", "--no-resume": "--resume",
}

#: (command path, option) -> owning subsystem. Shrink as the owners' branches land.
KNOWN_OFFENDERS: dict[tuple[str, str], str] = {}


def _commands(cmd, path=("lftml",)):
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


def _violations(path, cmd):
    out = []
    for p in getattr(cmd, "params", []):
        if getattr(p, "param_type_name", "") != "option" or getattr(p, "hidden", False):
            continue
        names = [*p.opts, *p.secondary_opts]
        for n in names:
            if n.startswith("--") and not NAME_RE.match(n):
                out.append((n, "not lower-case-with-hyphens"))
            if n in BANNED:
                out.append((n, f"use {BANNED[n]}"))
            if n == "-o" and "--out" not in names and "--observable" not in names:
                out.append((n, "file outputs are --out"))
        if "--resume" in names or "--overwrite" in names:
            if p.secondary_opts or p.default not in (False, None) or not p.is_flag:
                out.append((names[0], "must be an opt-in flag (default off)"))
        if "--device" in names and p.default != "auto":
            out.append(("--device", f"default must be auto, not {p.default!r}"))
        if "--json" in names and not p.is_flag:
            out.append(("--json", "must be a flag"))
        if "--seed" in names and getattr(getattr(p, "type", None), "name", "integer") != "integer":
            out.append(("--seed", "must be an integer"))
        if "--progress" in names and (p.default is not None or "--no-progress" not in names):
            # docs/cli.md: on when stderr is a terminal, off otherwise (a fixed default put bars into
            # redirected logs, or hid them in a terminal)
            out.append(("--progress", f"must be --progress/--no-progress with default None (terminal rule), "
                                      f"not {p.default!r}"))
    return out


ALL = [(" ".join(path), cmd) for path, cmd in _commands(typer.main.get_command(app))]


def test_the_walk_sees_every_subcommand():
    """Guards the walker itself: engine, rbm, diffusion and cl subcommands are all visited."""
    names = {p for p, _ in ALL}
    assert {"lftml hmc", "lftml langevin", "lftml analyze", "lftml demo"} <= names
    assert any(p.startswith("lftml rbm ") for p in names) and any(p.startswith("lftml diffusion ") for p in names)
    assert any(p.startswith("lftml cl ") for p in names)


@pytest.mark.parametrize("path,cmd", ALL, ids=[p for p, _ in ALL])
def test_options_follow_the_vocabulary(path, cmd):
    bad = [(opt, why) for opt, why in _violations(path, cmd) if (path, opt) not in KNOWN_OFFENDERS]
    assert not bad, f"{path}: " + "; ".join(f"{o} ({w})" for o, w in bad)


def test_known_offenders_still_offend():
    """An allow-list entry whose command now follows the vocabulary must be removed."""
    current = {(p, opt) for p, cmd in ALL for opt, _ in _violations(p, cmd)}
    stale = sorted(set(KNOWN_OFFENDERS) - current)
    assert not stale, f"remove from KNOWN_OFFENDERS: {stale}"


def test_the_checker_catches_what_it_is_for():
    """Self-test on a synthetic command: upper case, --png, --n, resume defaulting on, device cpu."""
    import typer as t

    probe = t.Typer()

    @probe.command()
    def bad(S: float = t.Option(1.0, "--S"), png: str = t.Option("", "--png"), n: int = t.Option(1, "--n"),
            resume: bool = t.Option(True, "--resume/--no-resume"), device: str = t.Option("cpu", "--device")):
        pass

    @probe.command()
    def other():
        pass

    group = typer.main.get_command(probe)
    found = {opt for opt, _ in _violations("probe bad", group.commands["bad"])}
    assert {"--S", "--png", "--n", "--resume", "--device", "--no-resume"} <= found


def test_diffusion_train_no_resume_is_a_hidden_deprecated_spelling(tmp_path):
    """`--no-resume` (resume used to be opt-out) still parses, says it is deprecated, and contradicts
    `--resume` in one line. Catches the alias being dropped (a usage error) or silently ignored."""
    from conftest import run_cli

    res = run_cli("diffusion", "train", "--data", tmp_path / "missing.h5", "--out", tmp_path / "m.pt", "--no-resume")
    assert res.exit_code == 2 and "deprecated" in res.stderr.lower() and "missing.h5" in res.stderr
    both = run_cli("diffusion", "train", "--data", tmp_path / "missing.h5", "--out", tmp_path / "m.pt",
                   "--no-resume", "--resume")
    assert both.exit_code == 2 and "contradict" in both.stderr
    assert not list(tmp_path.iterdir())


def test_help_and_the_command_tree_load_without_torch():
    """``lftml --help`` (and every subcommand's help) must not import torch: a module-level
    ``import torch`` in the CLI's start-up path costs ~2 s of CPU before each help text or one-line
    usage error. Catches such an import creeping back into lftml/__init__, lftml.devices or a
    command module."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from lftml.cli.main import main\n"
            "for argv in (['--help'], ['hmc', '--help'], ['diffusion', 'train', '--help'], ['rbm', 'train', '--help']):\n"
            "    try:\n"
            "        main(argv)\n"
            "    except SystemExit as e:\n"
            "        assert e.code in (0, None), e.code\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_version_flag_prints_the_package_version():
    """``lftml --version``: one line with the installed version, exit 0 (there was no such flag)."""
    from typer.testing import CliRunner

    import lftml

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"lftml {lftml.__version__}"
