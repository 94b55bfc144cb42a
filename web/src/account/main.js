// The account pages: sign up, verify the address (the page the mail links
// to), sign in with a second factor or a passkey, recover a forgotten
// password, and, signed in, the profile, address, password, second
// factors, passkeys and sessions.

import '../style.css';
import { useEffect, useState } from 'preact/hooks';
import QRCode from 'qrcode';
import { USER_FIELDS, currentSession, endSession, gql, onSession, passkeyCredential, resume, setSession, signOut } from '../api.js';
import { Action, Alert, Field, Form, FreshSignIn, Heading, Link, SignIn, counted, html, render, useLoad, usePath, when } from '../ui.js';

const BASE = '/account';

/** Takes the `token` of a mailed link and drops it from the address bar and history. */
function linkToken() {
  const token = new URLSearchParams(location.search).get('token') ?? '';
  if (token) history.replaceState(null, '', location.pathname);
  return token;
}

function SignUp() {
  const [email, setEmail] = useState('');
  const [displayName, setDisplayName] = useState('');
  const [password, setPassword] = useState('');
  const [done, setDone] = useState(false);
  const register = async () => {
    await gql(
      `mutation SignUp($input: RegisterInput!) { register(input: $input) { emailVerificationRequired accessToken } }`,
      { input: { email, displayName, password } },
    );
    setDone(true);
  };
  if (done) {
    return html`<section>
      <${Heading}>Check your inbox</${Heading}>
      <p>We sent a link to <strong>${email}</strong>. Follow it to verify your address, then sign in.</p>
      <p><${Link} href=${`${BASE}/`}>Go to sign-in</${Link}></p>
    </section>`;
  }
  return html`<section>
    <${Heading}>Create your account</${Heading}>
    <${Form} action=${register} submit="Create account">
      <${Field} label="Email" type="email" value=${email} onInput=${setEmail} autocomplete="email" />
      <${Field} label="Display name" value=${displayName} onInput=${setDisplayName} autocomplete="name" hint="How we address you: 1 to 100 characters." />
      <${Field}
        label="Password"
        type="password"
        value=${password}
        onInput=${setPassword}
        autocomplete="new-password"
        minlength="15"
        hint="At least 15 characters; a long phrase is easiest to remember."
      />
    </${Form}>
    <p>Have an account? <${Link} href=${`${BASE}/`}>Sign in</${Link}></p>
  </section>`;
}

/** The page a mailed link opens: verifies the address or confirms a new one. */
function FollowLink({ mutation, field, title, done }) {
  const [token] = useState(linkToken);
  const [result, error] = useLoad(
    () =>
      token
        ? gql(`mutation Link($input: TokenInput!) { ${mutation}(input: $input) { version user { email } } }`, {
            input: { token },
          }).then((data) => data[field])
        : Promise.reject(new Error('This link has no token: open the whole link from the mail.')),
    [token],
  );
  return html`<section>
    <${Heading}>${title}</${Heading}>
    ${result === undefined && !error && html`<p role="status">Checking the link…</p>`}
    ${result && html`<p class="alert success" role="status">${done}</p>`}
    <${Alert} error=${error} />
    <p><${Link} href=${`${BASE}/`}>Go to sign-in</${Link}></p>
  </section>`;
}

function ForgotPassword() {
  const [email, setEmail] = useState('');
  const [sent, setSent] = useState(false);
  const request = async () => {
    await gql(`mutation Forgot($input: EmailInput!) { requestPasswordReset(input: $input) }`, { input: { email } });
    setSent(true);
  };
  return html`<section>
    <${Heading}>Forgotten password</${Heading}>
    ${sent
      ? html`<p class="alert success" role="status">If ${email} has an account, a link to choose a new password is on its way.</p>`
      : html`<${Form} action=${request} submit="Send me a link">
          <${Field} label="Email" type="email" value=${email} onInput=${setEmail} autocomplete="email" />
        </${Form}>`}
    <p><${Link} href=${`${BASE}/`}>Back to sign-in</${Link}></p>
  </section>`;
}

