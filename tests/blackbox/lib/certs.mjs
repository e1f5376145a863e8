// Throwaway TLS material made with the openssl command line (installed by
// scripts/deps.sh), for TLS tests: a CA, a certificate for 127.0.0.1 signed
// by it (SAN IP:127.0.0.1, DNS:localhost), a second CA that signed nothing
// but a "rogue" certificate of the same shape. Keys are mode 600.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

function openssl(args, cwd) {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.error) throw new Error(`openssl ${args[0]}: ${r.error.message} (scripts/deps.sh installs openssl)`);
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

export function makeCerts(prefix = 'driftd-tls-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=driftd test CA'], dir);
  openssl(['req', '-x509', ...ec, '-keyout', 'other.key', '-out', 'other.pem', '-days', '2', '-subj', '/CN=another CA'], dir);
  fs.writeFileSync(path.join(dir, 'ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const [name, ca] of [['node', 'ca'], ['rogue', 'other']]) {
    openssl(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/CN=127.0.0.1'], dir);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
      '-out', `${name}.pem`, '-days', '2', '-extfile', 'ext'], dir);
  }
  for (const f of ['ca.key', 'other.key', 'node.key', 'rogue.key']) fs.chmodSync(path.join(dir, f), 0o600);
  const p = (f) => path.join(dir, f);
  return {
    dir, ca: p('ca.pem'), other: p('other.pem'), cert: p('node.pem'), key: p('node.key'), rogueCert: p('rogue.pem'), rogueKey: p('rogue.key'),
  };
}
