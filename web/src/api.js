// The GraphQL client both pages share, in the API's cookie mode: the
// refresh token is an HttpOnly, SameSite=Strict cookie that no script can
// read, and the access token lives in this module's memory only (never in
// localStorage or sessionStorage). A reload resumes the session from the
// cookie.

const ENDPOINT = '/graphql';

/** An error the API answered, with its `extensions.code` and the rest of its `extensions`. */
export class ApiError extends Error {
  constructor(message, code, extensions = {}) {
    super(message);
    this.code = code;
    this.extensions = extensions;
  }
}

let session = null;
const listeners = new Set();
let freshSignIn = null;

/** The signed-in session: {accessToken, user}, or null. */
export const currentSession = () => session;

/** Calls `listener(session)` whenever the session changes. */
export function onSession(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function setSession(next) {
  session = next;
  for (const listener of listeners) listener(session);
}

let farewell = null;

/** Ends the session here, with `reason` for the sign-in page to say once. */
export function endSession(reason) {
  farewell = reason;
  setSession(null);
}

/** Why the last session ended without a sign-out here, once; null when it did not. */
export function takeFarewell() {
  const said = farewell;
  farewell = null;
  return said;
}

/**
 * Who answers `REAUTHENTICATION_REQUIRED`: a function that asks the person
 * to prove who they are again and resolves once `reauthenticate` succeeded
 * (or rejects when they cancel).
 */
export function onFreshSignInNeeded(handler) {
  freshSignIn = handler;
}

async function post(query, variables, token) {
  const headers = {
    'content-type': 'application/json',
    accept: 'application/json',
    'accountable-session': 'cookie',
  };
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(ENDPOINT, {
      method: 'POST',
      headers,
      body: JSON.stringify({ query, variables }),
      credentials: 'same-origin',
    });
  } catch {
    throw new ApiError('The service cannot be reached. Check your connection and try again.', 'UNAVAILABLE');
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`The service answered ${response.status} without a body.`, 'INTERNAL');
  }
  return { status: response.status, body };
}

export const USER_FIELDS = `id email emailVerified displayName status roles version locale timeZone createdAt updatedAt`;

/** A new access token for the cookie's session, with its user; null when there is none. */
async function refreshed() {
  const { body } = await post(
    `mutation Refresh { refreshToken(refreshToken: "") { accessToken user { ${USER_FIELDS} } } }`,
    {},
  );
  return body?.data?.refreshToken ?? null;
}

/**
 * Runs `task` while no other tab of this origin refreshes: the tabs share
 * the cookie, each refresh replaces it, and a refresh token presented twice
 * ends its session (reuse detection). A tab that waited sends the cookie
 * the other one left.
 */
function exclusively(task) {
  return navigator.locks ? navigator.locks.request('accountable-refresh', task) : task();
}

let refreshing = null;

/**
 * A new access token for the session, once however many operations of
 * this page found theirs expired together: they all wait for the same
 * refresh. Answers whether the session goes on.
 */
function refresh() {
  refreshing ??= exclusively(refreshed)
    .then((pair) => {
      setSession(pair && { ...session, ...pair });
      return pair !== null;
    })
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

/** Takes up the session the cookie holds, if any (at the page's start). */
export async function resume() {
  try {
    const pair = await exclusively(refreshed);
    if (pair) setSession(pair);
  } catch {
    // Not signed in: the sign-in page shows.
  }
}

/**
 * Runs one operation and answers its `data`, or throws an ApiError. An
 * expired access token is refreshed once; a change that needs a recent
 * sign-in asks for one and is tried again.
 */
export async function gql(query, variables = {}) {
  const sent = session?.accessToken;
  let { status, body } = await post(query, variables, sent);
  // Another operation may have refreshed while this one was under way.
  if (status === 401 && session && (session.accessToken !== sent || (await refresh()))) {
    ({ status, body } = await post(query, variables, session?.accessToken));
  }
  if (status === 401 && session) {
    endSession('Your session has ended (signed out elsewhere, or over its time). Sign in again.');
  }
  const error = body?.errors?.[0];
  if (error) {
    const code = error.extensions?.code ?? 'INTERNAL';
    if (code === 'REAUTHENTICATION_REQUIRED' && freshSignIn) {
      await freshSignIn();
      return gql(query, variables);
    }
    throw new ApiError(error.message, code, error.extensions ?? {});
  }
  return body.data;
}

/** Takes what a sign-in answered as the session (its refresh token went into the cookie). */
export function signedIn(payload) {
  setSession({ accessToken: payload.accessToken, user: payload.user });
}

export async function signOut() {
  try {
    await gql(`mutation { logout(refreshToken: "") }`);
  } catch {
    // Signed out here either way; the session ends on its own.
  }
  setSession(null);
}

/** Answers `{publicKey}` options as the browser's credential, JSON-encoded. */
export async function passkeyCredential(kind, options) {
  if (!window.PublicKeyCredential?.parseRequestOptionsFromJSON) {
    throw new ApiError('This browser cannot use passkeys.', 'BAD_USER_INPUT');
  }
  let credential;
  try {
    credential =
      kind === 'create'
        ? await navigator.credentials.create({
            publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey),
          })
        : await navigator.credentials.get({
            publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey),
          });
  } catch (error) {
    throw new ApiError(`The passkey was not used (${error.name}).`, 'BAD_USER_INPUT');
  }
  return JSON.stringify(credential.toJSON());
}

/** Where the client is routed: a path under the page's base. */
export function navigate(path) {
  history.pushState(null, '', path);
  window.dispatchEvent(new PopStateEvent('popstate'));
}
