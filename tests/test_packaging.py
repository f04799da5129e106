"""The repository as a whole: the install files agree, it stands on its own, the documented
tables are what the tools print, and the entry points unwind on SIGTERM and print warnings as one line."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cli
import tools
import utils

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENT = re.compile(r"^\s*-?\s*([A-Za-z0-9_.\-]+)\s*([<>=!~].*)?$")


def requirement_lines(lines):
    """{package: specifier} of requirement-like lines (comments and blanks ignored)."""
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        match = REQUIREMENT.match(line)
        if line and match:
            found[match.group(1).lower()] = (match.group(2) or "").replace(" ", "")
    return found


def conda_pip_section(text):
    """The lines of the `- pip:` list of a conda environment file."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    indent = len(lines[start + 1]) - len(lines[start + 1].lstrip())
    section = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        section.append(line)
    return section


def test_conda_env_lists_the_same_packages_as_requirements():
    pip_reqs = requirement_lines((ROOT / "requirements.txt").read_text().splitlines())
    conda_reqs = requirement_lines(conda_pip_section((ROOT / "asvfi.yaml").read_text()))
    assert pip_reqs == conda_reqs
    assert "torch" in pip_reqs and not pip_reqs["torch"].startswith("=="), \
        "requirements.txt gives torch a lower bound; the pin lives in the Makefile's TORCH"


def test_makefile_pins_torch_and_lets_it_be_overridden():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH \?= torch==\d+\.\d+\.\d+$", makefile, re.M)
    assert re.search(r"^TORCH_INDEX \?=", makefile, re.M)


def test_fixtures_used_by_the_tests_are_in_the_repository():
    used = set()
    for test_file in (ROOT / "tests").glob("*.py"):
        used |= set(re.findall(r"load_fixture\(\"([^\"]+)\"\)", test_file.read_text()))
    assert used, "the fixture tests load their data through compat.load_fixture"
    missing = sorted(name for name in used if not (ROOT / "tests" / "fixtures" / name).is_file())
    assert not missing


def test_benchmarks_parameter_table_is_what_the_params_tool_prints(capsys):
    assert tools.main(["params", "--models", "pervfi"]) == 0
    printed = capsys.readouterr().out
    assert "pervfi (default config): 8,667,545 trainable parameters" in printed  # the published network
    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 7 and "\n".join(table) in (ROOT / "BENCHMARKS.md").read_text()


def test_sigterm_unwinds_an_entry_point_so_no_temporary_file_is_left(tmp_path):
    """A cluster's time limit sends SIGTERM: the half-written file goes, the old one stays."""
    target = tmp_path / "report.csv"
    target.write_text("old")

    def killed_while_writing(tmp):
        Path(tmp).write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises during the sleep

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        cli.run_entry_point(lambda argv: utils.atomic_write(target, killed_while_writing))
    assert stopped.value.code == 128 + signal.SIGTERM
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"] and target.read_text() == "old"
    assert signal.getsignal(signal.SIGTERM) == before


def test_entry_point_warnings_print_as_one_line():
    """Our warnings name the file they are about; the source line that raised them says nothing to a user."""
    code = ("import warnings, cli; cli.run_entry_point(lambda argv: warnings.warn('clip.mp4: no audio stream')); "
            "warnings.warn('outside')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = done.stderr.splitlines()
    assert lines[0] == "warning: clip.mp4: no audio stream" and "UserWarning: outside" in lines[1]


class KilledWhileCollected:
    """Gets SIGTERM inside its __del__, as a DataLoader iterator shutting down its workers can."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # the handler's SystemExit is raised here, where Python ignores it


def test_a_sigterm_swallowed_by_a_destructor_still_stops_the_entry_point():
    def body(argv):
        KilledWhileCollected()  # collected at once
        time.sleep(5)
        return 0

    with pytest.raises(SystemExit) as stopped:
        cli.run_entry_point(body)
    assert stopped.value.code == 128 + signal.SIGTERM
