// Gets an ID token from idp.mjs the way a relying party does: the authorization-code flow
// with PKCE and a nonce, through oidc-provider's development login and consent pages.
// Prints the ID token (and nothing else) on stdout.
//
//   node idp-id-token.mjs ISSUER CLIENT_ID [SUBJECT]
import { createHash, randomBytes } from 'node:crypto';

const [issuer, clientId, subject = 'alice'] = process.argv.slice(2);
if (!issuer || !clientId) {
  console.error('usage: node idp-id-token.mjs ISSUER CLIENT_ID [SUBJECT]');
  process.exit(2);
}
const redirectUri = 'http://127.0.0.1/callback';
const verifier = randomBytes(32).toString('base64url');
const challenge = createHash('sha256').update(verifier).digest('base64url');
const jar = new Map();

async function go(url, init = {}) {
  const headers = { ...(init.headers ?? {}) };
  if (jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const res = await fetch(new URL(url, issuer), { ...init, headers, redirect: 'manual' });
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair.indexOf('=');
    jar.set(pair.slice(0, i), pair.slice(i + 1));
  }
  return res;
}

const form = (body) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(body).toString(),
});

const auth = new URL('/auth', issuer);
auth.search = new URLSearchParams({
  client_id: clientId,
  response_type: 'code',
  scope: 'openid',
  redirect_uri: redirectUri,
  nonce: randomBytes(8).toString('hex'),
  state: randomBytes(8).toString('hex'),
  code_challenge: challenge,
  code_challenge_method: 'S256',
}).toString();

let res = await go(auth);
let code;
// login, consent, then the redirect with the code: bounded.
for (let step = 0; step < 10 && !code; step += 1) {
  const location = res.headers.get('location');
  if (!location) {
    console.error(`no redirect at step ${step}: ${res.status} ${await res.text()}`);
    process.exit(1);
  }
  const next = new URL(location, issuer);
  if (next.href.startsWith(redirectUri)) {
    code = next.searchParams.get('code');
    break;
  }
  if (next.pathname.startsWith('/interaction/')) {
    const page = await (await go(next)).text();
    const prompt = page.includes('name="login"') ? 'login' : 'consent';
    const body = prompt === 'login' ? { prompt, login: subject, password: 'x' } : { prompt };
    res = await go(next, form(body));
  } else {
    res = await go(next);
  }
}
if (!code) {
  console.error('no authorization code');
  process.exit(1);
}
const basic = Buffer.from(`${clientId}:${clientId}-secret`).toString('base64');
const tokenRes = await fetch(new URL('/token', issuer), {
  method: 'POST',
  headers: {
    'content-type': 'application/x-www-form-urlencoded',
    authorization: `Basic ${basic}`,
  },
  body: new URLSearchParams({
    grant_type: 'authorization_code',
    code,
    redirect_uri: redirectUri,
    code_verifier: verifier,
  }).toString(),
});
const tokens = await tokenRes.json();
if (!tokens.id_token) {
  console.error(`no id_token: ${tokenRes.status} ${JSON.stringify(tokens)}`);
  process.exit(1);
}
process.stdout.write(tokens.id_token);
