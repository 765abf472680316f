"""Reproduce the robustness table of docs/robustness.md (issue 10's closing figures).

    PYTHONPATH=src python scripts/fault_census.py

Runs the bad-input sweeps and the fault-injection tests with pytest and counts, from the outcomes,
how many bad inputs and faults were tried and how many broke the contract. Every bad-input case
asserts: exit 2, one ``error:`` line, no traceback, folder unchanged (so a failure is a traceback, a
leftover/corrupted file or a destroyed file); every fault case asserts one line, nothing corrupt,
and a bit-identical resume/rerun.
"""

from __future__ import annotations

import re
import subprocess
import sys

BAD = ["tests/test_engine_bad_input.py", "tests/test_bad_input_all_commands.py"]
FAULTS = ["tests/test_faults_engine.py", "tests/test_faults_writers.py", "tests/test_faults_samplers.py",
          "tests/test_cl_faults.py", "tests/test_scan_faults.py", "tests/test_diffusion_train_cli.py",
          "tests/test_safeio.py"]


def _run(files: list[str], select: str | None = None) -> dict[str, int]:
    cmd = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", "-rA", "--no-header"]
    if select:
        cmd += ["-k", select]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    summary = out.strip().splitlines()[-1] if out.strip() else ""  # e.g. "334 passed, 5 skipped in 60s"
    for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary):
        counts["error" if k.startswith("error") else k] += int(n)
    return counts


def main() -> None:
    bad = _run(BAD, "bad_input_is_one_line")
    faults = _run(FAULTS)
    print("| trials | tried | broke the contract | skipped here |")
    print("|---|---|---|---|")
    print(f"| bad inputs (all commands) | {bad['passed'] + bad['failed']} | {bad['failed'] + bad['error']} | {bad['skipped']} |")
    print(f"| faults (ENOSPC/EIO, SIGINT/SIGTERM, second writer, live reader) | {faults['passed'] + faults['failed']} "
          f"| {faults['failed'] + faults['error']} | {faults['skipped']} |")


if __name__ == "__main__":
    main()
