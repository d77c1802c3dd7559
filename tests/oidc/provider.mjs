// A small, real OpenID provider (panva/oidc-provider 9.13.3) for imagegate's
// test-suite. It issues RS256-signed JWT access tokens (typ at+jwt) for the
// configured resource:
//   - client_credentials: `sub` is the client, `groups` / `email` from the client entry;
//   - authorization code with PKCE (S256), after a login form checked against
//     `accounts`: `sub` is the account, `groups` / `email` from the account.
// Consent is granted without asking. A client's `extra_audiences` are added to its
// tokens' `aud`; its `audience_only` replaces the resource there.
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

const isStringList = (value) => Array.isArray(value) && value.every((s) => typeof s === 'string' && s);

const scopes = config.scopes ?? [];
if (!isStringList(scopes) || scopes.some((s) => s.includes(' '))) {
  fail('config.scopes must be a list of scope strings');
}

const keys = config.jwks?.keys;
if (!Array.isArray(keys) || keys.length === 0) fail('config.jwks.keys must hold at least one private RSA JWK');
for (const key of keys) {
  if (key.kty !== 'RSA' || !key.d) fail(`config.jwks key ${key.kid ?? '(no kid)'} is not a private RSA JWK`);
}

const accounts = new Map(Object.entries(config.accounts ?? {}));
for (const [id, account] of accounts) {
  if (typeof account?.password !== 'string' || !account.password) fail(`account ${id} needs a password`);
  if (account.groups !== undefined && !isStringList(account.groups)) fail(`account ${id}: groups must be a list of strings`);
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);

// RFC 8252 7.3: for an http loopback redirect URI any port matches. oidc-provider does
// that for `native` clients (any token_endpoint_auth_method, so confidential ones too).
function applicationType(redirectUris) {
  const loopback = (uri) => {
    const url = URL.parse(uri);
    return url?.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname);
  };
  return redirectUris.length > 0 && redirectUris.every(loopback) ? 'native' : 'web';
}

const clientEntries = config.clients ?? [];
if (!Array.isArray(clientEntries) || clientEntries.length === 0) fail('config.clients must be a non-empty list');
const clientsById = new Map();
for (const c of clientEntries) {
  if (!c.client_id || !c.client_secret) fail('every client needs client_id and client_secret');
  if (clientsById.has(c.client_id)) fail(`duplicate client_id ${c.client_id}`);
  for (const field of ['redirect_uris', 'post_logout_redirect_uris', 'extra_audiences']) {
    if (c[field] !== undefined && !isStringList(c[field])) fail(`client ${c.client_id}: ${field} must be a list of strings`);
  }
  if (c.audience_only !== undefined && (typeof c.audience_only !== 'string' || !c.audience_only)) {
    fail(`client ${c.client_id}: audience_only must be a non-empty string`);
  }
  if (c.audience_only !== undefined && c.extra_audiences !== undefined) {
    fail(`client ${c.client_id}: give extra_audiences or audience_only, not both`);
  }
  clientsById.set(c.client_id, c);
}

const clients = clientEntries.map((c) => {
  const redirectUris = c.redirect_uris ?? [];
  const codeFlow = redirectUris.length > 0;
  return {
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: codeFlow ? ['client_credentials', 'authorization_code'] : ['client_credentials'],
    redirect_uris: redirectUris,
    response_types: codeFlow ? ['code'] : [],
    ...(c.post_logout_redirect_uris ? { post_logout_redirect_uris: c.post_logout_redirect_uris } : {}),
    application_type: applicationType(redirectUris),
    // oidc-provider accepts client_secret_basic and client_secret_post
    // interchangeably for either registered value; this is only metadata.
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_post',
    // Optional per-client allow-list; a listed (known) scope outside it is invalid_scope.
    ...(Array.isArray(c.scopes) ? { scope: c.scopes.join(' ') } : {}),
  };
});

const { default: Provider, errors } = await import('oidc-provider');

// Listen first so that port 0 works: the issuer then defaults to the real port.
let handler = (req, res) => { res.statusCode = 503; res.end(); };
const server = http.createServer((req, res) => handler(req, res));
await new Promise((resolve) => {
  server.once('error', (err) => fail(`cannot listen on ${host}:${port}: ${err.message}`));
  server.listen(port, host, resolve);
});
const issuer = config.issuer ?? `http://${host}:${server.address().port}`;

// Access tokens live as long as their resource server says (300 s); this also
// silences the library's default-ttl notices.
const accessTokenTTL = (ctx, token) => token.resourceServer?.accessTokenTTL ?? 300;

