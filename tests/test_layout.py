"""The house's arrows point one way: server -> app -> ingest/stats -> store ->
windows/events, with no cycles (README, "Development")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "tophosts"

# A module may import modules of its own layer or below, never above.
# A name is a module or a package (all its modules but those named themselves):
# the feeders' pure parsers sit low, beside the decoder, so that settings can use them.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "windows", "asgi", "background", "durable", "gcpause"),
    ("events", "idempotency", "formats", "syslog.address", "syslog.framing", "syslog.header"),
    ("syslog.lines",),
    ("store",),
    ("metrics", "logs", "responses", "openapi", "config", "auth", "snapshot"),
    ("ingest", "stats", "routes", "syslog", "tail"),
    ("app",),
    ("server",),
    ("cli", "load", "__main__"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, name: str, anywhere: bool = True) -> set[str]:
    """The tophosts modules ``path`` imports: anywhere in it (function-local ones too),
    or only those imported at its top level, when the module is loaded."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree) if anywhere else tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tophosts.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
                target = f"tophosts.{module}" if module else "tophosts"
            elif node.module and (node.module == "tophosts" or node.module.startswith("tophosts.")):
                target = node.module
            else:
                continue
            found.add(target)
            # ``from tophosts import logs`` imports the module tophosts.logs.
            for alias in node.names:
                found.add(f"{target}.{alias.name}")
    return {f.removeprefix("tophosts.") for f in found if f != "tophosts"}


def layer(module: str) -> str:
    """The most specific name of LAYERS that holds ``module``."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in RANK:
            return ".".join(parts[:n])
    return module


GRAPH = {name: imports(path, name) for name, path in modules().items()}
# What loading a module loads: a package's factory may import its modules lazily.
LOADS = {name: imports(path, name, anywhere=False) for name, path in modules().items()}
KNOWN = set(GRAPH)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_a_module_imports_only_its_own_layer_or_below(module: str) -> None:
    assert layer(module) in RANK, f"{module} has no layer: add it to LAYERS"
    rank = RANK[layer(module)]
    above = sorted(dep for dep in GRAPH[module] if dep in KNOWN and RANK[layer(dep)] > rank)
    assert above == [], f"{module} imports {above}, from a higher layer"


def test_there_is_no_cycle() -> None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            pytest.fail("an import cycle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for dep in sorted(LOADS.get(module, ())):
            if dep in KNOWN and dep != module:
                visit(dep, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])
