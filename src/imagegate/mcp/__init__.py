"""The MCP face of imagegate: the tool table, thin tool functions, results, paid-call
confirmation by elicitation, middleware and auth glue. The only package that knows FastMCP."""
