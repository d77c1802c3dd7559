"""MCP over plain HTTP, message by message, in either protocol era: for what the fastmcp
Client does not send (task-augmented calls, the tasks methods), so a test sees the
exact wire shapes a real client sends and gets."""

import json
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import httpx

TASKS = "io.modelcontextprotocol/tasks"
MODERN = "2026-07-28"
LEGACY = "2025-11-25"


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.code = error.get("code")


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC response in a JSON body or the last message of an SSE stream."""
    text = response.text
    if response.is_error and not text.startswith("{"):
        response.raise_for_status()
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [
            json.loads(line[5:])
            for line in text.splitlines()
            if line.startswith("data:") and line[5:].strip()
        ]
        answers = [message for message in messages if "id" in message]
        return answers[-1]
    answer: dict[str, Any] = json.loads(text)
    return answer


@dataclass
class Wire:
    url: str
    token: str
    era: str
    tasks: bool = True
    """2026-07-28: declare the tasks extension on each request."""
    session_id: str | None = None
    ids: "count[int]" = field(default_factory=lambda: count(1))

    @property
    def modern(self) -> bool:
        return self.era == MODERN

    def _headers(self, method: str, name: str | None) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        if self.modern:
            headers |= {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
            if name is not None:
                headers["Mcp-Name"] = name
        elif self.session_id is not None:
            headers |= {"MCP-Protocol-Version": LEGACY, "Mcp-Session-Id": self.session_id}
        return headers

    async def open(self, client: httpx.AsyncClient) -> None:
        """The handshake (2025-11-25 only)."""
        if self.modern:
            return
        capabilities = {"tasks": {"requests": {}}}
        response = await client.post(
            self.url,
            json={
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": LEGACY,
                    "capabilities": capabilities,
                    "clientInfo": {"name": "wire-test", "version": "0"},
                },
            },
            headers=self._headers("initialize", None),
        )
        _answer(response)
        self.session_id = response.headers["mcp-session-id"]
        await client.post(
            self.url,
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers=self._headers("notifications/initialized", None),
        )

    async def request(
        self,
        client: httpx.AsyncClient,
        method: str,
        params: dict[str, Any],
        name: str | None = None,
    ) -> dict[str, Any]:
        params = dict(params)
        if self.modern:
            capabilities = {"extensions": {TASKS: {}}} if self.tasks else {}
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": capabilities,
            }
        body = {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": params}
        answer = _answer(
            await client.post(self.url, json=body, headers=self._headers(method, name))
        )
        if "error" in answer:
            raise RpcError(answer["error"])
        result: dict[str, Any] = answer["result"]
        return result

    async def call_as_task(
        self, client: httpx.AsyncClient, tool: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"name": tool, "arguments": arguments}
        if not self.modern:
            params["task"] = {"ttl": 60_000}
        return await self.request(client, "tools/call", params, name=tool)
