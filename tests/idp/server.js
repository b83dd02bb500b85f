// A real OpenID provider for token-broker's tests: panva's oidc-provider, configured to behave
// like a Keycloak realm (paths, RS256 JWT access tokens with `azp`, refresh tokens on every code
// grant, `offline_access` without `prompt=consent`). Not a fake: every grant, PKCE check, nonce,
// rotation and revocation below is the library's own.
//
// Environment:
//   IDP_PORT                   port on 127.0.0.1 (default 0 = any free port)
//   IDP_REALM                  realm name in the paths (default "test")
//   IDP_ROTATE_REFRESH_TOKENS  "1": every client's refresh tokens rotate on use
//   IDP_EXIT_ON_STDIN_CLOSE    "1": exit when stdin closes (the test process that spawned us died)
//   IDP_ACCESS_TOKEN_TTL       access token lifetime in seconds (default 300)
//   IDP_ISSUER_PORT            port to put in the issuer URL, when a proxy forwards to us
//   IDP_EXTRA_REDIRECT_URIS    comma-separated redirect URIs added to the broker clients
//   IDP_OFFLINE_SESSION_IDLE_SECS  Keycloak's Offline Session Idle: an offline refresh token
//                              unused this long stops working ("Session not active"); 0 = never
//   IDP_OFFLINE_SESSION_MAX_SECS   Keycloak's Offline Session Max (with "Limited" on); 0 = off
// Accounts named admin-* carry the realm role token-broker-admin, as Keycloak would put it.
// Once listening it prints one JSON line to stdout: {"issuer": ..., "port": ...}.
//
// Test-only helpers live under /__test (signing arbitrary JWTs, counting grants); a production
// provider obviously has no such thing.

import express from 'express';
import * as jose from 'jose';
import Provider from 'oidc-provider';
import { createServer } from 'node:http';

const realm = process.env.IDP_REALM || 'test';
const rotateAll = process.env.IDP_ROTATE_REFRESH_TOKENS === '1';
const accessTokenTtl = Number(process.env.IDP_ACCESS_TOKEN_TTL || 300);
const offlineIdle = Number(process.env.IDP_OFFLINE_SESSION_IDLE_SECS || 0);
const offlineMax = Number(process.env.IDP_OFFLINE_SESSION_MAX_SECS || 0);
// Keycloak's SSO Session Idle, announced as refresh_expires_in for online refresh tokens.
const SSO_SESSION_IDLE = 1800;
const PASSWORD = 'password';
const RESOURCE = 'urn:token-broker:api';
const OIDC = '/protocol/openid-connect';

// Clients whose refresh tokens always rotate, so one provider serves both behaviours at once.
const ROTATING_CLIENTS = new Set(['token-broker-rotating']);

const extraRedirects = (process.env.IDP_EXTRA_REDIRECT_URIS || '').split(',').filter(Boolean);

const brokerClient = (clientId) => ({
  client_id: clientId,
  client_secret: 'broker-secret',
  // broker.test: the tests deliver the redirect themselves; 127.0.0.1/localhost: scripts/dev.
  redirect_uris: [
    'http://broker.test/api/auth/manager/offline-callback',
    'http://127.0.0.1:8080/api/auth/manager/offline-callback',
    'http://localhost:8080/api/auth/manager/offline-callback',
    'http://broker.test/admin/callback',
    ...extraRedirects,
  ],
  grant_types: ['authorization_code', 'refresh_token', 'client_credentials',
    'urn:ietf:params:oauth:grant-type:device_code'],
  response_types: ['code'],
  scope: 'openid profile email offline_access',
});

const clients = [
  brokerClient('token-broker'),
  brokerClient('token-broker-rotating'),
  {
    // The platform's frontend: signs users in and calls the broker with their access token.
    client_id: 'frontend',
    client_secret: 'frontend-secret',
    redirect_uris: ['http://frontend.test/callback'],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    scope: 'openid profile email offline_access',
  },
  {
    // A platform's job runner: a service account (client credentials), the kind of client a
    // consent can name as a delegate.
    client_id: 'job-runner',
    client_secret: 'job-runner-secret',
    redirect_uris: [],
    grant_types: ['client_credentials'],
    response_types: [],
    scope: 'openid',
  },
  {
    // The token-broker CLI: a public client using the device authorization grant.
    client_id: 'token-broker-cli',
    token_endpoint_auth_method: 'none',
    redirect_uris: [],
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    response_types: [],
    scope: 'openid profile email offline_access',
  },
];

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid: 'idp-rs256', alg: 'RS256', use: 'sig' };
// A second key with the same kid: tokens it signs must be rejected by anyone using our JWKS.
const { privateKey: foreignKey } = await jose.generateKeyPair('RS256', { extractable: true });

