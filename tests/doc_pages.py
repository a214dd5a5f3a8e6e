"""The documentation as the tests read it: README.md, CHANGELOG.md and docs/**/*.md, their
fenced blocks, and the names of the package that they use.

Conventions of the pages: a block fenced ```python runs; one whose source holds
`redis://localhost:6379` runs against a real redis-server; output and shell are ```text,
```bash or ```console and do not run. A ```text block right after a ```python block (nothing
but blank lines between) shows the end of what that block prints.
"""

from __future__ import annotations

import importlib
import itertools
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

__all__ = [
    "DOCS",
    "REDIS_URL",
    "ROOT",
    "Block",
    "blocks",
    "dotted_names",
    "imported_names",
    "pages",
    "resolve",
]

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REDIS_URL = "redis://localhost:6379"
"""The Redis a page's example names; the tests swap in their own server's address."""

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    flags=re.MULTILINE | re.DOTALL,
)
_INLINE = re.compile(r"(?<!`)`([^`]+?)`(?!`)")  # may run over a line break, as Markdown's do
_FROM_IMPORT = re.compile(
    r"\bfrom\s+(rate_limit_shield(?:\.\w+)*)\s+import\s+(\([^)]*\)|[^\n]+)", flags=re.DOTALL
)
_IMPORT = re.compile(r"\bimport\s+(rate_limit_shield(?:\.\w+)*)")
_DOTTED = re.compile(r"(?<![\w.])(rls|rate_limit_shield)((?:\.\w+)+)")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts (for a test's id), its language and its source."""

    page: Path
    line: int
    language: str
    source: str
    output: str | None = None
    """The ```text block right after this one, if any: the end of what it prints."""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """README.md, CHANGELOG.md (which the site's changelog page includes), then every page of
    the docs site in path order."""
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]


def blocks(page: Path, language: str | None = None) -> list[Block]:
    """The page's fenced blocks (of one language, if given), dedented as their fence is."""
    text = page.read_text(encoding="utf-8")
    fences = list(_FENCE.finditer(text))
    found = []
    for match, following in itertools.zip_longest(fences, fences[1:]):
        info = match["info"].strip()
        block_language = info.split()[0] if info else ""
        if language is not None and block_language != language:
            continue
        output = None
        if (
            following is not None
            and following["info"].strip() == "text"
            and not text[match.end() : following.start()].strip()
        ):
            output = _source(following)
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(page, line, block_language, _source(match), output))
    return found


def _source(fence: re.Match[str]) -> str:
    return textwrap.dedent(fence["indent"] + fence["body"])


def _code(page: Path) -> list[str]:
    """Every piece of code on a page: its fenced blocks and its inline code spans."""
    text = page.read_text(encoding="utf-8")
    return [block.source for block in blocks(page)] + _INLINE.findall(_FENCE.sub("", text))


def imported_names(page: Path) -> set[tuple[str, str]]:
    """(module, name) for every `from rate_limit_shield... import name`, and (module, "") for
    every `import rate_limit_shield...`, in the page's code."""
    found: set[tuple[str, str]] = set()
    for code in _code(page):
        for module, names in _FROM_IMPORT.findall(code):
            for name in names.strip("()").split(","):
                name = name.split("#")[0].split(" as ")[0].strip()
                if name:
                    found.add((module, name))
        found.update((module, "") for module in _IMPORT.findall(code))
    return found


def dotted_names(page: Path) -> set[str]:
    """Every `rls.X.Y` or `rate_limit_shield.X.Y` in the page's code, spelt from the package."""
    return {
        "rate_limit_shield" + attributes
        for code in _code(page)
        for _, attributes in _DOTTED.findall(code)
    }


def resolve(dotted: str) -> object:
    """What a dotted name of the package means, as Python reads it: attribute by attribute,
    importing a submodule where no attribute has the name yet; failing that, its longest
    importable prefix, then attributes (`rate_limit_shield.breaker` is the decorator, which
    shadows the module of `rate_limit_shield.breaker.CircuitBreaker`). Raises ImportError or
    AttributeError for a name that does not exist."""
    parts = dotted.split(".")
    try:
        return _attributes(importlib.import_module(parts[0]), parts[1:])
    except AttributeError:
        cut = len(parts)
        while True:
            module = ".".join(parts[:cut])
            try:
                found = importlib.import_module(module)
                break
            except ModuleNotFoundError as error:
                if cut == 1 or not f"{module}.".startswith(f"{error.name}."):
                    raise  # a dependency missing inside a module that exists
                cut -= 1
        return _attributes(found, parts[cut:])


def _attributes(found: object, names: list[str]) -> object:
    for name in names:
        try:
            found = getattr(found, name)
        except AttributeError:
            if not isinstance(found, ModuleType):
                raise
            found = importlib.import_module(f"{found.__name__}.{name}")
    return found
