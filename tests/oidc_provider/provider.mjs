// A real OpenID provider (panva/oidc-provider) for the test suite. Never used outside tests.
//
// Usage: node provider.mjs '<json config>'
//   config: {"client_id", "client_secret", "redirect_uris": [...], "post_logout_redirect_uris": [...],
//            "accounts": {"<sub>": {"email": ..., "name": ..., "groups": [...]}}}
//
// Listens on 127.0.0.1 on a free port, generates a fresh RS256 signing key, and prints
// one JSON line {"issuer": ..., "port": ...} to stdout when ready. Logins go through
// oidc-provider's devInteractions (a form taking any `login`, which becomes the `sub`).
//
// Test-only routes, under /test/ (this script exists only for the test suite):
//   POST /test/accounts/<sub>  JSON claims to set for that account (e.g. a changed email)
//   POST /test/mint            JSON {"claims": {...}, "header": {...}, "unset": ["exp", ...]} -> {"token": "<JWT>"},
//                              signed with the provider's own key, for bearer-token edge cases
import http from 'node:http';

import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2] || '{}');
const accounts = new Map(Object.entries(config.accounts || {}));

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const kid = `test-${Date.now().toString(36)}`;
const signingJwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };

const server = http.createServer();
await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: config.redirect_uris,
    post_logout_redirect_uris: config.post_logout_redirect_uris || [],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingJwk] },
  cookies: { keys: [`cookie-key-${Math.random()}`] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username', 'groups'],
  },
  // Put the scope claims into the ID token too, as many IdPs do, so that the portal's
  // group mapping and profile update can work from the ID token alone.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, email_verified: true, ...(accounts.get(sub) || {}) };
      },
    };
  },
});

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
}

function sendJson(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const providerCallback = provider.callback();
server.on('request', async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (req.method === 'POST' && url.pathname.startsWith('/test/accounts/')) {
      const sub = decodeURIComponent(url.pathname.slice('/test/accounts/'.length));
      accounts.set(sub, { ...(accounts.get(sub) || {}), ...(await readJson(req)) });
      sendJson(res, 200, { sub, claims: accounts.get(sub) });
      return;
    }
    if (req.method === 'POST' && url.pathname === '/test/mint') {
      const { claims = {}, header = {}, unset = [] } = await readJson(req);
      const now = Math.floor(Date.now() / 1000);
      const payload = {
        iss: issuer, aud: config.client_id, iat: now, exp: now + 600, ...claims,
      };
      for (const name of unset) delete payload[name];
      const token = await new SignJWT(payload)
        .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT', ...header }).sign(privateKey);
      sendJson(res, 200, { token });
      return;
    }
    providerCallback(req, res);
  } catch (error) {
    sendJson(res, 500, { error: String(error) });
  }
});

process.on('SIGTERM', () => { server.close(); process.exit(0); });
process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
