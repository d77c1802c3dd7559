"""The tool table: the only place a tool is declared.

Each entry names the function (its name, signature and docstring are the tool's), the
scope calling it needs, whether it takes a relay (then `relay:<name>` is needed too),
and its MCP annotations. The ACL middleware and the registration both read this table.

No tool declares an output schema: the image record's schema, copied onto the five
tools that return images, was more than half of tools/list. Results still carry
structured content (what models read); the README describes it.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp_types import ToolAnnotations

from imagegate.access.policy import ToolRule
from imagegate.access.scopes import ADMIN, DELETE, EDIT, GENERATE, JOBS, READ, SHARE, UPLOAD
from imagegate.mcp import tools

ToolFunction = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ToolSpec:
    function: ToolFunction
    scope: str | tuple[str, ...] | None
    """The scope calling it needs, or a tuple of which one is enough; None: any
    authenticated caller (the tool touches no image data)."""
    takes_relay: bool
    annotations: ToolAnnotations
    runs_as_job: bool = False
    """Runs as a job: a bounded wait, or an MCP task when the client asks for one."""
    shows_images: bool = False
    """Its results are images: hosts that render MCP Apps show them in the viewer."""

    @property
    def name(self) -> str:
        return self.function.__name__

    @property
    def rule(self) -> ToolRule:
        return ToolRule(self.scope, self.takes_relay)


_MAKES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)
_READS = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_DESTROYS = ToolAnnotations(destructive_hint=True, idempotent_hint=True)
_ISSUES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
_CANCELS = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
# Saving again with the same values changes nothing; replacing one's own preset is
# what the call asks for, not a side effect.
_SAVES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(tools.generate_image, GENERATE, True, _MAKES, runs_as_job=True, shows_images=True),
    ToolSpec(tools.edit_image, EDIT, True, _MAKES, runs_as_job=True, shows_images=True),
    # Only the caller's own jobs, which only these two scopes can start.
    ToolSpec(tools.get_job, JOBS, False, _READS, shows_images=True),
    ToolSpec(tools.cancel_job, JOBS, False, _CANCELS),
    ToolSpec(tools.list_jobs, JOBS, False, _READS),
    ToolSpec(tools.list_images, READ, False, _READS, shows_images=True),
    ToolSpec(tools.get_image, READ, False, _READS, shows_images=True),
    ToolSpec(tools.create_download_link, SHARE, False, _READS, shows_images=True),
    ToolSpec(tools.create_upload_link, UPLOAD, False, _ISSUES),
    ToolSpec(tools.revoke_links, SHARE, False, _ISSUES),
    ToolSpec(tools.delete_image, DELETE, False, _DESTROYS),
    ToolSpec(tools.verify_image, READ, False, _READS),
    ToolSpec(tools.get_usage, None, False, _READS),
    ToolSpec(tools.reset_usage, ADMIN, False, _DESTROYS),
    ToolSpec(tools.usage_report, ADMIN, False, _READS),
    ToolSpec(tools.list_relays, None, False, _READS),
    ToolSpec(tools.list_presets, None, False, _READS),
    # Presets are for the calls these two scopes make; save_preset checks its relay.
    ToolSpec(tools.save_preset, (GENERATE, EDIT), False, _SAVES),
    ToolSpec(tools.delete_preset, (GENERATE, EDIT), False, _DESTROYS),
    ToolSpec(tools.server_info, None, False, _READS),
)

RULES: dict[str, ToolRule] = {spec.name: spec.rule for spec in TOOLS}
"""Tool name -> what calling it needs; a name not here is refused."""
