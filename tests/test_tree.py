"""The tree's rules (docs/architecture.md §1), checked on the source so they stay true.

- A stage (a subpackage) is used only through its face: no module imports another package's
  private module, and no name starting with `_` is imported from another module.
- Dependencies between stages point one way: the graph of package imports has no cycle, and the
  vocabulary modules at the top import no stage.
- No module is over about 350 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cio_worker"
#: The public faces at the top: they re-export stages, so they may import them.
TOP_FACES = {"__init__", "__main__", "aio", "deadletter", "testing"}
MAX_LINES = 360  # "about 350": a module this long is two modules


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield ".".join(("cio_worker", *parts)), path


def stage_of(module: str) -> str:
    """`cio_worker.queue._ledger` -> `queue`; a top-level module is its own name."""
    return module.split(".")[1]


def imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported module, names) of every `import`/`from ... import` of cio_worker."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "cio_worker":
                yield node.lineno, node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "cio_worker":
                    yield node.lineno, alias.name, []


def is_package(module: str) -> bool:
    return (PACKAGE / Path(*module.split(".")[1:]) / "__init__.py").exists()


def is_module(package: str, name: str) -> bool:
    return (PACKAGE / Path(*package.split(".")[1:]) / f"{name}.py").exists()


def test_stages_are_used_only_through_their_faces() -> None:
    broken = []
    for module, path in modules():
        here = stage_of(module) if is_package(".".join(module.split(".")[:2])) else None
        for line, target, names in imports(path):
            parts = target.split(".")
            where = f"{path.relative_to(PACKAGE)}:{line}"
            if any(part.startswith("_") for part in parts[2:]) and parts[1] != here:
                broken.append(f"{where} imports the private module {target}")
            for name in names:
                if not name.startswith("_") or name == "__version__":
                    continue
                # A stage's own modules may name each other (`from cio_worker.cli import
                # _output`); a private function or constant stays in its module.
                if not (parts[1] == here and is_module(target, name)):
                    broken.append(f"{where} imports the private name {name} from {target}")
    assert broken == []


def test_stage_dependencies_have_no_cycle_and_vocabulary_imports_no_stage() -> None:
    edges: dict[str, set[str]] = {}
    vocabulary_breaches = []
    for module, path in modules():
        source = stage_of(module) if len(module.split(".")) > 1 else "__init__"
        for line, target, _ in imports(path):
            parts = target.split(".")
            if len(parts) < 2:
                continue
            dest = parts[1]
            dest_is_stage = is_package(f"cio_worker.{dest}")
            source_is_stage = is_package(f"cio_worker.{source}")
            if not source_is_stage and source not in TOP_FACES and dest_is_stage:
                vocabulary_breaches.append(f"{module}:{line} imports the stage {dest}")
            if source_is_stage and dest_is_stage and dest != source:
                edges.setdefault(source, set()).add(dest)
    assert vocabulary_breaches == []

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                return [*path[path.index(nxt) :], nxt]
            found = cycle_from(nxt, [*path, nxt])
            if found:
                return found
        return None

    cycles = [cycle for stage in sorted(edges) if (cycle := cycle_from(stage, [stage]))]
    assert cycles == []


def test_no_module_is_two_modules() -> None:
    long = {
        str(path.relative_to(PACKAGE)): lines
        for _, path in modules()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
