// Components both pages share: forms with labelled fields that say what
// went wrong, client-side routes, the sign-in with its second step, and the
// dialog that asks for a fresh sign-in.

import { h, render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import {
  ApiError,
  USER_FIELDS,
  gql,
  navigate,
  onFreshSignInNeeded,
  passkeyCredential,
  setSession,
  takeFarewell,
  signedIn,
  currentSession,
} from './api.js';

export const html = htm.bind(h);
export { render };

let fieldIds = 0;

/** A labelled input; `hint` is read out with it. */
export function Field({ label, type = 'text', value, onInput, hint, autocomplete, required = true, ...rest }) {
  const id = useRef(`field-${++fieldIds}`).current;
  return html`<div class="field">
    <label for=${id}>${label}</label>
    <input
      id=${id}
      type=${type}
      value=${value}
      onInput=${(e) => onInput(e.currentTarget.value)}
      autocomplete=${autocomplete}
      required=${required}
      aria-describedby=${hint ? `${id}-hint` : undefined}
      ...${rest}
    />
    ${hint && html`<p class="hint" id=${`${id}-hint`}>${hint}</p>`}
  </div>`;
}

/** A message that screen readers announce as it appears. */
export function Alert({ error, kind = 'error' }) {
  if (!error) return null;
  const text = error instanceof ApiError || error instanceof Error ? error.message : String(error);
  return html`<p class=${`alert ${kind}`} role=${kind === 'error' ? 'alert' : 'status'}>${text}</p>`;
}

/** Runs `action` on request: [run, busy, error]; one run at a time. */
function useRun(action) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async () => {
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  return [run, busy, error];
}

/**
 * A form whose submit runs `action`; while it runs the button is busy, and
 * its error is shown above the button.
 */
export function Form({ action, submit, children, secondary }) {
  const [run, busy, error] = useRun(action);
  const onSubmit = (event) => {
    event.preventDefault();
    run();
  };
  return html`<form onSubmit=${onSubmit}>
    ${children}
    <${Alert} error=${error} />
    <div class="actions">
      <button type="submit" disabled=${busy} aria-busy=${busy}>${submit}</button>
      ${secondary}
    </div>
  </form>`;
}

/** A button that runs `action`, showing its error beside it. */
export function Action({ action, children, danger = false, label }) {
  const [run, busy, error] = useRun(action);
  return html`<span class="action">
    <button type="button" class=${danger ? 'danger' : ''} disabled=${busy} onClick=${run} aria-label=${label}>
      ${children}
    </button>
    <${Alert} error=${error} />
  </span>`;
}

/** The path, re-read on every client-side navigation and Back. */
export function usePath() {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const changed = () => setPath(location.pathname);
    window.addEventListener('popstate', changed);
    return () => window.removeEventListener('popstate', changed);
  }, []);
  return path;
}

/** A link that routes on the client (and opens normally with a modifier). */
export function Link({ href, children, ...rest }) {
  const click = (event) => {
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    navigate(href);
  };
  return html`<a href=${href} onClick=${click} ...${rest}>${children}</a>`;
}

/** Moves focus to the page's heading when the page changes, for keyboards and screen readers. */
export function Heading({ children }) {
  const ref = useRef(null);
  useEffect(() => ref.current?.focus(), []);
  return html`<h1 tabindex="-1" ref=${ref}>${children}</h1>`;
}

/** `count` and `noun`, the noun in the plural unless the count is one: `1 live session`, `2 live sessions`. */
export const counted = (count, noun) => `${count} ${noun}${count === 1 ? '' : 's'}`;

export const when = (instant) =>
  instant ? new Date(instant).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' }) : '—';

const SIGN_IN = `mutation SignIn($input: LoginInput!) { login(input: $input) {
  emailVerificationRequired secondFactorRequired challenge factors
  accessToken refreshToken user { ${USER_FIELDS} } } }`;
const SECOND_STEP = `mutation Second($input: CompleteLoginInput!) { completeLogin(input: $input) {
  accessToken refreshToken user { ${USER_FIELDS} } } }`;
const PASSKEY_SIGN_IN = `mutation { beginPasskeySignIn { ceremony options } }`;
const PASSKEY_SIGN_IN_FINISH = `mutation Finish($input: PasskeyResponseInput!) { finishPasskeySignIn(input: $input) {
  accessToken refreshToken user { ${USER_FIELDS} } } }`;
const PASSKEY_SECOND = `mutation Begin($input: BeginPasskeySecondStepInput!) { beginPasskeySecondStep(input: $input) { ceremony options } }`;
const PASSKEY_SECOND_FINISH = `mutation Finish($input: PasskeyResponseInput!) { finishPasskeySecondStep(input: $input) {
  accessToken refreshToken user { ${USER_FIELDS} } } }`;
const RESEND = `mutation Resend($input: EmailInput!) { requestEmailVerification(input: $input) }`;

/**
 * Sign-in with a password, then the second factor the account asks for
 * (a code of the app, a recovery code or a passkey); or with a passkey
 * alone. `links` are shown under the form (sign up, forgotten password).
 */