function ResetPassword() {
  const [token] = useState(linkToken);
  const [password, setPassword] = useState('');
  const [done, setDone] = useState(false);
  const reset = async () => {
    await gql(`mutation Reset($input: ResetPasswordInput!) { resetPassword(input: $input) { version } }`, {
      input: { token, newPassword: password },
    });
    setDone(true);
  };
  return html`<section>
    <${Heading}>Choose a new password</${Heading}>
    ${done
      ? html`<p class="alert success" role="status">Your password is changed, and every session signed out. Sign in with the new one.</p>`
      : html`<${Form} action=${reset} submit="Set password">
          <${Field} label="New password" type="password" value=${password} onInput=${setPassword} autocomplete="new-password" minlength="15" hint="At least 15 characters." />
        </${Form}>`}
    <p><${Link} href=${`${BASE}/`}>Go to sign-in</${Link}></p>
  </section>`;
}

function Profile({ user, changed }) {
  const [displayName, setDisplayName] = useState(user.displayName ?? '');
  const [email, setEmail] = useState('');
  const [notice, setNotice] = useState(null);
  const save = async () => {
    await gql(`mutation Name($input: UpdateProfileInput!) { updateProfile(input: $input) { version } }`, {
      input: { id: user.id, displayName, expectedVersion: user.version },
    });
    changed();
  };
  const move = async () => {
    await gql(`mutation Move($input: ChangeEmailInput!) { changeEmail(input: $input) { version } }`, {
      input: { id: user.id, email },
    });
    setNotice(`We sent a link to ${email}: the address changes when you follow it.`);
    setEmail('');
  };
  return html`<section aria-labelledby="profile">
    <h2 id="profile">Profile</h2>
    <dl>
      <dt>Email</dt>
      <dd>${user.email} ${user.emailVerified ? html`<span class="badge ok">verified</span>` : html`<span class="badge">not verified</span>`}</dd>
      <dt>Member since</dt>
      <dd>${when(user.createdAt)}</dd>
    </dl>
    <${Form} action=${save} submit="Save name">
      <${Field} label="Display name" value=${displayName} onInput=${setDisplayName} autocomplete="name" />
    </${Form}>
    <${Form} action=${move} submit="Change email">
      <${Field} label="New email address" type="email" value=${email} onInput=${setEmail} autocomplete="email" />
    </${Form}>
    <${Alert} error=${notice} kind="info" />
  </section>`;
}

function Password({ user }) {
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const change = async () => {
    await gql(`mutation Pw($input: ChangePasswordInput!) { changePassword(input: $input) { version } }`, {
      input: { id: user.id, currentPassword: current, newPassword: next },
    });
    endSession('Your password is changed, and every session of your account has ended, this one too: sign in with the new password.');
  };
  return html`<section aria-labelledby="password">
    <h2 id="password">Password</h2>
    <p>Changing it ends every session of your account, this one too.</p>
    <${Form} action=${change} submit="Change password">
      <${Field} label="Current password" type="password" value=${current} onInput=${setCurrent} autocomplete="current-password" />
      <${Field} label="New password" type="password" value=${next} onInput=${setNext} autocomplete="new-password" minlength="15" hint="At least 15 characters." />
    </${Form}>
  </section>`;
}

