// Test rig: a real OAuth 2.0 / OpenID Connect provider (npm oidc-provider 9.x) on
// http://127.0.0.1:PORT, tuned by a JSON config file (see tests/oidc.py for the keys).
//
//   node provider.mjs CONFIG.json [--port N] [--watch-stdin]
//
// PORT may also come from the environment (OIDC_RIG_PORT); 0 (the default) picks a free port.
// Prints "READY <issuer>" on stdout once listening. With --watch-stdin it exits when its standard
// input closes, so a killed test run leaves no provider behind.
//
// Besides the provider's own endpoints it serves a small admin API under /__rig/ (same port):
//   POST   /__rig/fault   {"kind", "count", "delay_ms", "path", "status", "body"}  queue faults
//   DELETE /__rig/fault                                                        clear them
//   POST   /__rig/revoke  {"account"} or {"grant_id"}           revoke grants and their tokens
//   GET    /__rig/stats   request counts per path, pending faults, grants per account, and how
//                         often each refresh token was presented (by a hash of it)
//   POST   /__rig/mint-refresh {"client_id", "count", "prefix", "scope"}  refresh tokens in bulk

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

import Provider, { errors } from 'oidc-provider';

function usage(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.stderr.write('usage: node provider.mjs CONFIG.json [--port N] [--watch-stdin]\n');
  process.exit(2);
}

const argv = process.argv.slice(2);
let configPath;
let port = Number(process.env.OIDC_RIG_PORT ?? 0);
let watchStdin = false;
for (let i = 0; i < argv.length; i += 1) {
  if (argv[i] === '--port') {
    port = Number(argv[i += 1]);
  } else if (argv[i] === '--watch-stdin') {
    watchStdin = true;
  } else if (configPath === undefined) {
    configPath = argv[i];
  } else {
    usage(`unexpected argument ${argv[i]}`);
  }
}
if (!configPath) usage('missing CONFIG.json');
if (!Number.isInteger(port) || port < 0 || port > 65535) usage('bad port');

const rig = JSON.parse(fs.readFileSync(configPath, 'utf8'));

// -- keys ------------------------------------------------------------------------------------

function generateJwks() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  return {
    keys: [
      { ...rsa.export({ format: 'jwk' }), kid: 'rig-rs256', alg: 'RS256', use: 'sig' },
      { ...ec.export({ format: 'jwk' }), kid: 'rig-es256', alg: 'ES256', use: 'sig' },
    ],
  };
}

// -- clients ---------------------------------------------------------------------------------

const DEFAULT_GRANTS = ['authorization_code', 'refresh_token', 'client_credentials'];

function clientMetadata(c) {
  const grantTypes = c.grant_types ?? DEFAULT_GRANTS;
  return {
    response_types: grantTypes.includes('authorization_code') ? ['code'] : [],
    ...c,
    grant_types: grantTypes,
  };
}

// -- resource servers (JWT access tokens) ----------------------------------------------------

const resourceServers = rig.resource_servers ?? {};

function resourceServerFor(indicator) {
  return resourceServers[indicator] ?? resourceServers['*'];
}

async function getResourceServerInfo(ctx, indicator) {
  const rs = resourceServerFor(indicator);
  if (!rs) throw new errors.InvalidTarget(`unknown resource indicator ${indicator}`);
  const format = rs.format ?? 'jwt';
  return {
    scope: rs.scope ?? '',
    audience: rs.audience ?? indicator,
    accessTokenTTL: rs.access_token_ttl,
    accessTokenFormat: format,
    ...(format === 'jwt' ? { jwt: { sign: { alg: rs.alg ?? 'ES256' } } } : {}),
  };
}

function extraTokenClaims(ctx, token) {
  const indicator = token.resourceServer?.identifier();
  const perResource = indicator ? resourceServerFor(indicator)?.extra_claims : undefined;
  const claims = { ...rig.extra_token_claims, ...perResource };
  return Object.keys(claims).length ? claims : undefined;
}

// -- grants: consent is automatic, and we remember them per account for /__rig/revoke ---------

const grantsByAccount = new Map(); // accountId -> Set(grantId)

function remember(accountId, grantId) {
  if (!grantsByAccount.has(accountId)) grantsByAccount.set(accountId, new Set());
  grantsByAccount.get(accountId).add(grantId);
}

async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const clientId = oidc.client.clientId;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(clientId);
  let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
  if (!grant) {
    grant = new oidc.provider.Grant({ accountId: oidc.session.accountId, clientId });
  }
  const oidcScopes = [...oidc.requestParamOIDCScopes];
  if (oidcScopes.length) grant.addOIDCScope(oidcScopes.join(' '));
  const claims = [...oidc.requestParamClaims];
  if (claims.length) grant.addOIDCClaims(claims);
  for (const [indicator, rs] of Object.entries(oidc.resourceServers ?? {})) {
    const scopes = [...oidc.requestParamScopes].filter((s) => rs.scopes.has(s));
    if (scopes.length) grant.addResourceScope(indicator, scopes.join(' '));
  }
  const id = await grant.save();
  remember(grant.accountId, id);
  return grant;
}