export function SignIn({ links }) {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [step, setStep] = useState(null);
  const [code, setCode] = useState('');
  const [useRecovery, setUseRecovery] = useState(false);
  const [notice, setNotice] = useState(null);
  const [farewell] = useState(takeFarewell);

  const signInWithPassword = async () => {
    const { login } = await gql(SIGN_IN, { input: { email, password } });
    if (login.emailVerificationRequired) {
      setStep({ verify: true });
    } else if (login.secondFactorRequired) {
      setStep({ challenge: login.challenge, factors: login.factors });
    } else {
      signedIn(login);
    }
  };
  const secondStep = async () => {
    const input = useRecovery
      ? { challenge: step.challenge, recoveryCode: code.trim() }
      : { challenge: step.challenge, totpCode: code.trim() };
    signedIn((await gql(SECOND_STEP, { input })).completeLogin);
  };
  const passkeyAlone = async () => {
    const { beginPasskeySignIn: begun } = await gql(PASSKEY_SIGN_IN);
    const credential = await passkeyCredential('get', begun.options);
    signedIn((await gql(PASSKEY_SIGN_IN_FINISH, { input: { ceremony: begun.ceremony, credential } })).finishPasskeySignIn);
  };
  const passkeySecond = async () => {
    const { beginPasskeySecondStep: begun } = await gql(PASSKEY_SECOND, { input: { challenge: step.challenge } });
    const credential = await passkeyCredential('get', begun.options);
    signedIn(
      (await gql(PASSKEY_SECOND_FINISH, { input: { ceremony: begun.ceremony, credential } })).finishPasskeySecondStep,
    );
  };

  if (step?.verify) {
    return html`<section>
      <${Heading}>Verify your address first</${Heading}>
      <p>Follow the link we mailed to <strong>${email}</strong>, then sign in again.</p>
      <${Alert} error=${notice} kind="info" />
      <${Action}
        action=${async () => {
          await gql(RESEND, { input: { email } });
          setNotice('If the address needs it, a new link is on its way.');
        }}
        >Send a new link</${Action}>
      <button type="button" class="link" onClick=${() => setStep(null)}>Back to sign-in</button>
    </section>`;
  }
  if (step?.challenge) {
    return html`<section>
      <${Heading}>Second step</${Heading}>
      <${Form} action=${secondStep} submit="Continue">
        <${Field}
          label=${useRecovery ? 'Recovery code' : 'Code from your authenticator app'}
          value=${code}
          onInput=${setCode}
          autocomplete="one-time-code"
          inputmode=${useRecovery ? 'text' : 'numeric'}
          hint=${useRecovery ? 'One of the codes you saved, like abcde-12345.' : 'Six digits.'}
        />
      </${Form}>
      <p>
        <button type="button" class="link" onClick=${() => setUseRecovery(!useRecovery)}>
          ${useRecovery ? 'Use a code from the app instead' : 'Use a recovery code instead'}
        </button>
      </p>
      ${step.factors?.includes('PASSKEY') && html`<${Action} action=${passkeySecond}>Use a passkey</${Action}>`}
    </section>`;
  }
  return html`<section>
    <${Heading}>Sign in</${Heading}>
    <${Alert} error=${farewell} kind="info" />
    <${Form} action=${signInWithPassword} submit="Sign in">
      <${Field} label="Email" type="email" value=${email} onInput=${setEmail} autocomplete="username" />
      <${Field} label="Password" type="password" value=${password} onInput=${setPassword} autocomplete="current-password" />
    </${Form}>
    <p><${Action} action=${passkeyAlone}>Sign in with a passkey</${Action}></p>
    ${links}
  </section>`;
}

const REAUTHENTICATE = `mutation Again($input: ReauthenticateInput!) { reauthenticate(input: $input) { accessToken } }`;

/**
 * The dialog behind `REAUTHENTICATION_REQUIRED`: the password or a code of
 * the app, then the change is tried again with the fresh token.
 */
export function FreshSignIn() {
  const [pending, setPending] = useState(null);
  const [secret, setSecret] = useState('');
  const [withCode, setWithCode] = useState(false);
  const dialog = useRef(null);
  useEffect(
    () =>
      onFreshSignInNeeded(
        () =>
          new Promise((resolve, reject) => {
            setSecret('');
            setPending({ resolve, reject });
          }),
      ),
    [],
  );
  useEffect(() => {
    if (pending && dialog.current && !dialog.current.open) dialog.current.showModal();
  }, [pending]);
  const close = (outcome) => {
    dialog.current?.close();
    setPending(null);
    outcome();
  };
  const prove = async () => {
    const input = withCode ? { totpCode: secret.trim() } : { password: secret };
    const { reauthenticate } = await gql(REAUTHENTICATE, { input });
    setSession({ ...currentSession(), accessToken: reauthenticate.accessToken });
    close(pending.resolve);
  };
  return html`<dialog ref=${dialog} aria-labelledby="fresh-title" onCancel=${() =>
    pending && close(() => pending.reject(new ApiError('Cancelled: the change needs a fresh sign-in.', 'REAUTHENTICATION_REQUIRED')))}>
    ${pending &&
    html`<h2 id="fresh-title">Confirm it is you</h2>
      <p>This change needs a recent sign-in.</p>
      <${Form}
        action=${prove}
        submit="Confirm"
        secondary=${html`<button type="button" class="link" onClick=${() => setWithCode(!withCode)}>
          ${withCode ? 'Use the password instead' : 'Use a code from the app instead'}
        </button>`}
      >
        <${Field}
          label=${withCode ? 'Code from your authenticator app' : 'Your password'}
          type=${withCode ? 'text' : 'password'}
          value=${secret}
          onInput=${setSecret}
          autocomplete=${withCode ? 'one-time-code' : 'current-password'}
        />
      </${Form}>`}
  </dialog>`;
}

/** Loads `load()` when `deps` change; answers [value, error, reload]. */
export function useLoad(load, deps) {
  const [state, setState] = useState({ value: undefined, error: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    load().then(
      (value) => live && setState({ value, error: null }),
      (error) => live && setState({ value: undefined, error }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  return [state.value, state.error, () => setTick((t) => t + 1)];
}
