"""Who is calling and what they may do: token checks (static, mapped, OIDC), the ACL and
every pure access decision (tool and relay scopes, ownership, admin, sharing, spending),
and the audit log. Knows nothing of MCP."""
