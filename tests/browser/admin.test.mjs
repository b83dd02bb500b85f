// The admin page in a real browser: headless Chromium (Debian's, /usr/bin/chromium) driven by
// playwright-core. Starts the test OpenID provider and the broker binary (embedded SQLite),
// completes a user's consent in the browser, then signs an operator in at /admin, revokes the
// user's token there and checks the result, in the page and through the API.
//
// Needs target/debug/token-broker (cargo build) and ../idp's node_modules.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { artifacts, freePort, launchChromium, root, scratchDir, start, stopAll } from './harness.mjs';

let issuer;
let base;
let browser;

before(async () => {
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const idp = await start('node', ['server.js'], {
    cwd: join(root, 'tests', 'idp'),
    env: { ...process.env, IDP_PORT: '0', IDP_EXTRA_REDIRECT_URIS: `${base}/api/auth/manager/offline-callback,${base}/admin/callback` },
  }, /"issuer":"([^"]+)"/);
  issuer = idp[1];
  await start(join(root, 'target', 'debug', 'token-broker'), ['serve'], {
    env: {
      PATH: process.env.PATH,
      NO_COLOR: '1',
      OIDC_ISSUER: issuer,
      OIDC_CLIENT_ID: 'token-broker',
      OIDC_CLIENT_SECRET: 'broker-secret',
      OIDC_AUTHORIZED_PARTIES: 'frontend',
      PUBLIC_BASE_URL: base,
      BIND_ADDR: `127.0.0.1:${port}`,
      TOKEN_BROKER_DATA_DIR: scratchDir('tb-browser-'),
      TOKEN_ENCRYPTION_KEYS: 'browser:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=',
      ADMIN_ROLE: 'token-broker-admin',
    },
  }, /token-broker listening/);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  stopAll();
});

const userToken = async (sub) => {
  const response = await fetch(issuer.replace(/\/realms\/.*/, '/__test/user-token'), {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sub }),
  });
  return (await response.json()).accessToken;
};

const api = (path, token, init = {}) => fetch(`${base}${path}`, {
  ...init,
  headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers || {}) },
});

// Fills the test provider's login form.
const signIn = async (page, username) => {
  await page.waitForSelector('input[name=username]');
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', 'password');
  await page.click('button[type=submit]');
};

test('an operator revokes a user\'s token on the admin page', async () => {
  const bearer = await userToken('alice-browser');
  const consent = await (await api('/api/auth/manager/offline-consent', bearer, {
    method: 'POST', body: JSON.stringify({ taskId: 'browser-task' }),
  })).json();
  const id = consent.persistentTokenId;

  // The user consents in the browser; the provider sends it to the broker's callback.
  const userContext = await browser.newContext();
  const userPage = await userContext.newPage();
  await userPage.goto(consent.consentUrl);
  await signIn(userPage, 'alice-browser');
  await userPage.waitForURL(/offline-callback/);
  // No redirectUri: the person gets a page, not the API's JSON.
  assert.equal(await userPage.textContent('h1'), 'Access granted');
  assert.match(await userPage.textContent('body'), /Access granted for task browser-task\. .*you can close this tab/);
  // The CSP admits the page's own style (by hash): Chromium applied it.
  assert.equal(await userPage.$eval('h1', (h) => getComputedStyle(h).color), 'rgb(26, 127, 55)');
  await userPage.screenshot({ path: join(artifacts, 'callback-granted.png'), fullPage: true });
  await userContext.close();

  // The operator opens /admin, is sent to the provider, signs in, and comes back.
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/admin`);
  await signIn(page, 'admin-olga');
  await page.waitForURL(`${base}/admin`);
  assert.equal(await page.textContent('#operator'), 'admin-olga');
  const row = page.locator(`tr[data-token="${id}"]`);
  assert.equal(await row.locator('td.status').textContent(), 'active');
  assert.equal(await row.locator('td.health').textContent(), 'ok');
  assert.match(await row.textContent(), /alice-browser/);

  await row.locator('button', { hasText: 'Revoke' }).click();
  await page.waitForURL(`${base}/admin`);
  const revoked = page.locator(`tr[data-token="${id}"]`);
  assert.equal(await revoked.locator('td.status').textContent(), 'revoked');
  assert.match(await revoked.textContent(), /revoked_by_admin/);
  assert.equal(await revoked.locator('button').count(), 0);
  assert.equal(await revoked.locator('td.health').textContent(), '');
  await page.screenshot({ path: join(artifacts, 'admin.png'), fullPage: true });

  // The grant's audit history, one click away.
  await revoked.locator('a', { hasText: 'history' }).click();
  await page.waitForURL(`${base}/admin/tokens/${id}/history`);
  assert.equal(await page.textContent('#status'), 'revoked');
  const actions = await page.locator('td.action').allTextContents();
  assert.deepEqual(actions.slice(0, 2), ['consent_requested', 'consent_completed']);
  assert.ok(actions.includes('token_revoked'), actions.join(','));
  await page.screenshot({ path: join(artifacts, 'admin-history.png'), fullPage: true });

  // Errors on these pages read the same table as the API: its status, message and code.
  const unknown = await page.goto(`${base}/admin/tokens/00000000-0000-4000-8000-000000000000/history`);
  assert.equal(unknown.status(), 404);
  assert.equal(await page.textContent('#code'), 'token_not_found');
  assert.equal(await page.textContent('#message'), 'No such persistent token');
  const garbled = await page.goto(`${base}/admin/tokens/not-an-id/history`);
  assert.equal(garbled.status(), 400);
  assert.equal(await page.textContent('#code'), 'invalid_request');
  await context.close();

  const status = await (await api(`/api/auth/manager/offline-tokens/${id}`, bearer)).json();
  assert.equal(status.status, 'revoked');
  assert.equal(status.statusReason, 'revoked_by_admin');
});

test('a person who declines offline access gets a page saying what to do', async () => {
  const bearer = await userToken('bob-browser');
  const consent = await (await api('/api/auth/manager/offline-consent', bearer, {
    method: 'POST', body: JSON.stringify({ taskId: 'declined-task' }),
  })).json();
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(consent.consentUrl);
  await page.waitForSelector('input[name=username]');
  await page.fill('input[name=username]', 'bob-browser');
  await page.fill('input[name=password]', 'password');
  await page.uncheck('input[name=grant_offline]');
  await page.click('button[type=submit]');
  await page.waitForURL(/offline-callback/);
  assert.equal(await page.textContent('h1'), 'Access not granted');
  assert.match(await page.textContent('body'), /for task declined-task/);
  assert.match(await page.textContent('body'), /Start the consent again/);
  await page.screenshot({ path: join(artifacts, 'callback-refused.png'), fullPage: true });
  await context.close();
  const status = await (await api(`/api/auth/manager/offline-tokens/${consent.persistentTokenId}`, bearer)).json();
  assert.equal(status.status, 'failed');
});

test('a signed-in user without the role is refused', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/admin`);
  await signIn(page, 'mallory-browser');
  await page.waitForSelector('#message');
  assert.match(await page.textContent('#message'), /does not have the role/);
  assert.equal(await page.textContent('#code'), 'forbidden');
  await context.close();
});
