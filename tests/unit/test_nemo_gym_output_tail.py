"""ngym.nemo_gym_envs.output_tail: a server's output is read while it runs, so one that writes more than a pipe
holds (64 KiB on Linux) never blocks on it, and its last lines are there for the error message."""

from __future__ import annotations

import subprocess
import sys

from ngym.nemo_gym_envs.output_tail import OutputTail

CHATTY = "import sys\nfor i in range(20000): print(f'line {i} ' + 'x' * 60)\nprint('the end', flush=True)\n"


def test_a_chatty_process_runs_to_its_end_and_its_last_lines_are_kept() -> None:
    process = subprocess.Popen([sys.executable, "-c", CHATTY], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = OutputTail(process.stdout, "chatty", lines=3)
    assert process.wait(timeout=60) == 0  # about 1.4 MB written: blocked for good without a reader
    assert output.finished.wait(30)
    assert output.text().splitlines() == [f"line 19998 {'x' * 60}", f"line 19999 {'x' * 60}", "the end"]
    output.close()
    assert process.stdout.closed


def test_long_lines_are_cut_in_the_tail() -> None:
    process = subprocess.Popen([sys.executable, "-c", "print('y' * 10000)"], stdout=subprocess.PIPE)
    assert process.stdout is not None
    output = OutputTail(process.stdout, "long")
    process.wait(timeout=60)
    assert len(output.text(wait_s=30)) == 2000