const provider = new Provider(issuer, {
  clients,
  jwks: config.jwks,
  scopes: ['openid', 'offline_access', ...scopes],
  claims: { openid: ['sub'], email: ['email'], groups: ['groups'] },
  findAccount: async (ctx, id) => {
    const account = accounts.get(id);
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...extraClaims(account) }) };
  },
  // Cookies ignore ports: the app under test, on the same 127.0.0.1, must not see
  // (or overwrite) cookies named like its own.
  cookies: {
    keys: [crypto.randomBytes(32).toString('base64url')],
    names: { session: 'idp_session', interaction: 'idp_interaction', resume: 'idp_interaction_resume' },
  },
  clientAuthMethods: ['client_secret_post', 'client_secret_basic'],
  // Every code flow must use PKCE (S256, the only method oidc-provider 9 knows), the
  // confidential clients' too: the app under test must send it.
  pkce: { required: () => true },
  ttl: {
    ClientCredentials: accessTokenTTL,
    AccessToken: accessTokenTTL,
    AuthorizationCode: 60,
    IdToken: 300,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
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
    // A user's token (code flow) carries the account's claims; a client_credentials
    // token the client entry's.
    const entry = token.accountId !== undefined ? accounts.get(token.accountId) : clientsById.get(token.clientId);
    return entry ? extraClaims(entry) : undefined;
  },
  formats: {
    customizers: {
      // oidc-provider allows one audience per token; a client's extra audiences (a
      // token meant for LibreChat and imagegate both) are added here.
      jwt: async (ctx, token, jwt) => {
        const entry = clientsById.get(token.clientId);
        if (entry?.audience_only !== undefined) {
          jwt.payload.aud = entry.audience_only;
        } else if (entry?.extra_audiences?.length) {
          jwt.payload.aud = [jwt.payload.aud, ...entry.extra_audiences];
        }
      },
    },
  },
});

function extraClaims(entry) {
  const claims = {};
  if (entry.groups !== undefined) claims.groups = entry.groups;
  if (entry.email !== undefined) claims.email = entry.email;
  return claims;
}

provider.on('server_error', (ctx, err) => {
  process.stderr.write(`oidc test provider: server_error ${err?.stack ?? err}\n`);
});

// --- Interactions: a login form, then consent granted without asking. ---

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, clientId, { username = '', error = '' } = {}) {
  const alert = error ? `\n<p role="alert" id="error">${escapeHtml(error)}</p>` : '';
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in - test OpenID provider</title></head>
<body>
<main>
<h1>Sign in</h1>
<p>to continue to <strong>${escapeHtml(clientId)}</strong></p>${alert}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<p><label for="username">User name</label>
<input id="username" name="username" autocomplete="username" required value="${escapeHtml(username)}"></p>
<p><label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required></p>
<p><button type="submit">Sign in</button></p>
</form>
<form method="post" action="/interaction/${escapeHtml(uid)}/abort">
<p><button type="submit">Cancel</button></p>
</form>
</main>
</body>
</html>
`;
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16384) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function passwordMatches(given, expected) {
  const a = crypto.createHash('sha256').update(given).digest();
  const b = crypto.createHash('sha256').update(expected).digest();
  return crypto.timingSafeEqual(a, b);
}

// Grants what was asked for, as a consent screen where the user clicks "allow" would.
async function grantConsent(details) {
  const { prompt: { details: missing }, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, wanted] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, wanted.join(' '));
  }
  return grant.save();
}

async function interactions(req, res, path) {
  const [uid, action] = path;
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'interaction mismatch\n', 'text/plain');
  const clientId = details.params.client_id;
  if (req.method === 'GET' && action === undefined) {
    if (details.prompt.name === 'login') return send(res, 200, loginPage(uid, clientId));
    if (details.prompt.name === 'consent') {
      const grantId = await grantConsent(details);
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    return send(res, 400, `unsupported prompt ${details.prompt.name}\n`, 'text/plain');
  }
  if (req.method === 'POST' && action === 'login' && details.prompt.name === 'login') {
    const form = await readForm(req);
    const username = form.get('username') ?? '';
    const account = accounts.get(username);
    // Hash both sides so an unknown user costs the same as a wrong password.
    const ok = passwordMatches(form.get('password') ?? '', account?.password ?? '\0no account');
    if (!account || !ok) {
      return send(res, 200, loginPage(uid, clientId, { username, error: 'Wrong user name or password.' }));
    }
    return provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'abort') {
    const result = { error: 'access_denied', error_description: 'the user cancelled the login' };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }
  return send(res, 405, 'method not allowed\n', 'text/plain');
}

const providerCallback = provider.callback();
handler = async (req, res) => {
  const { pathname } = new URL(req.url, issuer);
  const parts = pathname.split('/');
  if (parts[1] !== 'interaction' || parts.length < 3 || parts.length > 4) {
    return providerCallback(req, res);
  }
  try {
    return await interactions(req, res, parts.slice(2));
  } catch (err) {
    // SessionNotFound (no or expired interaction cookie) and the like: say so, plainly.
    const status = err instanceof errors.OIDCProviderError ? err.statusCode : 500;
    if (status === 500) process.stderr.write(`oidc test provider: interaction error ${err?.stack ?? err}\n`);
    const reason = err.error_description ? `${err.message}: ${err.error_description}` : err.message;
    return send(res, status, `${reason}\n`, 'text/plain');
  }
};

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
// Before READY: a test may stop the provider as soon as it has read that line.
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.stdout.write(`READY ${issuer}\n`);
