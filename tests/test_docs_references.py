"""Every reference in the code's docstrings and comments, and in the docs, resolves in the repo.

Docstrings, comments and the pages in docs/ point readers at files (`docs/design.md`,
`cio_worker/queue/_ledger.py`, `ledger.py`), at modules and names (`cio_worker.queue.JobLedger`)
and at sections (`docs/design.md rule 5`, `customerio-api.md §6`, `failover.md, "WAIT"`). A move
or a rename that forgets one leaves a reader looking for something that is not there, so each
kind of reference is checked here, generically (nothing below lists today's paths):

- a path with a folder must exist, from the repository root when its first folder is one of the
  root's, from the referring page's folder for a Markdown link, or inside `cio_worker/` when its
  first folder is a subpackage (`queue/_ledger.py`); other paths belong to other projects
  (`kombu/connection.py`) and are left alone;
- a bare file name must name a file that exists: a `.py` cited by the package's own docstrings
  must be one of the package's modules (this is what finds the old flat names, `delivery.py`),
  one cited by a page must exist somewhere in the repository, and a `.md` in docs/ or at the
  root (other bare names, `prometheus.yml`, are the reader's own files);
- `cio_worker.a.b` must import, or be an attribute of what imports; Celery task names and logger
  names the code defines (`cio_worker.send_email`, `cio_worker.track_batch`) count as names;
- a section cited by number, rule or title must be a heading (or rule) of that page, and a
  Markdown link's `#anchor` one of its headings;
- nothing anywhere in the repository may point outside it at the sibling folder that held the
  specs and notes before they moved into the repository (it does not exist in a clone).

Each failure lists every broken reference as `file:line: reference (why)`.
"""

from __future__ import annotations

import ast
import importlib
import io
import re
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cio_worker"
DOCS = ROOT / "docs"
#: Folders that are not the project's own text: VCS data, environments, caches, build output.
SKIPPED_DIRS = frozenset(
    {".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist", ".data"}
)
#: Written in two pieces so that this file does not contain what it looks for.
OUTSIDE_FOLDER = "/".join(("..", "shared"))

_EXTENSIONS = r"(?:py|md|json|toml|conf|ya?ml|txt|png|cfg|ini|lua|sh)"
#: A file reference: optional `./` or `../` steps, folders, then a name with a known extension.
_FILE = re.compile(
    rf"(?<![\w/.\-*])((?:\.{{1,2}}/)*(?:[\w.\-]+/)*[\w\-][\w.\-]*\.{_EXTENSIONS})(?![\w/\-])"
)
#: `cio_worker.a.b`; not a pattern such as `cio_worker.enqueue_*` or `cio_worker.enqueue_<kind>`.
_MODULE = re.compile(r"(?<![\w.\-/])cio_worker(?:\.[A-Za-z_]\w*)+(?![\w*<])")
_URL = re.compile(r"(?:https?://|www\.|github\.com/|pypi\.org/)\S+")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
#: `x.md §6`, `x.md rule 5` / `rules 4 and 5`, `x.md, "Title"` (also `README, "Title"`).
_SECTION = re.compile(
    r"(?P<page>[\w./\-]*\.md|\bREADME)(?:'s)?,?\s+"
    r"(?:§(?P<number>\d+)|rules?\s+(?P<rule>\d+)|\"(?P<title>[^\"]+)\")"
)


@dataclass(frozen=True, slots=True)
class Text:
    """A piece of prose to check: where it is, and what it says."""

    path: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


# -- What is scanned ---------------------------------------------------------------------------
def _walk(top: Path) -> Iterator[Path]:
    for path in sorted(top.iterdir()):
        if path.is_dir():
            if path.name not in SKIPPED_DIRS and not path.name.endswith("_cache"):
                yield from _walk(path)
        elif path.is_file():
            yield path


@cache
def repository_files() -> tuple[Path, ...]:
    return tuple(_walk(ROOT))


def package_sources() -> list[Path]:
    roots = (PACKAGE, ROOT / "tests", ROOT / "bench")
    return [
        path
        for path in repository_files()
        if path.suffix == ".py"
        and any(root in path.parents for root in roots)
        and path != Path(__file__).resolve()  # its own docstrings show broken references
    ]


def doc_pages() -> list[Path]:
    pages = [path for path in repository_files() if path.suffix == ".md" and DOCS in path.parents]
    return [*pages, ROOT / "README.md"]