const events = [];
const record = (name) => (token) => events.push({
  event: name, clientId: token?.clientId, accountId: token?.accountId, at: Date.now(),
});

const app = express();
const server = createServer(app);
await new Promise((resolve) => server.listen(Number(process.env.IDP_PORT || 0), '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${process.env.IDP_ISSUER_PORT || port}/realms/${realm}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingJwk] },
  pkce: { required: () => true },
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: `${id}@example.test`, preferred_username: id }),
  }),
  claims: { openid: ['sub'], email: ['email'], profile: ['preferred_username'] },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  routes: {
    authorization: `${OIDC}/auth`,
    token: `${OIDC}/token`,
    userinfo: `${OIDC}/userinfo`,
    jwks: `${OIDC}/certs`,
    revocation: `${OIDC}/revoke`,
    introspection: `${OIDC}/token/introspect`,
    device_authorization: `${OIDC}/auth/device`,
    end_session: `${OIDC}/logout`,
    code_verification: '/device',
  },
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    // Keycloak issues JWT access tokens; oidc-provider does so for a resource server.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'openid profile email offline_access',
        audience: 'account',
        accessTokenTTL: accessTokenTtl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // Keycloak puts the requesting client in `azp`.
  extraTokenClaims: (_ctx, token) => ({
    azp: token.clientId,
    ...(String(token.accountId || '').startsWith('admin-')
      ? { realm_access: { roles: ['token-broker-admin', 'offline_access'] } }
      : {}),
  }),
  // Keycloak returns a refresh token for every code grant, offline or not.
  issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: (ctx) => rotateAll || ROTATING_CLIENTS.has(ctx.oidc.client.clientId),
  ttl: {
    AccessToken: accessTokenTtl,
    AuthorizationCode: 60,
    IdToken: 300,
    DeviceCode: 600,
    Interaction: 600,
    Session: 86400,
    Grant: 86400 * 30,
    RefreshToken: 86400 * 30,
    ClientCredentials: accessTokenTtl,
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.proxy = false;

provider.on('grant.success', (ctx) => {
  const e = ctx.oidc.entities;
  events.push({
    event: `grant.${ctx.oidc.params.grant_type}`,
    clientId: ctx.oidc.client?.clientId,
    accountId: e.Account?.accountId ?? e.AuthorizationCode?.accountId ?? e.RefreshToken?.accountId,
    at: Date.now(),
  });
});
provider.on('grant.error', (ctx, err) => events.push({
  event: `grant.error.${ctx.oidc.params?.grant_type}`,
  clientId: ctx.oidc.client?.clientId,
  error: err.error,
  at: Date.now(),
}));
provider.on('refresh_token.consumed', record('refresh_token.consumed'));
provider.on('refresh_token.destroyed', record('refresh_token.destroyed'));

// Keycloak honours offline_access without prompt=consent; oidc-provider drops the scope unless
// consent is prompted. Asking for consent here keeps the library's own checks and matches Keycloak.
app.use(`/realms/${realm}${OIDC}/auth`, (req, _res, next) => {
  const url = new URL(req.originalUrl, issuer);
  const scope = url.searchParams.get('scope') || '';
  if (req.method === 'GET' && url.searchParams.has('client_id') && scope.split(' ').includes('offline_access')) {
    const prompts = new Set((url.searchParams.get('prompt') || '').split(' ').filter(Boolean));
    prompts.add('consent');
    url.searchParams.set('prompt', [...prompts].join(' '));
    req.url = `${req.url.split('?')[0]}?${url.searchParams}`;
  }
  next();
});

// --- Keycloak's token endpoint, where it differs from oidc-provider -------------------------
//
// 1. A refresh token that was already rotated ("Revoke Refresh Token" on, max reuse 0) is
//    refused with invalid_grant "Stale token", and the session lives on: the newest token keeps
//    working. oidc-provider would instead revoke the whole grant (reuse detection).
// 2. Token responses carry refresh_expires_in: for online tokens the SSO Session Idle; for
//    offline tokens 0, unless Offline Session Max is limited, then min(idle, max left)
//    (keycloak/keycloak#8919).
// 3. Offline Session Idle and Max are enforced: invalid_grant "Session not active".
// Faults for tests (POST /__test/faults) are applied here too.

const lastUse = new Map(); // grantId -> ms of the last successful refresh
let faults = null;

const keycloakError = (res, error, description) => res.status(400).json({ error, error_description: description });
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
const isOffline = (scope) => String(scope || '').split(' ').includes('offline_access');

function takeFault(grantType) {
  if (!faults || !(faults.grantTypes || ['refresh_token']).includes(grantType)) return null;
  const fault = { ...faults };
  faults.count -= 1;
  if (faults.count <= 0) faults = null;
  return fault;
}

function refreshExpiresIn(body, presented) {
  if (!isOffline(body.scope)) return SSO_SESSION_IDLE;
  if (!offlineMax) return 0;
  const now = Math.floor(Date.now() / 1000);
  const started = presented?.iiat || presented?.iat || now;
  const left = Math.max(0, offlineMax - (now - started));
  return offlineIdle ? Math.min(offlineIdle, left) : left;
}

// Rewrites (or delays, or garbles) the provider's answer on its way out.
function shapeAnswer(res, { presented, fault, grantType }) {
  const end = res.end.bind(res);
  res.end = (chunk, ...rest) => {
    const finish = () => {
      if (fault?.answer === 'garbage') {
        res.statusCode = fault.status || 200;
        res.removeHeader('content-length');
        res.setHeader('content-type', 'text/html');
        return end('<html><body><h1>Bad Gateway</h1></body></html>');
      }
      const json = /json/.test(String(res.getHeader('content-type') || ''));
      if (res.statusCode === 200 && chunk && json) {
        try {
          const body = JSON.parse(chunk.toString());
          if (body.refresh_token) body.refresh_expires_in = refreshExpiresIn(body, presented);
          if (fault?.set) Object.assign(body, fault.set);
          if (grantType === 'refresh_token' && presented) lastUse.set(presented.grantId, Date.now());
          const text = JSON.stringify(body);
          res.setHeader('content-length', Buffer.byteLength(text));
          return end(text);
        } catch { /* not ours to fix */ }
      }
      return end(chunk, ...rest);
    };
    if (fault?.when === 'after' && fault.delayMs) setTimeout(finish, fault.delayMs);
    else finish();
    return res;
  };
}

app.post(`/realms/${realm}${OIDC}/token`, express.urlencoded({ extended: false }), async (req, res, next) => {
  try {
    const params = req.body || {};
    const fault = takeFault(params.grant_type);
    if (fault?.when === 'before' && fault.delayMs) await sleep(fault.delayMs);
    let presented;
    if (params.grant_type === 'refresh_token' && params.refresh_token) {
      presented = await provider.RefreshToken.find(String(params.refresh_token));
      // A refusal as another provider words it (e.g. invalid_request "Refresh token inactive",
      // or invalid_client with 401): the request is refused before anything is done.
      if (fault?.answer === 'error') {
        events.push({
          event: 'refresh_token.refused', clientId: presented?.clientId, accountId: presented?.accountId, at: Date.now(),
        });
        res.status(fault.status || 400).json({ error: fault.error, error_description: fault.description });
        return;
      }
      if (presented?.consumed) {
        events.push({
          event: 'refresh_token.reused', clientId: presented.clientId, accountId: presented.accountId, at: Date.now(),
        });
        keycloakError(res, 'invalid_grant', 'Stale token');
        return;
      }
      if (presented && isOffline(presented.scope)) {
        const nowMs = Date.now();
        const last = lastUse.get(presented.grantId) ?? presented.iat * 1000;
        const idleOut = offlineIdle && nowMs - last > offlineIdle * 1000;
        const maxOut = offlineMax && nowMs - (presented.iiat || presented.iat) * 1000 > offlineMax * 1000;
        if (idleOut || maxOut) {
          events.push({
            event: 'offline_session.ended', clientId: presented.clientId, accountId: presented.accountId, at: nowMs,
          });
          keycloakError(res, 'invalid_grant', 'Session not active');
          return;
        }
      }
    }
    shapeAnswer(res, { presented, fault, grantType: params.grant_type });
    next();
  } catch (err) { next(err); }
});

const page = (title, body) => `<!doctype html><html><head><title>${title}</title></head><body>${body}</body></html>`;
const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// The login form: username, password ("password" for everyone) and whether to grant
// offline_access. Submitting it logs in and consents in one step, so plain HTTP can drive it.
app.get('/interaction/:uid', async (req, res, next) => {
  try {
    const { uid, params } = await provider.interactionDetails(req, res);
    res.type('html').send(page('Sign in', `
      <h1>Sign in to ${escapeHtml(realm)}</h1>
      <p>${escapeHtml(params.client_id)} asks for: ${escapeHtml(params.scope)}</p>
      <form method="post" action="/interaction/${uid}/login">
        <input name="username" autofocus> <input name="password" type="password">
        <label><input type="checkbox" name="grant_offline" value="yes" checked> offline access</label>
        <button type="submit">Sign in</button>
      </form>`));
  } catch (err) { next(err); }
});

app.post('/interaction/:uid/login', express.urlencoded({ extended: false }), async (req, res, next) => {
  try {
    const details = await provider.interactionDetails(req, res);
    const { username, password } = req.body;
    if (!username || password !== PASSWORD) {
      res.status(400).type('html').send(page('Sign in', '<p id="error">Invalid username or password</p>'));
      return;
    }
    const requested = (details.params.scope || 'openid').split(' ');
    const granted = requested.filter((s) => s !== 'offline_access' || req.body.grant_offline === 'yes');
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: username, clientId: details.params.client_id });
    grant.addOIDCScope(granted.join(' '));
    grant.addResourceScope(RESOURCE, granted.join(' '));
    // A withheld scope is rejected explicitly, or the provider would ask for it again.
    const withheld = requested.filter((s) => !granted.includes(s));
    if (withheld.length) {
      grant.rejectOIDCScope(withheld.join(' '));
      grant.rejectResourceScope(RESOURCE, withheld.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, {
      login: { accountId: username },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  } catch (err) { next(err); }
});

app.post('/interaction/:uid/abort', async (req, res, next) => {
  try {
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  } catch (err) { next(err); }
});

// --- test-only helpers -------------------------------------------------------------------------

app.post('/__test/sign', express.json(), async (req, res, next) => {
  try {
    const { claims = {}, header = {}, foreign = false } = req.body;
    const jwt = await new jose.SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: signingJwk.kid, typ: 'JWT', ...header })
      .sign(foreign ? foreignKey : privateKey);
    res.json({ jwt });
  } catch (err) { next(err); }
});

