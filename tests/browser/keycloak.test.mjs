// The broker's pages in headless Chromium against Keycloak itself (KEYCLOAK_URL, started by
// scripts/keycloak; scripts/test sets it): the realm operators copy (deploy/keycloak/realm-sbo.json),
// whose `token-broker` client is given this broker's redirect URIs through Keycloak's admin API.
// A user consents through Keycloak's real login page, with the client's "Consent required" off
// and on; an operator with the realm role signs in to /admin through it; a user without the
// role is refused.
//
// Without KEYCLOAK_URL these tests are skipped, unless REQUIRE_KEYCLOAK is set.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { artifacts, freePort, launchChromium, root, scratchDir, start, stopAll } from './harness.mjs';

const KEYCLOAK = process.env.KEYCLOAK_URL?.replace(/\/$/, '');
if (!KEYCLOAK && process.env.REQUIRE_KEYCLOAK) {
  throw new Error('REQUIRE_KEYCLOAK is set but KEYCLOAK_URL is not: run scripts/keycloak start');
}
const skip = KEYCLOAK ? false : 'KEYCLOAK_URL is not set (scripts/test sets it)';
const REALM = `${KEYCLOAK}/realms/sbo`;
// What the realm registers for the frontend and the broker (deploy/keycloak/realm-sbo.json).
const APP_REDIRECT = 'http://localhost:3000/cb';
const ADMIN_ROLE = 'token-broker-admin';

let base;
let browser;
let client; // the token-broker client's representation before the tests changed it
let changed = {}; // what the tests changed in it

// Keycloak's admin API, as the master realm's admin.
const admin = async (method, path, body) => {
  const form = new URLSearchParams({ grant_type: 'password', client_id: 'admin-cli', username: 'admin', password: 'admin' });
  const { access_token: token } = await (await fetch(`${KEYCLOAK}/realms/master/protocol/openid-connect/token`, { method: 'POST', body: form })).json();
  const response = await fetch(`${KEYCLOAK}/admin/realms/sbo${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${await response.clone().text()}`);
  return response.status === 200 ? response.json() : null;
};

const setClient = (changes) => {
  changed = { ...changed, ...changes };
  return admin('PUT', `/clients/${client.id}`, { ...client, ...changed });
};

// A new user of the realm (password = name), with `role` if given: its name and `sub`.
const newUser = async (prefix, role) => {
  const name = `${prefix}-${randomUUID().slice(0, 8)}`;
  await admin('POST', '/users', {
    username: name, enabled: true, email: `${name}@example.org`, emailVerified: true,
    firstName: 'Test', lastName: 'User', credentials: [{ type: 'password', value: name, temporary: false }],
  });
  const [user] = await admin('GET', `/users?username=${name}&exact=true`);
  if (role) {
    const roleRep = await admin('GET', `/roles/${role}`);
    await admin('POST', `/users/${user.id}/role-mappings/realm`, [roleRep]);
  }
  return { name, sub: user.id };
};

// Keycloak's real login page.
const signIn = async (page, name) => {
  try {
    await page.waitForSelector('input[name=username]', { timeout: 15000 });
  } catch (e) {
    throw new Error(`no login form at ${page.url()}: ${(await page.innerText('body'))?.replace(/\s+/g, ' ').slice(0, 400)}`);
  }
  await page.fill('input[name=username]', name);
  await page.fill('input[name=password]', name);
  await page.click('#kc-login');
};

// The frontend's sign-in in the browser (authorization code with PKCE): the user's bearer token.
const frontendToken = async (name) => {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const url = new URL(`${REALM}/protocol/openid-connect/auth`);
  for (const [k, v] of Object.entries({
    client_id: 'frontend', response_type: 'code', redirect_uri: APP_REDIRECT, scope: 'openid',
    state: 'app', code_challenge: challenge, code_challenge_method: 'S256',
  })) url.searchParams.set(k, v);
  const context = await browser.newContext();
  const page = await context.newPage();
  // No frontend runs here: its redirect is answered in the browser.
  await page.route(`${APP_REDIRECT}**`, (route) => route.fulfill({ status: 200, body: 'signed in' }));
  await page.goto(url.href);
  await signIn(page, name);
  await page.waitForURL(`${APP_REDIRECT}**`);
  const code = new URL(page.url()).searchParams.get('code');
  await context.close();
  const form = new URLSearchParams({
    grant_type: 'authorization_code', code, redirect_uri: APP_REDIRECT, code_verifier: verifier, client_id: 'frontend',
  });
  const tokens = await (await fetch(`${REALM}/protocol/openid-connect/token`, { method: 'POST', body: form })).json();
  assert.ok(tokens.access_token, JSON.stringify(tokens));
  return tokens.access_token;
};

const api = (path, token, init = {}) => fetch(`${base}${path}`, {
  ...init,
  headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers || {}) },
});

