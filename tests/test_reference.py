"""The API reference: every public name has a docstring, and a reference page shows it.

The public modules are the package and the modules the reference pages render (`::: module`,
which shows the module's `__all__`). A name is shown where a page renders it, by its own path,
by its module, or (a class, a function or a module) by another path to the same object.
Docstrings are read from the source as the reference reads them: a class's or function's own,
a module's, or for a constant the string right after its assignment.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest
from doc_pages import DOCS, imported_names, pages, resolve

import rate_limit_shield

REFERENCE = DOCS / "reference"
_DIRECTIVE = re.compile(r"^::: (\S+)", flags=re.MULTILINE)
UNDOCUMENTED = {("rate_limit_shield", "__version__"): "the package's version"}
"""Names whose meaning the reference page states in prose instead of a docstring: a dunder
whose meaning every package shares."""


def directives() -> list[str]:
    """What the reference pages render, `::: path` by `::: path`."""
    return [
        path
        for page in sorted(REFERENCE.glob("*.md"))
        for path in _DIRECTIVE.findall(page.read_text(encoding="utf-8"))
    ]


def public_modules() -> list[str]:
    rendered = [path for path in directives() if isinstance(resolve(path), ModuleType)]
    return [rate_limit_shield.__name__, *rendered]


def public_names() -> list[tuple[str, str]]:
    return [
        (module, name)
        for module in public_modules()
        for name in importlib.import_module(module).__all__
    ]


def _identity(value: object) -> int | None:
    """What makes two paths one object: only classes, functions and modules have one."""
    if inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value):
        return id(value)
    return None


def _source(module: str) -> ast.Module:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    return ast.parse(Path(spec.origin).read_text(encoding="utf-8"))


def _statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """A module's top-level statements, those under `if`/`try` (TYPE_CHECKING, fallbacks) too."""
    found: list[ast.stmt] = []
    for statement in body:
        found.append(statement)
        if isinstance(statement, ast.If):
            found += _statements(statement.body + statement.orelse)
        elif isinstance(statement, ast.Try):
            found += _statements(statement.body + statement.orelse + statement.finalbody)
    return found


def docstring(module: str, name: str) -> str | None:
    """The docstring the reference shows for `module.name`, followed through imports; of an
    overloaded function, its implementation's (the last definition)."""
    statements = _statements(_source(module).body)
    found: list[str | None] = []
    for index, statement in enumerate(statements):
        if isinstance(statement, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            if statement.name == name:
                found.append(ast.get_docstring(statement))
        elif isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            if any(isinstance(target, ast.Name) and target.id == name for target in targets):
                after = statements[index + 1] if index + 1 < len(statements) else None
                is_string = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                found.append(str(after.value.value) if is_string else None)  # type: ignore[union-attr]
        elif isinstance(statement, ast.ImportFrom):
            for alias in statement.names:
                if (alias.asname or alias.name) == name:
                    found.append(_imported_docstring(module, statement, alias.name))
    assert found, f"{module}.{name} is in __all__ but defined nowhere in its source"
    return found[-1]


def _imported_docstring(module: str, statement: ast.ImportFrom, name: str) -> str | None:
    origin = importlib.util.resolve_name(
        "." * statement.level + (statement.module or ""), _package(module)
    )
    if _is_module(f"{origin}.{name}"):
        return ast.get_docstring(_source(f"{origin}.{name}"))
    return docstring(origin, name)


def _package(module: str) -> str:
    spec = importlib.util.find_spec(module)
    assert spec is not None
    return module if spec.submodule_search_locations is not None else module.rpartition(".")[0]


def _is_module(path: str) -> bool:
    try:
        return importlib.util.find_spec(path) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize(
    "module, name", public_names(), ids=[f"{module}.{name}" for module, name in public_names()]
)
def test_every_public_name_has_a_docstring(module: str, name: str) -> None:
    resolve(f"{module}.{name}")  # exported for real, optional extras' lazy names included
    if (module, name) in UNDOCUMENTED:
        return
    assert (docstring(module, name) or "").strip(), f"{module}.{name} has no docstring"


def test_the_reference_shows_every_public_name() -> None:
    shown_paths: set[tuple[str, str]] = set()
    shown_objects: set[int] = set()
    for path in directives():
        value = resolve(path)
        if isinstance(value, ModuleType):
            shown_paths |= {(path, name) for name in value.__all__}
            shown_objects |= {_identity(getattr(value, name)) for name in value.__all__} - {None}
        else:
            parent, _, name = path.rpartition(".")
            shown_paths.add((parent, name))
        if (identity := _identity(value)) is not None:
            shown_objects.add(identity)
    missing = [
        f"{module}.{name}"
        for module, name in public_names()
        if (module, name) not in shown_paths
        and _identity(getattr(importlib.import_module(module), name)) not in shown_objects
        and (module, name) not in UNDOCUMENTED
    ]
    assert not missing, f"no reference page renders {missing}"


def test_every_module_the_pages_import_from_has_a_reference_page() -> None:
    imported = {module for page in pages() for module, _ in imported_names(page)}
    assert imported - set(public_modules()) == set()


def test_no_page_renders_a_module_for_the_attribute_it_names() -> None:
    """`::: rate_limit_shield.retry` would render the module `retry`, not the decorator of that
    name that Python finds: such a page names the object by its own module instead."""
    ambiguous = [
        path
        for path in directives()
        if _is_module(path) and not isinstance(resolve(path), ModuleType)
    ]
    assert not ambiguous


def test_the_prose_states_what_no_docstring_can() -> None:
    package_page = (REFERENCE / "rate_limit_shield.md").read_text(encoding="utf-8")
    for (module, name), meaning in UNDOCUMENTED.items():
        assert f"`{name}`" in package_page and meaning in package_page, (module, name)


def test_the_docstring_reader_follows_imports_to_definitions() -> None:
    assert docstring("rate_limit_shield", "shielded") == inspect.getdoc(rate_limit_shield.shielded)
    assert docstring("rate_limit_shield", "testing") == rate_limit_shield.testing.__doc__
    assert docstring("rate_limit_shield.backends", "MEMORY")
    assert docstring("rate_limit_shield.backends", "RedisBackend")