def python_prose(path: Path) -> Iterator[Text]:
    """Comments, docstrings (any string that is a statement of its own) and the `--` comments of
    Lua scripts kept in string constants."""
    source = path.read_text(encoding="utf-8")
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    layout = {tokenize.NL, tokenize.COMMENT}
    significant = [t for t in tokens if t.type not in layout]
    statement_starts = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
    for index, token in enumerate(significant):
        if token.type != tokenize.STRING:
            continue
        before = significant[index - 1].type if index else tokenize.NEWLINE
        after = significant[index + 1].type if index + 1 < len(significant) else tokenize.NEWLINE
        standalone = before in statement_starts and after in (tokenize.NEWLINE, tokenize.ENDMARKER)
        for offset, line in enumerate(token.string.splitlines()):
            if standalone:
                yield Text(path, token.start[0] + offset, line)
            elif "--" in line:
                yield Text(path, token.start[0] + offset, line.split("--", 1)[1])
    for token in tokens:
        if token.type == tokenize.COMMENT:
            yield Text(path, token.start[0], token.string)


def markdown_prose(path: Path) -> Iterator[Text]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        yield Text(path, number, line)


def all_prose() -> Iterator[Text]:
    for path in package_sources():
        yield from python_prose(path)
    for path in doc_pages():
        yield from markdown_prose(path)


@cache
def prose() -> tuple[Text, ...]:
    return tuple(all_prose())


