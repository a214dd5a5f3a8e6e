"""The release's promises that a glance at the files can check: one version everywhere, an SPDX
license, classifiers that name the Pythons CI runs, and an sdist that ships what its tests read."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import Any

import pytest

import rate_limit_shield as rls

ROOT = Path(__file__).parent.parent
tomllib = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT: dict[str, Any] = PYPROJECT["project"]
SDIST: list[str] = PYPROJECT["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]


def test_the_version_is_the_installed_metadata() -> None:
    assert rls.__version__ == version("rate-limit-shield")


def test_the_console_script_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    (script,) = entry_points(group="console_scripts", name="rate-limit-shield")
    assert script.load()(["--version"]) == 0
    assert capsys.readouterr().out == f"rate-limit-shield {rls.__version__}\n"


def test_the_version_is_written_once_in_the_package() -> None:
    assert "version" not in PROJECT and PROJECT["dynamic"] == ["version"]
    source = PYPROJECT["tool"]["hatch"]["version"]["path"]
    assert source == "rate_limit_shield/__init__.py"
    written = (ROOT / source).read_text(encoding="utf-8")
    assert re.findall(r'^__version__ = "(.*)"$', written, flags=re.MULTILINE) == [rls.__version__]


def test_the_changelog_names_this_version_as_the_latest_release() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.MULTILINE)
    assert headings[:2] == ["Unreleased", rls.__version__]


def test_the_license_is_an_spdx_expression_with_its_file() -> None:
    assert PROJECT["license"] == "MIT"
    assert all((ROOT / path).is_file() for path in PROJECT["license-files"])
    # PEP 639: a license expression replaces the License :: classifiers.
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]


def test_the_python_classifiers_are_the_versions_ci_runs() -> None:
    """From requires-python's lowest up; CI runs the suite on the lowest and the highest."""
    prefix = "Programming Language :: Python :: 3."
    minors = sorted(
        int(c.removeprefix(prefix)) for c in PROJECT["classifiers"] if c.startswith(prefix)
    )
    assert PROJECT["requires-python"] == f">=3.{minors[0]}"
    assert minors == list(range(minors[0], minors[-1] + 1))
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for minor in (minors[0], minors[-1]):
        assert re.search(rf"^python3{minor}=\$\(python_of 3\.{minor} ", ci, flags=re.MULTILINE)


def shipped(path: str) -> bool:
    """Whether the sdist ships `path` (relative to the root): an include entry is it, holds it,
    or lies within it (a test reading `.ci/run` names the directory `.ci` first)."""
    return path == "pyproject.toml" or any(
        path == entry or path.startswith(f"{entry}/") or entry.startswith(f"{path}/")
        for entry in (include.removeprefix("/") for include in SDIST)
    )


def test_the_sdist_include_list_is_plain_paths() -> None:
    """`shipped` reads the entries as plain anchored paths; a glob would need more."""
    assert all(re.fullmatch(r"/[\w.\-/]+", include) for include in SDIST)


def in_root(string: str) -> bool:
    """Whether a string names a path under the root, such as "README.md" or "docs/guides"."""
    first = string.split("/")[0]
    return (
        re.fullmatch(r"[\w.\-/]+", string) is not None
        and first not in ("", ".", "..")
        and (ROOT / first).exists()
    )


TEST_SOURCES = sorted((ROOT / "tests").rglob("*.py"))


@pytest.mark.parametrize("source", TEST_SOURCES, ids=lambda source: source.name)
def test_the_sdist_ships_what_the_tests_import_and_read(source: Path) -> None:
    """Every module beside the tests that a test imports (their helpers), and every file or
    directory of the root a test names, is in the sdist, so its tests run there too."""
    imported: set[str] = set()
    strings: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
    helpers = [source.parent / f"{name}.py" for name in imported]
    paths = {helper.relative_to(ROOT).as_posix() for helper in helpers if helper.is_file()}
    paths |= {string for string in strings if in_root(string)}
    assert [path for path in sorted(paths) if not shipped(path)] == []