function AuthenticatorApp() {
  const [factors, error, reload] = useLoad(
    () => gql(`{ mySecondFactors { totpEnabled totpPending recoveryCodesLeft } }`).then((d) => d.mySecondFactors),
    [],
  );
  const [enrolment, setEnrolment] = useState(null);
  const [code, setCode] = useState('');
  const [codes, setCodes] = useState(null);
  const [password, setPassword] = useState('');
  const start = async () => {
    const { startTotpEnrollment } = await gql(`mutation { startTotpEnrollment { secret otpauthUri } }`);
    const qr = await QRCode.toString(startTotpEnrollment.otpauthUri, { type: 'svg', margin: 1 });
    setEnrolment({ ...startTotpEnrollment, qr });
  };
  const confirm = async () => {
    const { confirmTotp } = await gql(`mutation Confirm($input: TotpCodeInput!) { confirmTotp(input: $input) { recoveryCodes } }`, {
      input: { code: code.trim() },
    });
    setCodes(confirmTotp.recoveryCodes);
    setEnrolment(null);
    setCode('');
    reload();
  };
  const disable = async () => {
    // Six digits are the app's; anything else is taken for a recovery code
    // (the app may be what was lost).
    const given = code.trim();
    const proof = /^[0-9]{6}$/.test(given) ? { totpCode: given } : { recoveryCode: given };
    await gql(`mutation Off($input: DisableTotpInput!) { disableTotp(input: $input) { version } }`, {
      input: { currentPassword: password, ...proof },
    });
    setPassword('');
    setCode('');
    setCodes(null);
    reload();
  };
  return html`<section aria-labelledby="app">
    <h2 id="app">Authenticator app</h2>
    <${Alert} error=${error} />
    ${codes &&
    html`<div class="alert success" role="status">
      <p><strong>Recovery codes</strong>: each signs in once when the app is lost. Save them now; they are not shown again.</p>
      <ul class="codes">${codes.map((c) => html`<li><code>${c}</code></li>`)}</ul>
    </div>`}
    ${factors?.totpEnabled &&
    html`<p>Sign-in asks for a code of your app. ${counted(factors.recoveryCodesLeft, 'recovery code')} left.</p>
      <${Form} action=${disable} submit="Turn off the app">
        <${Field} label="Your password" type="password" value=${password} onInput=${setPassword} autocomplete="current-password" />
        <${Field} label="Code from your app, or a recovery code" value=${code} onInput=${setCode} autocomplete="one-time-code" hint="Six digits from the app; a recovery code if the app is lost." />
      </${Form}>`}
    ${factors && !factors.totpEnabled && !enrolment &&
    html`<p>Sign-in asks for your password only.</p>
      <${Action} action=${start}>Set up an authenticator app</${Action}>`}
    ${enrolment &&
    html`<div>
      <p>Scan this code with your app, or type the key in.</p>
      <div class="qr" role="img" aria-label="QR code of the key" dangerouslySetInnerHTML=${{ __html: enrolment.qr }}></div>
      <p>Key: <code id="totp-secret">${enrolment.secret}</code></p>
      <${Form} action=${confirm} submit="Turn on">
        <${Field} label="Code from your authenticator app" value=${code} onInput=${setCode} autocomplete="one-time-code" inputmode="numeric" hint="The six digits the app shows now." />
      </${Form}>
    </div>`}
  </section>`;
}

function Passkeys() {
  const [passkeys, error, reload] = useLoad(() => gql(`{ myPasskeys { id name createdAt lastUsedAt } }`).then((d) => d.myPasskeys), []);
  const [name, setName] = useState('');
  const add = async () => {
    const { beginPasskeyRegistration: begun } = await gql(`mutation { beginPasskeyRegistration { ceremony options } }`);
    const credential = await passkeyCredential('create', begun.options);
    await gql(`mutation Add($input: FinishPasskeyRegistrationInput!) { finishPasskeyRegistration(input: $input) { version passkey { id } } }`, {
      input: { ceremony: begun.ceremony, credential, name: name || 'Passkey' },
    });
    setName('');
    reload();
  };
  const remove = async (id) => {
    await gql(`mutation Remove($input: RemovePasskeyInput!) { removePasskey(input: $input) { version } }`, { input: { id } });
    reload();
  };
  return html`<section aria-labelledby="passkeys">
    <h2 id="passkeys">Passkeys</h2>
    <${Alert} error=${error} />
    ${passkeys?.length === 0 && html`<p>No passkeys yet.</p>`}
    <ul class="rows">
      ${passkeys?.map(
        (p) => html`<li>
          <span><strong>${p.name}</strong> added ${when(p.createdAt)}, last used ${when(p.lastUsedAt)}</span>
          <${Action} action=${() => remove(p.id)} danger label=${`Remove passkey ${p.name}`}>Remove</${Action}>
        </li>`,
      )}
    </ul>
    <${Form} action=${add} submit="Add a passkey">
      <${Field} label="Passkey name" value=${name} onInput=${setName} required=${false} hint="So you know it again, like “work laptop”." />
    </${Form}>
  </section>`;
}

