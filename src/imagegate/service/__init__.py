"""What the tools do, without MCP: generate, edit (batches too), inputs, links, usage;
the pure policies beside them (quota limits, paid-call pricing)."""
