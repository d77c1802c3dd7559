// The command line a host builds from a .mcpb manifest, by the official code: the
// getMcpConfigForManifest of npm @anthropic-ai/mcpb, which its README says Claude for
// macOS and Windows uses to load bundles.
//
// usage: node mcpb_host.mjs PACKAGING_MCPB_DIR < {"manifest", "userConfig", "extensionPath"}
// prints the resolved mcp_config as JSON, or null when the host would not start it.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const require = createRequire(join(resolve(process.argv[2]), "package.json"));
const mcpb = await import(pathToFileURL(require.resolve("@anthropic-ai/mcpb")).href);
const { manifest, userConfig, extensionPath } = JSON.parse(readFileSync(0, "utf-8"));
const config = await mcpb.getMcpConfigForManifest({
  manifest,
  extensionPath,
  systemDirs: { HOME: "/home/someone", DESKTOP: "/home/someone/Desktop" },
  userConfig,
  pathSeparator: "/",
});
process.stdout.write(JSON.stringify(config ?? null) + "\n");
