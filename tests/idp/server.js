// A real OpenID Connect provider for Postern's single sign-on tests.
//
// oidc-provider with its own login and consent pages (plain HTML forms the
// tests fill in with an HTTP client), one confidential client, and accounts
// with claims. Started by tests/src/idp.rs; prints "ready" once it listens.
//
// Environment:
//   IDP_PORT            port on 127.0.0.1 (the issuer is http://127.0.0.1:PORT)
//   IDP_CLIENT_ID       client ID of the gateway
//   IDP_CLIENT_SECRET   its secret (client_secret_basic)
//   IDP_REDIRECT_URIS   comma-separated redirect URIs of the client
//   IDP_ACCOUNTS        JSON: { "dana": { "password": "...", "claims": { "groups": ["dba"] } } }
//
// Any of them may also be given as --port=, --client-id=, ... arguments.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

import Provider from 'oidc-provider';

function setting(name) {
  const flag = `--${name.toLowerCase().replace(/^idp_/, '').replaceAll('_', '-')}=`;
  const arg = process.argv.find((a) => a.startsWith(flag));
  const value = arg ? arg.slice(flag.length) : process.env[name];
  if (value === undefined || value === '') {
    console.error(`idp: ${name} (or ${flag}) is required`);
    process.exit(2);
  }
  return value;
}

const port = Number(setting('IDP_PORT'));
const issuer = `http://127.0.0.1:${port}`;
const accounts = JSON.parse(setting('IDP_ACCOUNTS'));

// A signing key made now: nothing secret is committed, and every run has
// its own.
const signingKey = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: `test-${randomBytes(4).toString('hex')}`,
  use: 'sig',
  alg: 'RS256',
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: setting('IDP_CLIENT_ID'),
    client_secret: setting('IDP_CLIENT_SECRET'),
    redirect_uris: setting('IDP_REDIRECT_URIS').split(','),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  async findAccount(_ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, ...account.claims };
      },
    };
  },
  // Scope -> the claims it releases. `groups` and `db` are not standard;
  // naming them here makes them scopes the provider accepts.
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
    db: ['db_users'],
  },
  // Put the released claims in the ID token, as most enterprise providers
  // do for groups, rather than only behind the userinfo endpoint.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  jwks: { keys: [signingKey] },
  ttl: {
    AccessToken: 300,
    AuthorizationCode: 60,
    IdToken: 300,
    Interaction: 600,
    Session: 600,
    Grant: 600,
  },
});

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>
<body><h1>${escape(title)}</h1>${body}</body></html>`;
}

function loginPage(uid, error) {
  return page('Sign in to the test IdP', `
${error ? `<p class="error">${escape(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${escape(uid)}/login">
  <input type="hidden" name="uid" value="${escape(uid)}">
  <label>User <input name="login" autofocus></label>
  <label>Password <input name="password" type="password"></label>
  <button type="submit">Sign in</button>
</form>`);
}

function consentPage(uid, clientId, scopes) {
  return page('Allow access?', `
<p>${escape(clientId)} asks for: ${scopes.map(escape).join(', ')}</p>
<form id="consent" method="post" action="/interaction/${escape(uid)}/confirm">
  <input type="hidden" name="uid" value="${escape(uid)}">
  <button type="submit">Allow</button>
</form>
<form id="deny" method="post" action="/interaction/${escape(uid)}/abort">
  <input type="hidden" name="uid" value="${escape(uid)}">
  <button type="submit">Deny</button>
</form>`);
}

async function formBody(req) {
  let data = '';
  for await (const chunk of req) data += chunk;
  return Object.fromEntries(new URLSearchParams(data));
}

// The interaction pages: login (with a password check), consent, deny.
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/);
  if (!match) return next();
  const [, uid, action] = match;
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.uid !== uid) ctx.throw(400, 'interaction mismatch');
  const { prompt, params, session } = details;
  const finish = async (result, merge) => {
    const target = await provider.interactionResult(ctx.req, ctx.res, result, {
      mergeWithLastSubmission: merge,
    });
    ctx.status = 303;
    ctx.redirect(target);
  };

  if (ctx.method === 'GET' && !action) {
    ctx.type = 'html';
    ctx.body = prompt.name === 'login'
      ? loginPage(uid)
      : consentPage(uid, params.client_id, String(params.scope).split(' '));
    return undefined;
  }
  if (ctx.method !== 'POST') ctx.throw(405);
  const form = await formBody(ctx.req);

  if (action === 'login') {
    const account = accounts[form.login];
    if (prompt.name !== 'login' || !account || account.password !== form.password) {
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = loginPage(uid, 'Wrong user or password.');
      return undefined;
    }
    return finish({ login: { accountId: form.login } }, false);
  }
  if (action === 'abort') {
    return finish({ error: 'access_denied', error_description: 'End-User denied the request' }, false);
  }
  // confirm
  if (prompt.name !== 'consent') ctx.throw(400, 'nothing to confirm');
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  return finish({ consent: { grantId: await grant.save() } }, true);
});

const server = createServer(provider.callback());
server.on('error', (err) => {
  console.error(`idp: cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  console.log('ready');
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