async function revokeGrant(provider, grantId) {
  await Promise.all([
    provider.AccessToken.revokeByGrantId(grantId),
    provider.RefreshToken.revokeByGrantId(grantId),
    provider.AuthorizationCode.revokeByGrantId(grantId),
    provider.DeviceCode.revokeByGrantId(grantId),
    provider.Grant.adapter.destroy(grantId),
  ]);
}

// -- provider configuration ------------------------------------------------------------------

const ttl = {
  AccessToken: 60,
  AuthorizationCode: 60,
  ClientCredentials: 60,
  DeviceCode: 300,
  IdToken: 60,
  Interaction: 300,
  RefreshToken: 3600,
  Session: 3600,
  Grant: 3600,
  ...rig.ttl,
};

// -- storage: an unbounded in-memory adapter ----------------------------------------------
// oidc-provider's development adapter is an LRU of 1000 entries: past a few hundred logins it
// silently forgets grants and refresh tokens (invalid_grant). Benchmarks hold thousands.
const stores = new Map();
class MapAdapter {
  constructor(name) {
    this.name = name;
    if (!stores.has(name)) stores.set(name, new Map());
    this.items = stores.get(name);
  }
  live(id) {
    const item = this.items.get(id);
    if (!item) return undefined;
    if (item.expiresAt && item.expiresAt <= Date.now()) { this.items.delete(id); return undefined; }
    return item;
  }
  async upsert(id, payload, expiresIn) {
    this.items.set(id, { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : 0 });
  }
  async find(id) { return this.live(id)?.payload; }
  async findByUid(uid) {
    for (const id of this.items.keys()) {
      const p = this.live(id)?.payload;
      if (p && p.uid === uid) return p;
    }
    return undefined;
  }
  async findByUserCode(userCode) {
    for (const id of this.items.keys()) {
      const p = this.live(id)?.payload;
      if (p && p.userCode === userCode) return p;
    }
    return undefined;
  }
  async consume(id) {
    const item = this.live(id);
    if (item) item.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { this.items.delete(id); }
  async revokeByGrantId(grantId) {
    for (const items of stores.values()) {
      for (const [id, item] of items) {
        if (item.payload && item.payload.grantId === grantId) items.delete(id);
      }
    }
  }
}

const rigFeatures = rig.features ?? {};
const configuration = {
  adapter: MapAdapter,
  clients: (rig.clients ?? []).map(clientMetadata),
  jwks: rig.jwks ?? generateJwks(),
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: rig.scopes ?? ['openid', 'offline_access', 'profile', 'email'],
  claims: { openid: ['sub'], profile: ['name'], email: ['email'] },
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, name: sub, email: `${sub}@example.org` }),
  }),
  pkce: { required: () => rig.pkce_required ?? true },
  issueRefreshToken: async (ctx, client) => (rig.issue_refresh_tokens ?? true)
    && client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => rig.rotate_refresh_tokens ?? true,
  expiresWithSession: async () => rig.expires_with_session ?? false,
  loadExistingGrant,
  extraTokenClaims,
  ttl,
  features: {
    ...rigFeatures,
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true, ...rigFeatures.deviceFlow },
    introspection: { enabled: true, ...rigFeatures.introspection },
    revocation: { enabled: true, ...rigFeatures.revocation },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf ?? rig.default_resource ?? undefined,
      useGrantedResource: async () => true,
      getResourceServerInfo,
    },
  },
};

// -- the HTTP server: bound first so that the issuer carries the real port ------------------

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;
const provider = new Provider(issuer, configuration);

const log = (line) => process.stdout.write(`${new Date().toISOString()} ${line}\n`);
provider.on('server_error', (ctx, err) => log(`server_error ${ctx.path}: ${err.stack}`));
provider.on('grant.revoked', (ctx, grantId) => log(`grant.revoked ${grantId}`));
for (const event of ['authorization.error', 'grant.error', 'introspection.error', 'revocation.error']) {
  provider.on(event, (ctx, err) => log(`${event} ${err.error}: ${err.error_detail ?? err.message}`));
}

// -- admin API and fault injection (in front of the provider's own routes) -------------------

const faults = []; // queue of {kind, path, delay_ms, status, body}
const requestCounts = {};
// sha256 prefix of each refresh token presented to the token endpoint -> how often: a count
// above one is a double redemption (and, with rotation, trips reuse detection).
const refreshUses = new Map();

