// Writes a private JWKS for idp.mjs: one RS256, one ES256 and one EdDSA (Ed25519) key, with
// kids `<prefix>-rs256`, `<prefix>-es256`, `<prefix>-eddsa`.
//
//   node idp-keys.mjs OUT.json PREFIX
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';

const [out, prefix] = process.argv.slice(2);
if (!out || !prefix) {
  console.error('usage: node idp-keys.mjs OUT.json PREFIX');
  process.exit(2);
}
const jwk = (type, options, alg, kid) => {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, kid, use: 'sig' };
};
const keys = [
  jwk('rsa', { modulusLength: 2048 }, 'RS256', `${prefix}-rs256`),
  jwk('ec', { namedCurve: 'P-256' }, 'ES256', `${prefix}-es256`),
  jwk('ed25519', {}, 'EdDSA', `${prefix}-eddsa`),
];
writeFileSync(out, JSON.stringify({ keys }));