function Sessions() {
  const [sessions, error, reload] = useLoad(
    () => gql(`{ mySessions { id startedAt lastUsedAt clientAddress userAgent factors current } }`).then((d) => d.mySessions),
    [],
  );
  const end = async (id) => {
    await gql(`mutation End($id: ID!) { endSession(id: $id) }`, { id });
    reload();
  };
  const endAll = async () => {
    await gql(`mutation { logoutAll }`);
    setSession(null);
  };
  return html`<section aria-labelledby="sessions">
    <h2 id="sessions">Sessions</h2>
    <${Alert} error=${error} />
    <table>
      <caption>Where your account is signed in</caption>
      <thead><tr><th scope="col">Device</th><th scope="col">Address</th><th scope="col">Signed in</th><th scope="col">Last used</th><th scope="col">With</th><th scope="col"><span class="visually-hidden">Action</span></th></tr></thead>
      <tbody>
        ${sessions?.map(
          (s) => html`<tr data-session=${s.id}>
            <td>${s.userAgent ?? 'unknown'} ${s.current && html`<span class="badge ok">this session</span>`}</td>
            <td>${s.clientAddress ?? '—'}</td>
            <td>${when(s.startedAt)}</td>
            <td>${when(s.lastUsedAt)}</td>
            <td>${s.factors.join(', ')}</td>
            <td>${!s.current && html`<${Action} action=${() => end(s.id)} danger label="End session">End</${Action}>`}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    <p role="status">${sessions && counted(sessions.length, 'live session')}</p>
    <${Action} action=${endAll} danger>Sign out everywhere</${Action}>
  </section>`;
}

function Home() {
  const [user, error, reload] = useLoad(() => gql(`{ me { ${USER_FIELDS} } }`).then((d) => d.me), []);
  return html`<section>
    <${Heading}>Your account</${Heading}>
    <${Alert} error=${error} />
    ${user &&
    html`<p>Signed in as <strong>${user.displayName}</strong>.${' '}
        <button type="button" class="link" onClick=${signOut}>Sign out</button></p>
      <${Profile} user=${user} changed=${reload} />
      <${Password} user=${user} />
      <${AuthenticatorApp} />
      <${Passkeys} />
      <${Sessions} />`}
  </section>`;
}

function Pages() {
  const path = usePath();
  const [session, setCurrent] = useState(currentSession());
  useEffect(() => onSession(setCurrent), []);
  const route = path.replace(/\/+$/, '').slice(BASE.length) || '/';
  const signInLinks = html`<p>
    <${Link} href=${`${BASE}/sign-up`}>Create an account</${Link}> ·
    <${Link} href=${`${BASE}/forgot-password`}>Forgotten password?</${Link}>
  </p>`;
  let page;
  switch (route) {
    case '/sign-up':
      page = html`<${SignUp} />`;
      break;
    case '/verify-email':
      page = html`<${FollowLink} mutation="verifyEmail" field="verifyEmail" title="Verify your address" done="Your address is verified. You can sign in now." />`;
      break;
    case '/confirm-email':
      page = html`<${FollowLink} mutation="confirmEmailChange" field="confirmEmailChange" title="Confirm your new address" done="Your new address is confirmed: sign in with it from now on." />`;
      break;
    case '/forgot-password':
      page = html`<${ForgotPassword} />`;
      break;
    case '/reset-password':
      page = html`<${ResetPassword} />`;
      break;
    default:
      page = session ? html`<${Home} key=${session.user?.id} />` : html`<${SignIn} links=${signInLinks} />`;
  }
  return html`<header class="bar"><${Link} href=${`${BASE}/`} class="brand">Accountable</${Link}></header>
    <main id="main">${page}</main>
    <${FreshSignIn} />`;
}

resume().finally(() => render(html`<${Pages} />`, document.getElementById('app')));
