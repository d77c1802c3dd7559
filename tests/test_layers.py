"""The layout's rules, checked on the source: data flows one way, and only `mcp/` (with
the composition root) knows FastMCP. README "Architecture" draws the same picture."""

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).parents[1] / "src" / "imagegate"

MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "clientconfig": {"core"},
    "storage": {"core"},
    "relays": {"core"},
    "config": {"core", "relays"},
    "access": {"core", "config"},
    "service": {"core", "config", "access", "relays", "storage"},
    "web": {"core", "config", "access", "service", "storage"},
    "mcp": {"core", "config", "access", "service", "relays", "storage", "web"},
}
"""Layer -> the layers below it that it may use. `server` and `cli` (the composition
root and the entry point) may use every layer."""

ENTRY_POINTS = {"server", "cli", "remote", "__main__", "__init__"}
FASTMCP = ("fastmcp", "mcp", "mcp_types")


def layer_of(path: Path) -> str:
    return path.relative_to(SOURCE).with_suffix("").parts[0]


def imports(path: Path) -> list[str]:
    """Absolute module names a file imports (imagegate and third-party alike)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            if node.module == "imagegate":
                names += [f"imagegate.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


MODULES = sorted(SOURCE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_data_flows_one_way(path: Path) -> None:
    layer = layer_of(path)
    if layer in ENTRY_POINTS:
        return
    allowed = MAY_IMPORT[layer] | {layer}
    used = {
        name.split(".")[1]
        for name in imports(path)
        if name.startswith("imagegate.") and name != "imagegate.__version__"
    }
    assert used <= allowed, f"{layer} may not import {sorted(used - allowed)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_only_mcp_knows_fastmcp(path: Path) -> None:
    if layer_of(path) in {"mcp", "server", "cli", "remote"}:
        return
    foreign = [name for name in imports(path) if name.split(".")[0] in FASTMCP]
    assert foreign == []


def test_every_module_is_in_a_known_layer() -> None:
    layers = {layer_of(path) for path in MODULES}
    assert layers <= set(MAY_IMPORT) | ENTRY_POINTS