function countRefreshUse(ctx) {
  const params = ctx.oidc?.params;
  if (ctx.path !== '/token' || params?.grant_type !== 'refresh_token') return;
  if (typeof params.refresh_token !== 'string') return;
  const h = crypto.createHash('sha256').update(params.refresh_token).digest('hex').slice(0, 16);
  refreshUses.set(h, (refreshUses.get(h) ?? 0) + 1);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function reply(ctx, status, body) {
  ctx.status = status;
  ctx.body = body;
}

const ERROR_CODES = { 429: 'slow_down', 503: 'temporarily_unavailable' };

async function admin(ctx) {
  const route = `${ctx.method} ${ctx.path}`;
  if (route === 'POST /__rig/fault') {
    const spec = await readJson(ctx.req);
    const kind = String(spec.kind ?? '');
    if (!/^([1-5]\d\d|slow|late|malformed|drop)$/.test(kind)) {
      return reply(ctx, 400, { error: `unknown fault kind ${JSON.stringify(spec.kind)}` });
    }
    const count = spec.count ?? 1;
    for (let i = 0; i < count; i += 1) {
      faults.push({
        kind,
        path: spec.path ?? '/token',
        delay_ms: spec.delay_ms ?? 2000,
        body: spec.body,
        retry_after: spec.retry_after,
      });
    }
    return reply(ctx, 200, { pending: faults.length });
  }
  if (route === 'DELETE /__rig/fault') {
    faults.length = 0;
    return reply(ctx, 200, { pending: 0 });
  }
  if (route === 'POST /__rig/revoke') {
    const spec = await readJson(ctx.req);
    let ids;
    if (spec.grant_id) {
      ids = [spec.grant_id];
    } else if (spec.account) {
      ids = [...(grantsByAccount.get(spec.account) ?? [])];
      grantsByAccount.delete(spec.account);
    } else {
      return reply(ctx, 400, { error: 'give "account" or "grant_id"' });
    }
    await Promise.all(ids.map((id) => revokeGrant(provider, id)));
    ids.forEach((id) => log(`rig revoked grant ${id}`));
    return reply(ctx, 200, { revoked: ids });
  }
  if (route === 'POST /__rig/mint-refresh') {
    // Grants and refresh tokens made server-side, as the token endpoint would after a login:
    // for benchmarks that need thousands of them (a browser login costs five requests).
    const spec = await readJson(ctx.req);
    const client = await provider.Client.find(spec.client_id);
    if (!client) return reply(ctx, 400, { error: 'unknown client_id' });
    const out = [];
    for (let i = 0; i < (spec.count ?? 1); i += 1) {
      const accountId = `${spec.prefix ?? 'user'}${i}`;
      const grant = new provider.Grant({ accountId, clientId: client.clientId });
      grant.addOIDCScope(spec.scope ?? 'openid');
      const grantId = await grant.save();
      remember(accountId, grantId);
      const rt = new provider.RefreshToken({
        accountId, client, grantId, scope: spec.scope ?? 'openid', gty: 'authorization_code',
        authTime: Math.floor(Date.now() / 1000),
      });
      out.push(await rt.save());
    }
    return reply(ctx, 200, { refresh_tokens: out });
  }
  if (route === 'GET /__rig/stats') {
    return reply(ctx, 200, {
      requests: requestCounts,
      pending_faults: faults.map((f) => ({ kind: f.kind, path: f.path })),
      grants: Object.fromEntries([...grantsByAccount].map(([a, s]) => [a, [...s]])),
      refresh_token_uses: {
        presented: [...refreshUses.values()].reduce((a, b) => a + b, 0),
        distinct: refreshUses.size,
        reused: Object.fromEntries([...refreshUses].filter(([, n]) => n > 1)),
      },
    });
  }
  return reply(ctx, 404, { error: `no admin route ${route}` });
}

provider.use(async (ctx, next) => {
  const started = Date.now();
  if (ctx.path.startsWith('/__rig/')) {
    await admin(ctx);
    log(`${ctx.method} ${ctx.path} -> ${ctx.status} (admin)`);
    return;
  }
  requestCounts[ctx.path] = (requestCounts[ctx.path] ?? 0) + 1;
  const index = faults.findIndex((f) => f.path === ctx.path);
  const fault = index === -1 ? undefined : faults.splice(index, 1)[0];
  if (fault) log(`fault ${fault.kind} on ${ctx.method} ${ctx.path}`);
  if (fault?.kind === 'drop') {
    ctx.req.socket.destroy();
    ctx.respond = false;
    return;
  }
  if (fault?.kind === 'malformed') {
    ctx.status = 200;
    ctx.type = 'application/json';
    ctx.body = '{"access_token": "eyJ0eXAiOi';
  } else if (fault && /^\d+$/.test(fault.kind)) {
    const status = Number(fault.kind);
    ctx.status = status;
    if (fault.retry_after !== undefined) ctx.set('Retry-After', String(fault.retry_after));
    ctx.body = fault.body ?? {
      error: ERROR_CODES[status] ?? 'server_error',
      error_description: `injected fault ${status}`,
    };
  } else {
    if (fault?.kind === 'slow') await sleep(fault.delay_ms);
    await next();
    countRefreshUse(ctx);
    // 'late': the request is processed (a refresh token rotated) before the answer is held
    // back, as when the network or the client stalls after the provider did its work.
    if (fault?.kind === 'late') await sleep(fault.delay_ms);
  }
  log(`${ctx.method} ${ctx.path} -> ${ctx.status} ${Date.now() - started}ms`);
});

server.on('request', provider.callback());

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (watchStdin) {
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}

process.stdout.write(`READY ${issuer}\n`);
