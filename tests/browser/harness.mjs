// What the browser tests share: a free port, child processes started and stopped, scratch
// directories removed with them, and the headless Chromium they drive (Debian's,
// /usr/bin/chromium, or CHROMIUM_PATH).

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
// Screenshots are kept as test artifacts here.
export const artifacts = join(root, 'target', 'test-artifacts');
mkdirSync(artifacts, { recursive: true });

const children = [];
const scratch = [];

export const freePort = () => new Promise((resolve) => {
  const server = createServer().listen(0, '127.0.0.1', () => {
    const { port } = server.address();
    server.close(() => resolve(port));
  });
});

// Starts a process and resolves with the first match of `pattern` in its stdout.
export const start = (command, args, options, pattern) => new Promise((resolve, reject) => {
  const child = spawn(command, args, { ...options, stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let seen = '';
  child.stdout.on('data', (chunk) => {
    seen += chunk;
    const match = seen.match(pattern);
    if (match) resolve(match);
  });
  child.stderr.on('data', (chunk) => { seen += chunk; });
  child.on('exit', (code) => reject(new Error(`${command} exited with ${code}: ${seen}`)));
});

// A fresh directory under the system's temp dir (a broker's data dir), removed by stopAll.
export const scratchDir = (prefix) => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  scratch.push(dir);
  return dir;
};

// Stops every process `start` started, and removes every scratch directory.
export const stopAll = () => {
  for (const child of children) child.kill();
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
};

export const launchChromium = () => chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