# -- File references ---------------------------------------------------------------------------
@cache
def subpackages() -> frozenset[str]:
    return frozenset(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


@cache
def names_in(top: Path) -> frozenset[str]:
    return frozenset(path.name for path in repository_files() if top in path.parents)


def file_problem(ref: str, origin: Path) -> str | None:
    """Why `ref`, written in `origin`, does not resolve; None if it does (or is not ours)."""
    here = origin.parent
    if ref.startswith(("./", "../")):
        return None if (here / ref).exists() else "no such file from " + str(here.relative_to(ROOT))
    if "/" in ref:
        first = ref.split("/", 1)[0]
        if origin.suffix == ".md" and (here / ref).exists():
            return None
        if (ROOT / first).exists():
            return None if (ROOT / ref).exists() else "no such file in the repository"
        if first in subpackages():
            return None if (PACKAGE / ref).exists() else "no such module under cio_worker/"
        return None  # another project's path (kombu/connection.py, customerio/track.py)
    if ref.endswith(".md"):
        found = any((folder / ref).is_file() for folder in (DOCS, ROOT, here))
        return None if found else "no such page in docs/ or at the root"
    if ref.endswith(".py") and PACKAGE in origin.parents:
        return None if ref in names_in(PACKAGE) else "no module of that name under cio_worker/"
    if ref.endswith(".py"):
        return None if ref in names_in(ROOT) else "no file of that name in the repository"
    return None  # a bare `prometheus.yml` or `ca.crt` is the reader's own file


def file_references(text: Text) -> Iterator[str]:
    line = _URL.sub(" ", text.text)
    seen = set()
    if text.path.suffix == ".md":
        for target in _LINK.findall(line):
            path = target.split("#", 1)[0]
            if path and "://" not in path and not path.startswith("mailto:"):
                seen.add(path)
                yield path
    for match in _FILE.finditer(line):
        if match.group(1) not in seen:
            yield match.group(1)


# -- Module references -------------------------------------------------------------------------
@cache
def defined_names() -> frozenset[str]:
    """Dotted names the code gives things that are not modules: Celery task names (every kind's,
    and any `*TASK_NAME` constant) and logger names."""
    from cio_worker.kinds import Kind

    names = {kind.task_name for kind in Kind}
    for path in package_sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and (text := _text_of(node.value)) is not None:
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if any(target.endswith("TASK_NAME") for target in targets):
                    names.add(text)
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in ("get_logger", "getLogger") and (text := _text_of(node.args[0])):
                    names.add(text)
    return frozenset(names)


def _text_of(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


#: Django system-check ids (`cio_worker.E001`) name a check, not a module.
_CHECK_ID = re.compile(r"cio_worker\.[EWIC]\d{3}")


@cache
def module_problem(dotted: str) -> str | None:
    if dotted in defined_names() or _CHECK_ID.fullmatch(dotted):
        return None
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            target: object = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name) and exc.name != name:
                return f"no module {exc.name}"
            continue
        for attribute in parts[cut:]:
            try:
                target = getattr(target, attribute)
            except AttributeError:
                return f"{name} has no attribute {attribute!r}"
            name = f"{name}.{attribute}"
        return None
    return "no such module"


# -- Section references ------------------------------------------------------------------------
def headings(page: Path) -> list[str]:
    return [
        line.lstrip("#").strip()
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    ]


def _unnumbered(heading: str) -> str:
    """`6. Celery and kombu` -> `celery and kombu`: a title may be cited without its number."""
    return re.sub(r"^\d+\.\s+", "", heading).lower()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", ""))
    return text.replace(" ", "-")


def find_page(name: str, origin: Path) -> Path | None:
    if name == "README":
        name = "README.md"
    for candidate in (origin.parent / name, ROOT / name, DOCS / Path(name).name):
        if candidate.is_file():
            return candidate
    return None


def section_problems(text: Text) -> Iterator[str]:
    line = _URL.sub(" ", text.text)
    for match in _SECTION.finditer(line):
        page = find_page(match["page"], text.path)
        if page is None:
            continue  # a missing page is reported as a file reference
        titles = headings(page)
        if match["number"] is not None:
            if not any(re.match(rf"{match['number']}\.\s", title) for title in titles):
                yield f"{match.group(0)} (no section {match['number']} in {page.name})"
        elif match["rule"] is not None:
            body = page.read_text(encoding="utf-8")
            if f"**{match['rule']}. " not in body:
                yield f"{match.group(0)} (no rule {match['rule']} in {page.name})"
        elif not any(_unnumbered(t).startswith(match["title"].lower()) for t in titles):
            yield f"{match.group(0)} (no heading starting so in {page.name})"
    if text.path.suffix == ".md":
        for target in _LINK.findall(line):
            path, _, anchor = target.partition("#")
            if not anchor or "://" in path:
                continue
            page = (text.path.parent / path) if path else text.path
            if page.suffix == ".md" and page.is_file():
                if anchor not in {slug(title) for title in headings(page)}:
                    yield f"{target} (no heading with that anchor in {page.name})"


# -- The tests ---------------------------------------------------------------------------------
def report(problems: Iterable[str]) -> None:
    found = sorted(set(problems))
    if found:
        pytest.fail(f"{len(found)} broken reference(s):\n" + "\n".join(found), pytrace=False)


def test_file_references_resolve() -> None:
    report(
        f"{text.where}: {ref} ({why})"
        for text in prose()
        for ref in file_references(text)
        if (why := file_problem(ref, text.path)) is not None
    )


def test_module_references_import() -> None:
    report(
        f"{text.where}: {dotted} ({why})"
        for text in prose()
        for dotted in _MODULE.findall(_URL.sub(" ", text.text))
        if (why := module_problem(dotted)) is not None
    )


def test_section_references_name_a_heading() -> None:
    report(f"{text.where}: {problem}" for text in prose() for problem in section_problems(text))


def test_nothing_points_outside_the_repository() -> None:
    needle = OUTSIDE_FOLDER.encode()
    report(
        f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}"
        for path in repository_files()
        if needle in (content := path.read_bytes())
        for number, line in enumerate(content.decode("utf-8", "replace").splitlines(), start=1)
        if OUTSIDE_FOLDER in line
    )


def test_the_checks_catch_what_they_look_for() -> None:
    """The resolvers fail on made-up references and pass on real ones (a check that can never
    fail would pass this whole file)."""
    module = PACKAGE / "keys.py"
    assert file_problem("delivery_that_never_was.py", module) is not None
    assert file_problem("queue/_nothing_here.py", module) is not None
    assert file_problem("docs/no-such-page.md", module) is not None
    assert file_problem("kombu/connection.py", module) is None
    assert file_problem("keys.py", module) is None
    assert module_problem("cio_worker.no_such_module") is not None
    assert module_problem("cio_worker.keys.no_such_function") is not None
    assert module_problem("cio_worker.keys.job") is None
    from cio_worker.kinds import Kind

    kinds = {kind.task_name for kind in Kind}
    assert defined_names() - kinds, "no task or logger name found beyond the kinds' task names"
    assert all(module_problem(name) is None for name in defined_names() | kinds)
    page = Text(ROOT / "README.md", 1, 'see docs/design.md rule 999 and design.md, "No such part"')
    assert len(list(section_problems(page))) == 2
