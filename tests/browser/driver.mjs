// What the Chromium drivers share: the browser as the tests launch it, a
// virtual platform authenticator, and the protocol: one JSON request per
// line on stdin, each answered by `handle` with one JSON line on stdout (a
// thrown error as {error}).

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

/** Debian's Chromium, headless; `localhost` and its subdomains are loopback. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.ACCOUNTABLE_TEST_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--host-resolver-rules=MAP *.localhost 127.0.0.1, MAP localhost 127.0.0.1',
    ],
  });
}

/**
 * An authenticator that holds passkeys and verifies its user, as a
 * laptop's would (DevTools' WebAuthn domain, enabled on `cdp` first).
 * Answers its id.
 */
export async function addAuthenticator(cdp) {
  const added = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      ctap2Version: 'ctap2_1',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return added.authenticatorId;
}

export async function answerLines(handle, describe = String) {
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    let answer;
    try {
      answer = await handle(JSON.parse(line));
    } catch (error) {
      answer = { error: describe(error) };
    }
    process.stdout.write(`${JSON.stringify(answer)}\n`);
  }
}
