"""The repository as a whole: the install files agree, it stands on its own, and the documented
tables are what the tools print."""
import ast
import re
from pathlib import Path

import tools

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


def test_every_tools_command_describes_itself_in_a_whole_sentence():
    """`tools.py <command> --help` shows the first docstring line of bench/<command>.py, so that
    line must not stop mid-sentence."""
    cut = [path.name for path in sorted((ROOT / "bench").glob("[!_]*.py"))
           if not ast.get_docstring(ast.parse(path.read_text())).splitlines()[0].endswith(".")]
    assert not cut


def test_benchmarks_parameter_table_is_what_the_params_tool_prints(capsys):
    assert tools.main(["params", "--models", "pervfi"]) == 0
    printed = capsys.readouterr().out
    assert "pervfi (default config): 8,667,545 trainable parameters" in printed  # the published network
    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 7 and "\n".join(table) in (ROOT / "BENCHMARKS.md").read_text()
