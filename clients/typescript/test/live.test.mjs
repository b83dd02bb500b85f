// The client against a live broker and the test provider. tests/api/typescript_client.rs
// starts both and runs this file with: TOKEN_BROKER_URL, TB_BEARER (a user's access token),
// TB_PENDING_ID (a consent it completes once this file prints "waiting-for-consent"), and
// TB_USER (the user's subject).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenBrokerClient, BrokerError, ConsentEndedError } from '../dist/index.js';

const baseUrl = process.env.TOKEN_BROKER_URL;
const skip = baseUrl ? false : 'needs a live broker (tests/api/typescript_client.rs)';

const client = (fetchImpl) => new TokenBrokerClient({
  baseUrl, getToken: async () => process.env.TB_BEARER, fetch: fetchImpl,
});

test('waitUntilActive polls until the consent completes', { skip }, async () => {
  let polls = 0;
  const counting = (url, init) => { polls += 1; return fetch(url, init); };
  console.log('waiting-for-consent');
  const token = await client(counting).waitUntilActive(process.env.TB_PENDING_ID, {
    initialDelayMs: 200, maxDelayMs: 1000, timeoutMs: 60_000,
  });
  assert.equal(token.status, 'active');
  assert.ok(polls >= 2, `it waited (${polls} polls)`);
});

test('a consent, a token, a task key, the list and a revocation', { skip }, async () => {
  const broker = client();
  const consent = await broker.startConsent({ taskId: 'ts-client' });
  assert.match(consent.consentUrl, /^http/);
  assert.equal((await broker.status(consent.persistentTokenId)).status, 'pending');

  const id = process.env.TB_PENDING_ID;
  const access = await broker.accessToken(id);
  assert.equal(access.tokenType.toLowerCase(), 'bearer'); // RFC 6749 §5.1: case-insensitive
  assert.ok(access.expiresIn > 0);
  const claims = JSON.parse(Buffer.from(access.accessToken.split('.')[1], 'base64url'));
  assert.equal(claims.sub, process.env.TB_USER);

  const key = await broker.createTaskKey(id, { name: 'nightly', maxUses: 5 });
  assert.match(key.taskKey, /^tbk_/);
  assert.equal(key.maxUses, 5);

  const binding = await broker.createWorkloadBinding(id, {
    issuer: process.env.TB_WORKLOAD_ISSUER,
    subject: 'system:serviceaccount:jobs:runner',
    claims: { 'kubernetes.io.serviceaccount.uid': 'uid-of-runner' },
    maxUses: 3,
  });
  assert.equal(binding.state, 'active');
  assert.equal(binding.claims['kubernetes.io.serviceaccount.uid'], 'uid-of-runner');
  const bindings = await broker.listWorkloadBindings(id);
  assert.deepEqual(bindings.map((b) => b.workloadBindingId), [binding.workloadBindingId]);
  const unbound = await broker.revokeWorkloadBinding(id, binding.workloadBindingId);
  assert.equal(unbound.state, 'revoked');
  await assert.rejects(
    broker.createWorkloadBinding(id, { issuer: 'https://unknown.test', subject: 's' }),
    (e) => e instanceof BrokerError && e.code === 'invalid_request' && e.status === 400,
  );

  const listed = await broker.list({ taskId: 'ts-client' });
  assert.deepEqual(listed.map((t) => t.persistentTokenId), [consent.persistentTokenId]);
  assert.ok((await broker.list()).length >= 2);

  const revoked = await broker.revoke(id);
  assert.equal(revoked.status, 'revoked');
  await assert.rejects(broker.accessToken(id), (e) => {
    assert.ok(e instanceof BrokerError);
    assert.equal(e.code, 'token_revoked');
    assert.equal(e.status, 410);
    return true;
  });
  await assert.rejects(broker.waitUntilActive(id), (e) => e instanceof ConsentEndedError
    && e.token.status === 'revoked');
});

test('waitUntilActive stops when aborted', { skip }, async () => {
  const broker = client();
  const consent = await broker.startConsent({ taskId: 'ts-abort' });
  const controller = new AbortController();
  const started = Date.now();
  setTimeout(() => controller.abort(new Error('user closed the dialog')), 300);
  await assert.rejects(
    broker.waitUntilActive(consent.persistentTokenId, { signal: controller.signal, initialDelayMs: 5_000 }),
    /user closed the dialog/,
  );
  assert.ok(Date.now() - started < 3_000, 'it did not sit out the 5 s pause');
});

test('bad input and bad credentials are BrokerErrors with the API code', { skip }, async () => {
  await assert.rejects(client().startConsent({ taskId: '' }), (e) => e.code === 'invalid_request' && e.status === 400);
  await assert.rejects(client().status('not-a-uuid'), (e) => e instanceof BrokerError && e.status === 400);
  const stranger = new TokenBrokerClient({ baseUrl, getToken: () => 'not-a-token' });
  await assert.rejects(stranger.list(), (e) => e.code === 'unauthorized' && e.status === 401);
  const down = new TokenBrokerClient({ baseUrl: 'http://127.0.0.1:9', getToken: () => 'x' });
  await assert.rejects(down.list(), (e) => e.code === 'unreachable');
});
