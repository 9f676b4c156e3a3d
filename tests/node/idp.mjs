// A real OpenID Provider for the end-to-end tests: the `oidc-provider` package (OpenID
// certified) as the issuer of the sidecar's tokens.
//
//   node idp.mjs --port 9000 --jwks keys.json [--issuer http://127.0.0.1:9000] [--ttl 600]
//
// Serves discovery, the JWKS (the public half of --jwks: RS256, ES256, EdDSA keys, see
// idp-keys.mjs), client-credentials and authorization-code grants. Access tokens are JWTs
// (RFC 9068, `typ: at+jwt`) for the requested `resource` (RFC 8707): their `aud` is that
// resource. The client decides the signing algorithm: `agent-rs256`, `agent-es256` and
// `agent-eddsa` (secret: `<client_id>-secret`). Prints `idp ready <issuer>` once listening.
// Rotation is a restart with another --jwks file.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    jwks: { type: 'string' },
    issuer: { type: 'string' },
    ttl: { type: 'string', default: '600' },
  },
});
if (!values.port || !values.jwks) {
  console.error('usage: node idp.mjs --port PORT --jwks FILE [--issuer URL] [--ttl SECONDS]');
  process.exit(2);
}
const port = Number(values.port);
const issuer = values.issuer ?? `http://127.0.0.1:${port}`;
const ttl = Number(values.ttl);
const jwks = JSON.parse(readFileSync(values.jwks, 'utf8'));

const SCOPES = ['mcp:tools', 'mcp:admin'];
const ALGS = { 'agent-rs256': 'RS256', 'agent-es256': 'ES256', 'agent-eddsa': 'EdDSA' };
const clients = Object.entries(ALGS).map(([clientId, alg]) => ({
  client_id: clientId,
  client_secret: `${clientId}-secret`,
  grant_types: ['client_credentials', 'authorization_code'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/callback'],
  id_token_signed_response_alg: alg,
  scope: ['openid', ...SCOPES].join(' '),
}));

const provider = new Provider(issuer, {
  jwks,
  clients,
  scopes: ['openid', ...SCOPES],
  // Every login is an account of that name; the tests need ID tokens, not users.
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Without a resource parameter, no audience (and an opaque token): the tests always ask.
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: SCOPES.join(' '),
        audience: resource,
        accessTokenTTL: ttl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: ALGS[client.clientId] ?? 'RS256' } },
      }),
    },
  },
  ttl: { ClientCredentials: ttl, AccessToken: ttl, IdToken: ttl },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`idp ready ${issuer}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
