// The console, for admins and auditors: users (search, one user's page and
// the actions on it), a user's history (timeline, the state at any
// instant, the chain's verification) and the pipeline's health.

import '../style.css';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, USER_FIELDS, currentSession, gql, onSession, resume, signOut } from '../api.js';
import { Action, Alert, Field, Form, FreshSignIn, Heading, Link, SignIn, counted, html, render, useLoad, usePath, when } from '../ui.js';

const BASE = '/console';
const STATUSES = ['ACTIVE', 'DEACTIVATED', 'DELETED'];
const ROLES = ['USER', 'AUDITOR', 'ADMIN'];

const isAdmin = () => currentSession()?.user?.roles?.includes('ADMIN');

function Users() {
  const [emailPrefix, setEmailPrefix] = useState('');
  const [displayNamePrefix, setName] = useState('');
  const [status, setStatus] = useState('');
  const [role, setRole] = useState('');
  const [query, setQuery] = useState({ filter: {}, after: null, earlier: [] });
  const [page, error] = useLoad(
    () =>
      gql(
        `query Users($after: String, $filter: UserFilter) { users(first: 20, after: $after, filter: $filter) {
          pageInfo { hasNextPage endCursor } edges { node { id email displayName status roles createdAt } } } }`,
        { after: query.after, filter: query.filter },
      ).then((d) => d.users),
    [query],
  );
  const search = async () => {
    const filter = {};
    if (emailPrefix) filter.emailPrefix = emailPrefix;
    if (displayNamePrefix) filter.displayNamePrefix = displayNamePrefix;
    if (status) filter.status = status;
    if (role) filter.role = role;
    setQuery({ filter, after: null, earlier: [] });
  };
  return html`<section>
    <${Heading}>Users</${Heading}>
    <${Form} action=${search} submit="Search">
      <div class="filters">
        <${Field} label="Email starts with" value=${emailPrefix} onInput=${setEmailPrefix} required=${false} />
        <${Field} label="Name starts with" value=${displayNamePrefix} onInput=${setName} required=${false} />
        <div class="field">
          <label for="status">Status</label>
          <select id="status" value=${status} onChange=${(e) => setStatus(e.currentTarget.value)}>
            <option value="">Active and deactivated</option>
            ${STATUSES.map((s) => html`<option value=${s}>${s.toLowerCase()}</option>`)}
          </select>
        </div>
        <div class="field">
          <label for="role">Role</label>
          <select id="role" value=${role} onChange=${(e) => setRole(e.currentTarget.value)}>
            <option value="">Any</option>
            ${ROLES.map((r) => html`<option value=${r}>${r.toLowerCase()}</option>`)}
          </select>
        </div>
      </div>
    </${Form}>
    <${Alert} error=${error} />
    <table>
      <caption>${page ? `${page.edges.length} users on this page` : 'Loading…'}</caption>
      <thead><tr><th scope="col">Email</th><th scope="col">Name</th><th scope="col">Status</th><th scope="col">Roles</th><th scope="col">Registered</th></tr></thead>
      <tbody>
        ${page?.edges.map(
          ({ node: u }) => html`<tr>
            <td><${Link} href=${`${BASE}/users/${u.id}`}>${u.email ?? '(erased)'}</${Link}></td>
            <td>${u.displayName ?? '—'}</td>
            <td><span class=${`badge ${u.status === 'ACTIVE' ? 'ok' : 'warn'}`}>${u.status.toLowerCase()}</span></td>
            <td>${u.roles.join(', ').toLowerCase()}</td>
            <td>${when(u.createdAt)}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    <div class="actions">
      <button type="button" disabled=${query.earlier.length === 0} onClick=${() =>
        setQuery({ ...query, after: query.earlier.at(-1), earlier: query.earlier.slice(0, -1) })}>Previous page</button>
      <button type="button" disabled=${!page?.pageInfo.hasNextPage} onClick=${() =>
        setQuery({ ...query, after: page.pageInfo.endCursor, earlier: [...query.earlier, query.after] })}>Next page</button>
    </div>
  </section>`;
}

const USER = `query User($id: ID!, $minVersion: Int) { user(id: $id, minVersion: $minVersion) { ${USER_FIELDS} passkeys { id name createdAt lastUsedAt }
  secondFactors { totpEnabled totpPending recoveryCodesLeft } lockedUntil } }`;
const SESSIONS = `query Sessions($id: ID!) { userSessions(userId: $id) { id startedAt lastUsedAt clientAddress userAgent factors } }`;

/**
 * Runs a change decided on the user as the page shows them. When the user
 * changed meanwhile (`CONFLICT`, with the version they are at), the page
 * reads them again at that version and says so: the admin looks again
 * before trying again.
 */
async function onWhatIsShown(change, changed) {
  try {
    return await change();
  } catch (error) {
    const current = error.extensions?.currentVersion;
    if (error.code !== 'CONFLICT' || current === undefined) throw error;
    changed(current);
    throw new ApiError(
      `The user changed since this page read them (they are at version ${current} now). The page shows them as they are: look again, then try again.`,
      'CONFLICT',
    );
  }
}

function Reasoned({ label, mutation, user, done }) {
  const [reason, setReason] = useState('');
  const act = async () => {
    const answer = await onWhatIsShown(
      () =>
        gql(`mutation Act($input: UserRefInput!) { ${mutation}(input: $input) { version } }`, {
          input: { id: user.id, reason, expectedVersion: user.version },
        }),
      done,
    );
    setReason('');
    done(answer[mutation].version);
  };
  return html`<${Form} action=${act} submit=${label}>
    <${Field} label=${`Reason to ${label.toLowerCase()}`} value=${reason} onInput=${setReason} maxlength="500" hint="Kept in the event, for the audit." />
  </${Form}>`;
}

function Erase({ user, done }) {
  const [typed, setTyped] = useState('');
  const erase = async () => {
    if (typed !== user.email) throw new Error('Type the address exactly to confirm the erasure.');
    const { eraseUser } = await gql(`mutation Erase($input: UserRefInput!) { eraseUser(input: $input) { version } }`, {
      input: { id: user.id },
    });
    done(eraseUser.version);
  };
  return html`<details>
    <summary>Erase this user…</summary>
    <p>Erasure destroys the user's key: their personal data can never be read again, in the store or on Kafka. It cannot be undone.</p>
    <${Form} action=${erase} submit="Erase for good">
      <${Field} label=${`Type ${user.email} to confirm`} value=${typed} onInput=${setTyped} autocomplete="off" />
    </${Form}>
  </details>`;
}

function Actions({ user, changed }) {
  const role = async (mutation, name) => {
    const answer = await onWhatIsShown(
      () =>
        gql(`mutation Role($input: RoleInput!) { ${mutation}(input: $input) { version } }`, {
          input: { id: user.id, role: name, expectedVersion: user.version },
        }),
      changed,
    );
    changed(answer[mutation].version);
  };
  const unlock = async () => {
    const { unlockUser } = await gql(`mutation Unlock($input: UserRefInput!) { unlockUser(input: $input) { version } }`, {
      input: { id: user.id },
    });
    changed(unlockUser.version);
  };
  return html`<section aria-labelledby="actions">
    <h2 id="actions">Actions</h2>
    ${user.status === 'ACTIVE' && html`<${Reasoned} label="Deactivate" mutation="deactivateUser" user=${user} done=${changed} />`}
    ${user.status === 'DEACTIVATED' && html`<${Reasoned} label="Reactivate" mutation="reactivateUser" user=${user} done=${changed} />`}
    <p class="actions">
      ${ROLES.filter((r) => r !== 'USER').map((r) =>
        user.roles.includes(r)
          ? html`<${Action} action=${() => role('revokeRole', r)}>Revoke ${r.toLowerCase()}</${Action}>`
          : html`<${Action} action=${() => role('assignRole', r)}>Make ${r.toLowerCase()}</${Action}>`,
      )}
      ${user.lockedUntil && html`<${Action} action=${unlock}>Unlock sign-in</${Action}>`}
    </p>
    ${user.email && html`<${Erase} user=${user} done=${changed} />`}
  </section>`;
}

function UserSessions({ user }) {
  const [sessions, error, reload] = useLoad(() => gql(SESSIONS, { id: user.id }).then((d) => d.userSessions), [user.version]);
  const end = async (ids) => {
    for (const id of ids) await gql(`mutation End($id: ID!) { endSession(id: $id) }`, { id });
    reload();
  };
  return html`<section aria-labelledby="sessions">
    <h2 id="sessions">Sessions</h2>
    <${Alert} error=${error} />
    ${sessions &&
    html`<table>
        <caption>${counted(sessions.length, 'live session')}</caption>
        <thead><tr><th scope="col">Device</th><th scope="col">Address</th><th scope="col">Signed in</th><th scope="col">Last used</th><th scope="col">With</th><th scope="col"><span class="visually-hidden">Action</span></th></tr></thead>
        <tbody>
          ${sessions.map(
            (s) => html`<tr>
              <td>${s.userAgent ?? 'unknown'}</td><td>${s.clientAddress ?? '—'}</td><td>${when(s.startedAt)}</td>
              <td>${when(s.lastUsedAt)}</td><td>${s.factors.join(', ')}</td>
              <td><${Action} action=${() => end([s.id])} danger label="End session">End</${Action}></td>
            </tr>`,
          )}
        </tbody>
      </table>
      ${sessions.length > 0 && html`<${Action} action=${() => end(sessions.map((s) => s.id))} danger>End every session</${Action}>`}`}
  </section>`;
}

function UserPage({ id }) {
  // After a change, the read side is asked for at least its version.
  const [seen, setSeen] = useState(null);
  const [user, error] = useLoad(() => gql(USER, { id, minVersion: seen }).then((d) => d.user), [id, seen]);
  if (error) return html`<${Alert} error=${error} />`;
  if (user === undefined) return html`<p role="status">Loading…</p>`;
  if (user === null) {
    return html`<section>
      <${Heading}>No such user</${Heading}>
      <p>The read side has no user with this id: an erased or deleted user leaves it. Their history stays.</p>
      <p><${Link} href=${`${BASE}/users/${id}/history`}>History</${Link}></p>
    </section>`;
  }
  return html`<section>
    <${Heading}>${user.displayName ?? '(erased user)'}</${Heading}>
    <nav class="tabs" aria-label="User">
      <${Link} href=${`${BASE}/users/${id}`} aria-current="page">Profile</${Link}>
      <${Link} href=${`${BASE}/users/${id}/history`}>History</${Link}>
    </nav>
    <dl>
      <dt>Email</dt><dd>${user.email ?? '(erased)'} ${user.emailVerified && html`<span class="badge ok">verified</span>`}</dd>
      <dt>Status</dt><dd><span class=${`badge ${user.status === 'ACTIVE' ? 'ok' : 'warn'}`} id="status">${user.status.toLowerCase()}</span></dd>
      <dt>Roles</dt><dd>${user.roles.join(', ').toLowerCase()}</dd>
      <dt>Id</dt><dd><code>${user.id}</code></dd>
      <dt>Version</dt><dd>${user.version}</dd>
      <dt>Registered</dt><dd>${when(user.createdAt)}</dd>
      <dt>Last change</dt><dd>${when(user.updatedAt)}</dd>
      <dt>Locale, time zone</dt><dd>${user.locale ?? '—'}, ${user.timeZone ?? '—'}</dd>
      <dt>Authenticator app</dt><dd id="totp">${app(user.secondFactors)}</dd>
      <dt>Passkeys</dt>
      <dd>${user.passkeys.length === 0 ? 'none' : user.passkeys.map((p) => html`<span class="badge">${p.name ?? 'passkey'}</span> `)}</dd>
      <dt>Sign-in</dt>
      <dd id="lockout">${user.lockedUntil
        ? html`<span class="badge warn">locked</span> until ${when(user.lockedUntil)}, after too many failed attempts`
        : 'not locked'}</dd>
    </dl>
    ${isAdmin() && html`<${Actions} user=${user} changed=${setSeen} />`}
    ${isAdmin() && html`<${UserSessions} user=${user} />`}
  </section>`;
}

/** What the account's authenticator app stands at, in words. */
function app(factors) {
  if (factors.totpEnabled) {
    return html`<span class="badge ok">on</span> ${counted(factors.recoveryCodesLeft, 'recovery code')} left`;
  }
  return factors.totpPending ? 'being set up (not confirmed yet)' : 'off';
}

const HISTORY = `query History($id: ID!, $after: String) { userHistory(id: $id, first: 50, after: $after) {
  pageInfo { hasNextPage endCursor }
  edges { node { position sequence eventType cloudEventType recordedAt actor requestId correlationId data erased hash } } } }`;
const AT = `query At($id: ID!, $version: Int, $at: DateTime) { userAt(id: $id, version: $version, at: $at) { ${USER_FIELDS} } }`;
const VERIFY = `query Verify($id: ID) { verifyHistory(id: $id) {
  ok eventsChecked streamsChecked checkpointsChecked brokenAt { userId sequence checkpoint reason } } }`;

function Verification({ id, onResult }) {
  const [result, error, reload] = useLoad(() => gql(VERIFY, { id }).then((d) => d.verifyHistory), [id]);
  useEffect(() => onResult(result?.brokenAt?.sequence ?? null), [result]);
  return html`<section aria-labelledby="verification">
    <h2 id="verification">Chain verification</h2>
    <${Alert} error=${error} />
    ${result?.ok &&
    html`<p class="alert success" role="status">
      Verified: every one of ${result.eventsChecked} events links to the one before it, and ${result.checkpointsChecked} signed checkpoints hold.
    </p>`}
    ${result &&
    !result.ok &&
    html`<p class="alert error" role="alert">
      <strong>The chain is broken</strong>${result.brokenAt.sequence != null && ` at event ${result.brokenAt.sequence}`}${result.brokenAt.checkpoint != null && ` at checkpoint ${result.brokenAt.checkpoint}`}: ${result.brokenAt.reason}. Events checked before the break: ${result.eventsChecked}.
    </p>`}
    <${Action} action=${reload}>Verify again</${Action}>
  </section>`;
}

function StateAt({ id, version }) {
  const [at, setAt] = useState('');
  const [state, setState] = useState(null);
  const [error, setError] = useState(null);
  const show = async (vars) => {
    setError(null);
    try {
      setState({ ...vars, user: (await gql(AT, { id, ...vars })).userAt });
    } catch (failure) {
      setError(failure);
    }
  };
  useEffect(() => {
    if (version != null) show({ version });
  }, [version]);
  return html`<section aria-labelledby="state-at">
    <h2 id="state-at">State at an instant</h2>
    <${Form} action=${() => show({ at: new Date(at).toISOString() })} submit="Show the state">
      <${Field} label="Instant" type="datetime-local" step="1" value=${at} onInput=${setAt} />
    </${Form}>
    <${Alert} error=${error} />
    ${state &&
    html`<div class="state" role="region" aria-label="State">
      <p>${state.version != null ? `After event ${state.version}` : `At ${when(state.at)}`}:</p>
      ${state.user
        ? html`<dl>
            <dt>Email</dt><dd>${state.user.email ?? '(erased)'}</dd>
            <dt>Name</dt><dd>${state.user.displayName ?? '—'}</dd>
            <dt>Status</dt><dd>${state.user.status.toLowerCase()}</dd>
            <dt>Roles</dt><dd>${state.user.roles.join(', ').toLowerCase()}</dd>
            <dt>Version</dt><dd>${state.user.version}</dd>
          </dl>`
        : html`<p>The user did not exist yet.</p>`}
    </div>`}
  </section>`;
}

function History({ id }) {
  const [pages, setPages] = useState([]);
  const [after, setAfter] = useState(null);
  const [version, setVersion] = useState(null);
  const [broken, setBroken] = useState(null);
  const [page, error] = useLoad(() => gql(HISTORY, { id, after }).then((d) => d.userHistory), [id, after]);
  useEffect(() => {
    if (page) setPages((earlier) => [...earlier, ...page.edges.map((e) => e.node)]);
  }, [page]);
  return html`<section>
    <${Heading}>History</${Heading}>
    <nav class="tabs" aria-label="User">
      <${Link} href=${`${BASE}/users/${id}`}>Profile</${Link}>
      <${Link} href=${`${BASE}/users/${id}/history`} aria-current="page">History</${Link}>
    </nav>
    <${Verification} id=${id} onResult=${setBroken} />
    <${StateAt} id=${id} version=${version} />
    <section aria-labelledby="timeline">
      <h2 id="timeline">Timeline</h2>
      <${Alert} error=${error} />
      <ol class="timeline">
        ${pages.map(
          (e) => html`<li data-event=${e.eventType} class=${e.sequence === broken ? 'broken' : ''}>
            <p>
              <strong>${e.sequence}. ${e.eventType}</strong> <time datetime=${e.recordedAt}>${when(e.recordedAt)}</time>
              ${e.erased && html` <span class="badge warn">erased</span>`}
              ${e.sequence === broken && html` <span class="badge bad">does not verify</span>`}
            </p>
            <p class="meta">by ${e.actor ?? 'unknown'} · request ${e.requestId || '—'} · correlation ${e.correlationId || '—'} · position ${e.position}</p>
            <details><summary>Data and hash</summary><pre>${JSON.stringify(e.data, null, 2)}</pre><p class="meta">hash <code>${e.hash}</code></p></details>
            <button type="button" class="link" onClick=${() => setVersion(e.sequence)}>State after this event</button>
          </li>`,
        )}
      </ol>
      ${page?.pageInfo.hasNextPage && html`<button type="button" onClick=${() => setAfter(page.pageInfo.endCursor)}>Load more</button>`}
    </section>
  </section>`;
}

const PIPELINE = `{ pipeline {
  relay { unpublished parked lagSeconds generation }
  projections { name lag deadLetters }
  mail { due sent parked dropped oldestDueSeconds }
  deadLetters { id projection topic partition offset error failedAt } } }`;

/** The `accountable_*` samples of `/metrics`, with their help texts. */
async function metrics() {
  const response = await fetch('/metrics');
  const text = await response.text();
  const help = new Map();
  const samples = [];
  for (const line of text.split('\n')) {
    const described = line.match(/^# HELP (\S+) (.*)$/);
    if (described) help.set(described[1], described[2]);
    const sample = line.match(/^(accountable_[a-z_]+)(\{[^}]*\})? (\S+)$/);
    // A histogram's buckets and sums are for dashboards; its count is kept.
    const detail = sample && (/(le|quantile)="/.test(sample[2] ?? '') || sample[1].endsWith('_sum'));
    if (sample && !detail) samples.push({ name: sample[1], labels: sample[2] ?? '', value: sample[3] });
  }
  return samples.map((s) => ({ ...s, help: help.get(s.name.replace(/_(bucket|sum|count)$/, '')) ?? help.get(s.name) ?? '' }));
}

function Pipeline() {
  const [health, error, reload] = useLoad(() => gql(PIPELINE).then((d) => d.pipeline), []);
  const [samples, metricsError] = useLoad(metrics, [health]);
  const retryProjection = async (projection) => {
    await gql(`mutation Retry($p: String!) { retryDeadLetters(projection: $p) { applied stillParked } }`, { p: projection });
    reload();
  };
  const retryMail = async () => {
    await gql(`mutation { retryParkedMail }`);
    reload();
  };
  return html`<section>
    <${Heading}>Pipeline health</${Heading}>
    <${Alert} error=${error} />
    ${health &&
    html`<div class="cards">
        <article aria-labelledby="relay">
          <h2 id="relay">Relay to Kafka</h2>
          <p class=${health.relay.lagSeconds > 10 ? 'figure warn' : 'figure'}>${health.relay.lagSeconds.toFixed(1)} s</p>
          <p>the oldest unpublished event has waited; ${health.relay.unpublished} events unpublished, ${health.relay.parked} parked, generation ${health.relay.generation}.</p>
        </article>
        ${health.projections.map(
          (p) => html`<article aria-labelledby=${`projection-${p.name}`}>
            <h2 id=${`projection-${p.name}`}>Projection ${p.name}</h2>
            <p class=${p.lag > 0 ? 'figure warn' : 'figure'}>${p.lag}</p>
            <p>messages behind; ${p.deadLetters} dead letters.</p>
            ${p.deadLetters > 0 && isAdmin() && html`<${Action} action=${() => retryProjection(p.name)}>Retry its dead letters</${Action}>`}
          </article>`,
        )}
        <article aria-labelledby="mail">
          <h2 id="mail">Mail</h2>
          <p class=${health.mail.parked > 0 ? 'figure warn' : 'figure'}>${health.mail.due} due</p>
          <p>${health.mail.sent} sent, ${health.mail.parked} parked, ${health.mail.dropped} dropped; the oldest due has waited ${health.mail.oldestDueSeconds.toFixed(1)} s.</p>
          ${health.mail.parked > 0 && isAdmin() && html`<${Action} action=${retryMail}>Send parked mail again</${Action}>`}
        </article>
      </div>
      <section aria-labelledby="dead">
        <h2 id="dead">Dead letters</h2>
        ${health.deadLetters.length === 0
          ? html`<p>None: every message applied.</p>`
          : html`<table>
              <thead><tr><th scope="col">Projection</th><th scope="col">Where</th><th scope="col">Error</th><th scope="col">Parked</th></tr></thead>
              <tbody>${health.deadLetters.map(
                (d) => html`<tr><td>${d.projection}</td><td>${d.topic} [${d.partition}] @ ${d.offset}</td><td>${d.error}</td><td>${when(d.failedAt)}</td></tr>`,
              )}</tbody>
            </table>`}
      </section>`}
    <section aria-labelledby="metrics">
      <h2 id="metrics">Every figure of /metrics</h2>
      <${Alert} error=${metricsError} />
      <table class="figures">
        <thead><tr><th scope="col">Figure</th><th scope="col">Value</th><th scope="col">What it is</th></tr></thead>
        <tbody>${samples?.map(
          (s) => html`<tr><td><code>${s.name}${s.labels}</code></td><td>${s.value}</td><td>${s.help}</td></tr>`,
        )}</tbody>
      </table>
    </section>
    <${Action} action=${reload}>Refresh</${Action}>
  </section>`;
}

function Console() {
  const path = usePath();
  const [session, setCurrent] = useState(currentSession());
  useEffect(() => onSession(setCurrent), []);
  const route = path.replace(/\/+$/, '').slice(BASE.length) || '/';
  const roles = session?.user?.roles ?? [];
  let page;
  if (!session) {
    page = html`<${SignIn} links=${html`<p>For admins and auditors. <a href="/account/">Your own account</a></p>`} />`;
  } else if (!roles.includes('ADMIN') && !roles.includes('AUDITOR')) {
    page = html`<${Heading}>Not for this account</${Heading}><p>The console is for admins and auditors.</p>`;
  } else {
    const user = route.match(/^\/users\/([0-9a-f-]{36})(\/history)?$/);
    if (user) page = user[2] ? html`<${History} key=${user[1]} id=${user[1]} />` : html`<${UserPage} key=${user[1]} id=${user[1]} />`;
    else if (route === '/pipeline') page = html`<${Pipeline} />`;
    else page = html`<${Users} />`;
  }
  return html`<header class="bar">
      <${Link} href=${`${BASE}/`} class="brand">Accountable console</${Link}>
      ${session &&
      html`<nav aria-label="Console">
        <${Link} href=${`${BASE}/`}>Users</${Link}>
        <${Link} href=${`${BASE}/pipeline`}>Pipeline</${Link}>
        <button type="button" class="link" onClick=${signOut}>Sign out ${session.user?.email}</button>
      </nav>`}
    </header>
    <main id="main">${page}</main>
    <${FreshSignIn} />`;
}

resume().finally(() => render(html`<${Console} />`, document.getElementById('app')));