before(async () => {
  if (skip) return;
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  [client] = await admin('GET', '/clients?clientId=token-broker');
  await setClient({
    redirectUris: [...client.redirectUris, `${base}/api/auth/manager/offline-callback`, `${base}/admin/callback`],
  });
  await start(join(root, 'target', 'debug', 'token-broker'), ['serve'], {
    env: {
      PATH: process.env.PATH,
      NO_COLOR: '1',
      OIDC_ISSUER: REALM,
      OIDC_CLIENT_ID: 'token-broker',
      OIDC_CLIENT_SECRET: 'change-me-broker-secret',
      OIDC_AUTHORIZED_PARTIES: 'frontend',
      PROVIDER_REVOCATION: 'keycloak',
      PUBLIC_BASE_URL: base,
      BIND_ADDR: `127.0.0.1:${port}`,
      TOKEN_BROKER_DATA_DIR: scratchDir('tb-browser-kc-'),
      TOKEN_ENCRYPTION_KEYS: 'browser:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=',
      ADMIN_ROLE,
    },
  }, /token-broker listening/);
  browser = await launchChromium();
});

after(async () => {
  if (skip) return;
  await browser?.close();
  stopAll();
  if (client) await admin('PUT', `/clients/${client.id}`, client);
});

// A user consents in a fresh browser (no Keycloak session: its login page shows); with
// `consentRequired`, Keycloak's grant page is accepted too. The row is active and redeems.
const consentThroughKeycloak = async (consentRequired) => {
  await setClient({ consentRequired });
  const { name, sub } = await newUser(consentRequired ? 'carol-consent' : 'carol');
  const bearer = await frontendToken(name);
  const task = consentRequired ? 'kc-browser-consent-screen' : 'kc-browser-task';
  const consent = await (await api('/api/auth/manager/offline-consent', bearer, {
    method: 'POST', body: JSON.stringify({ taskId: task }),
  })).json();
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(consent.consentUrl);
  await signIn(page, name);
  if (consentRequired) {
    await page.waitForSelector('[name=accept]');
    // Keycloak's grant page lists what the broker asked for: offline access.
    assert.match(await page.textContent('body'), /[Oo]ffline [Aa]ccess/);
    await page.screenshot({ path: join(artifacts, 'keycloak-consent-screen.png'), fullPage: true });
    await page.click('[name=accept]');
  }
  await page.waitForURL(/offline-callback/);
  assert.equal(await page.textContent('h1'), 'Access granted');
  assert.match(await page.textContent('body'), new RegExp(`Access granted for task ${task}\\.`));
  await context.close();
  const status = await (await api(`/api/auth/manager/offline-tokens/${consent.persistentTokenId}`, bearer)).json();
  assert.equal(status.status, 'active');
  const minted = await api('/api/auth/manager/access-token', bearer, {
    method: 'POST', body: JSON.stringify({ persistentTokenId: consent.persistentTokenId }),
  });
  assert.equal(minted.status, 200);
  const { accessToken } = await minted.json();
  const claims = JSON.parse(Buffer.from(accessToken.split('.')[1], 'base64url'));
  assert.equal(claims.iss, REALM);
  assert.equal(claims.azp, 'token-broker');
  return { sub, id: consent.persistentTokenId };
};

test('a user consents through Keycloak\'s login page ("Consent required" off)', { skip }, async () => {
  await consentThroughKeycloak(false);
});

test('a user consents through Keycloak\'s login and grant pages ("Consent required" on)', { skip }, async () => {
  await consentThroughKeycloak(true);
});

test('an operator with the realm role signs in to /admin through Keycloak', { skip }, async () => {
  await setClient({ consentRequired: false });
  const { sub: owner, id } = await consentThroughKeycloak(false);
  const operator = await newUser('olga-admin', ADMIN_ROLE);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/admin`);
  assert.ok(page.url().startsWith(REALM), `sent to Keycloak: ${page.url()}`);
  await signIn(page, operator.name);
  await page.waitForURL(`${base}/admin`);
  // Operators and owners are named by their subject (Keycloak's user id).
  assert.equal(await page.textContent('#operator'), operator.sub);
  const row = page.locator(`tr[data-token="${id}"]`);
  assert.equal(await row.locator('td.status').textContent(), 'active');
  assert.match(await row.textContent(), new RegExp(owner));
  await page.screenshot({ path: join(artifacts, 'keycloak-admin.png'), fullPage: true });
  await context.close();
});

test('a Keycloak user without the realm role is refused the admin page', { skip }, async () => {
  const { name } = await newUser('mallory');
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/admin`);
  await signIn(page, name);
  await page.waitForSelector('#message');
  assert.match(await page.textContent('#message'), /does not have the role/);
  assert.equal(await page.locator('tr[data-token]').count(), 0);
  await context.close();
});
