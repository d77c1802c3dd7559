"""The tool table: the only place a tool is declared.

Each entry names the function (its name, signature and docstring are the tool's), the
scope calling it needs, whether it takes a relay (then `relay:<name>` is needed too),
its MCP annotations, and whether it returns images (then it has the images output
schema). The ACL middleware and the registration both read this table.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp_types import ToolAnnotations

from imagegate.access.policy import ToolRule
from imagegate.access.scopes import ADMIN, DELETE, EDIT, GENERATE, READ, SHARE
from imagegate.mcp import tools

ToolFunction = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ToolSpec:
    function: ToolFunction
    scope: str | None
    """None: any authenticated caller (the tool touches no image data)."""
    takes_relay: bool
    annotations: ToolAnnotations
    returns_images: bool

    @property
    def name(self) -> str:
        return self.function.__name__

    @property
    def rule(self) -> ToolRule:
        return ToolRule(self.scope, self.takes_relay)


_MAKES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)
_READS = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_DESTROYS = ToolAnnotations(destructive_hint=True, idempotent_hint=True)

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(tools.generate_image, GENERATE, True, _MAKES, returns_images=True),
    ToolSpec(tools.edit_image, EDIT, True, _MAKES, returns_images=True),
    ToolSpec(tools.list_images, READ, False, _READS, returns_images=True),
    ToolSpec(tools.get_image, READ, False, _READS, returns_images=True),
    ToolSpec(tools.create_download_link, SHARE, False, _READS, returns_images=True),
    ToolSpec(tools.delete_image, DELETE, False, _DESTROYS, returns_images=False),
    ToolSpec(tools.get_usage, None, False, _READS, returns_images=False),
    ToolSpec(tools.reset_usage, ADMIN, False, _DESTROYS, returns_images=False),
    ToolSpec(tools.list_relays, None, False, _READS, returns_images=False),
    ToolSpec(tools.server_info, None, False, _READS, returns_images=False),
)

RULES: dict[str, ToolRule] = {spec.name: spec.rule for spec in TOOLS}
"""Tool name -> what calling it needs; a name not here is refused."""
