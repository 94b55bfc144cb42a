// A browser with a passkey authenticator, for the end-to-end tests: Debian's
// Chromium, headless, with a virtual WebAuthn authenticator (DevTools'
// WebAuthn domain) on a blank page this script serves on localhost. The
// test sends one JSON request per line on stdin and reads one JSON answer
// per line on stdout; the first line out is {"port": …}.
//
//   {"op": "create", "options": …, "host": "localhost"}  navigator.credentials.create
//   {"op": "get", "options": …, "host": "localhost"}     navigator.credentials.get
//   {"op": "credentials"}                    what the authenticator holds
//   {"op": "set_sign_count", "credentialId": …, "signCount": n}
//   {"op": "new_authenticator"}              an empty authenticator instead
//
// `options` is what a begin… mutation answered ({publicKey: …}); the answer
// is {"credential": JSON.stringify(credential.toJSON())} or {"error": …}.

import { createServer } from 'node:http';
import { addAuthenticator, answerLines, launch } from './driver.mjs';

const server = createServer((_, response) => {
  response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  response.end('<!doctype html><title>passkeys</title><p>passkeys</p>');
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();

const browser = await launch();
const context = await browser.newContext();
const page = await context.newPage();
const cdp = await context.newCDPSession(page);
await cdp.send('WebAuthn.enable');
let authenticatorId = await addAuthenticator(cdp);

async function visit(host) {
  const url = `http://${host || 'localhost'}:${port}/`;
  if (page.url() !== url) {
    await page.goto(url);
  }
}

async function ceremony(kind, options, host) {
  await visit(host);
  return page.evaluate(
    async ({ kind, options }) => {
      try {
        const credential =
          kind === 'create'
            ? await navigator.credentials.create({
                publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey),
              })
            : await navigator.credentials.get({
                publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey),
              });
        return { credential: JSON.stringify(credential.toJSON()) };
      } catch (error) {
        return { error: `${error.name}: ${error.message}` };
      }
    },
    { kind, options },
  );
}

async function handle(request) {
  switch (request.op) {
    case 'create':
    case 'get':
      return ceremony(request.op, request.options, request.host);
    case 'credentials':
      return cdp.send('WebAuthn.getCredentials', { authenticatorId });
    case 'set_sign_count': {
      const { credential } = await cdp.send('WebAuthn.getCredential', {
        authenticatorId,
        credentialId: request.credentialId,
      });
      await cdp.send('WebAuthn.removeCredential', {
        authenticatorId,
        credentialId: request.credentialId,
      });
      await cdp.send('WebAuthn.addCredential', {
        authenticatorId,
        credential: { ...credential, signCount: request.signCount },
      });
      return { signCount: request.signCount };
    }
    case 'new_authenticator':
      await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId });
      authenticatorId = await addAuthenticator(cdp);
      return { authenticatorId };
    default:
      return { error: `unknown op ${request.op}` };
  }
}

process.stdout.write(`${JSON.stringify({ port })}\n`);
await answerLines(handle);
await browser.close();
server.close();
