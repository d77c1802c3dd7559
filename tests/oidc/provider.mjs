// A small, real OpenID provider (panva/oidc-provider 9.13.3) for imagegate's
// test-suite. It issues RS256-signed JWT access tokens (typ at+jwt) via the
// client_credentials grant, with the configured resource as `aud` and extra
// `groups` / `email` claims taken from the client entry.
//
// Usage:  OIDC_CONFIG=/path/to/config.json node tests/oidc/provider.mjs [PORT]
//
// Port precedence: argv[2] > env OIDC_PORT > config.port.
// Prints exactly one line to stdout, `READY <issuer>`, once listening.
// Everything else (library notices and warnings, errors) goes to stderr.
// See README.md next to this file for the config shape.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

// stdout is reserved for the READY line: the library prints some notices with
// console.info, so route console.log/info/debug to stderr before loading it.
for (const name of ['log', 'info', 'debug']) {
  console[name] = (...args) => console.error(...args);
}

function fail(message) {
  process.stderr.write(`oidc test provider: ${message}\n`);
  process.exit(2);
}

const configPath = process.env.OIDC_CONFIG;
if (!configPath) fail('env OIDC_CONFIG must name the JSON config file');

let config;
try {
  config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
} catch (err) {
  fail(`cannot read OIDC_CONFIG ${configPath}: ${err.message}`);
}

const portRaw = process.argv[2] ?? process.env.OIDC_PORT ?? config.port;
const port = Number.parseInt(String(portRaw), 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  fail(`invalid port ${JSON.stringify(portRaw)} (give it as the first argument, env OIDC_PORT or config.port)`);
}
const host = '127.0.0.1';
if (config.issuer !== undefined && new URL(config.issuer).pathname !== '/') {
  fail(`issuer ${config.issuer} must have no path (the provider is mounted at /)`);
}

const { resource } = config;
if (typeof resource !== 'string' || !resource) fail('config.resource must be a non-empty string');

const scopes = config.scopes ?? [];
if (!Array.isArray(scopes) || !scopes.every((s) => typeof s === 'string' && s && !s.includes(' '))) {
  fail('config.scopes must be a list of scope strings');
}

const keys = config.jwks?.keys;
if (!Array.isArray(keys) || keys.length === 0) fail('config.jwks.keys must hold at least one private RSA JWK');
for (const key of keys) {
  if (key.kty !== 'RSA' || !key.d) fail(`config.jwks key ${key.kid ?? '(no kid)'} is not a private RSA JWK`);
}

const clientEntries = config.clients ?? [];
if (!Array.isArray(clientEntries) || clientEntries.length === 0) fail('config.clients must be a non-empty list');
const clientsById = new Map();
for (const c of clientEntries) {
  if (!c.client_id || !c.client_secret) fail('every client needs client_id and client_secret');
  if (clientsById.has(c.client_id)) fail(`duplicate client_id ${c.client_id}`);
  clientsById.set(c.client_id, c);
}

const clients = clientEntries.map((c) => ({
  client_id: c.client_id,
  client_secret: c.client_secret,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  // oidc-provider accepts client_secret_basic and client_secret_post
  // interchangeably for either registered value; this is only metadata.
  token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_post',
  // Optional per-client allow-list; a listed (known) scope outside it is invalid_scope.
  ...(Array.isArray(c.scopes) ? { scope: c.scopes.join(' ') } : {}),
}));

const { default: Provider, errors } = await import('oidc-provider');

// Listen first so that port 0 works: the issuer then defaults to the real port.
let handler = (req, res) => { res.statusCode = 503; res.end(); };
const server = http.createServer((req, res) => handler(req, res));
await new Promise((resolve) => {
  server.once('error', (err) => fail(`cannot listen on ${host}:${port}: ${err.message}`));
  server.listen(port, host, resolve);
});
const issuer = config.issuer ?? `http://${host}:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: config.jwks,
  scopes: ['openid', 'offline_access', ...scopes],
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  clientAuthMethods: ['client_secret_post', 'client_secret_basic'],
  // Matches accessTokenTTL below; also silences the library's default-ttl notice.
  ttl: { ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 300 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== resource) {
          throw new errors.InvalidTarget(`unknown resource indicator ${resourceIndicator}`);
        }
        return {
          scope: scopes.join(' '),
          audience: resource,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  extraTokenClaims: async (ctx, token) => {
    const entry = clientsById.get(token.clientId);
    if (!entry) return undefined;
    const claims = {};
    if (entry.groups !== undefined) claims.groups = entry.groups;
    if (entry.email !== undefined) claims.email = entry.email;
    return claims;
  },
});

provider.on('server_error', (ctx, err) => {
  process.stderr.write(`oidc test provider: server_error ${err?.stack ?? err}\n`);
});

handler = provider.callback();
process.stdout.write(`READY ${issuer}\n`);

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