// A user access token without a frontend, for trying the API with curl (scripts/dev, README).
app.post('/__test/user-token', express.json(), async (req, res, next) => {
  try {
    const sub = String(req.body?.sub || '');
    if (!/^[A-Za-z0-9._@-]{1,64}$/.test(sub)) {
      res.status(400).json({ error: 'invalid_request', message: 'sub: 1-64 of A-Z a-z 0-9 . _ @ -' });
      return;
    }
    const now = Math.floor(Date.now() / 1000);
    // Like Keycloak's, every token has its own `jti`, so two are never equal.
    const sign = () => new jose.SignJWT({
      iss: issuer, sub, aud: 'account', azp: 'frontend', typ: 'Bearer', scope: 'openid', iat: now, exp: now + 3600,
      jti: crypto.randomUUID(),
    }).setProtectedHeader({ alg: 'RS256', kid: signingJwk.kid, typ: 'JWT' }).sign(privateKey);
    // {"count": n} (bench/run's fresh-bearer load): n distinct tokens of the same user.
    const count = Number(req.body?.count ?? 0);
    if (!Number.isInteger(count) || count < 0 || count > 100000) {
      res.status(400).json({ error: 'invalid_request', message: 'count: 0-100000' });
      return;
    }
    if (count > 0) {
      const accessTokens = [];
      for (let i = 0; i < count; i += 1) accessTokens.push(await sign());
      res.json({ accessTokens, expiresIn: 3600 });
      return;
    }
    res.json({ accessToken: await sign(), expiresIn: 3600 });
  } catch (err) { next(err); }
});

app.get('/__test/events', (_req, res) => res.json(events));

// Faults on the token endpoint, for the next `count` requests of the given grant types:
// {"delayMs": 1500, "when": "after"|"before", "answer": "garbage", "status": 502,
//  "set": {"expires_in": 1e12}, "count": 1, "grantTypes": ["refresh_token"]}. "set" overwrites
// fields of a successful answer. "after" lets the provider act (rotate) and
// holds its answer back; "before" holds the request before the provider sees it.
app.post('/__test/faults', express.json(), (req, res) => {
  const body = req.body || {};
  faults = body.clear ? null : {
    when: 'after', delayMs: 0, count: Number.MAX_SAFE_INTEGER, ...body,
  };
  res.json({ faults });
});
app.get('/__test/ready', (_req, res) => res.json({ ok: true }));

app.use(`/realms/${realm}`, provider.callback());

// Whoever started us may read our address and close the pipe; later writes must not kill us.
process.stdout.on('error', () => {});
process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);

if (process.env.IDP_EXIT_ON_STDIN_CLOSE === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
process.on('SIGTERM', () => server.close(() => process.exit(0)));
