// Deployment files (deploy/): checked as far as this machine can without
// systemd as PID 1, a Docker daemon or a Kubernetes API server.
//
// - systemd: `systemd-analyze verify` on a temporary copy of
//   driftd@.service (ExecStart pointed at the built driftd, credential and
//   env paths at temp files), any warning fails; `systemd-analyze security
//   --offline` must rate it OK (exposure <= 2.0). Then the unit's ExecStart
//   line, expanded the way systemd does (%i, %S, %d, ${VAR} as one word,
//   $VAR split at spaces), starts a bootstrapping node and a --join node
//   that `driftctl add` makes a member.
// - Every YAML file under deploy/ parses (python3-yaml); the Kubernetes
//   objects are checked for the wiring a schema does not see (service names,
//   selectors, probe path, secret keys, user ids); schema validation itself
//   is skipped with the reason when no offline validator is installed.
// - haproxy -c on the compose haproxy config; the Dockerfile's base, its use
//   of scripts/deps.sh and its non-root user, the same uid in k8s and
//   make-secrets.sh.
// - bash -n and shellcheck on the deploy scripts.
// - The driftd command lines of the containers (compose, the k8s
//   entrypoint), of the systemd unit and of deploy/run-cluster.sh: every flag
//   is one `driftd --help` lists, every flag the local cluster script passes
//   is passed by each of them too, and the flags only they pass are the
//   ones listed (with the reason) in EXTRA_FLAGS below.
// - deploy/k8s/entrypoint.sh run for three "pods" (real driftd and driftctl,
//   the pods' DNS names from a private /etc/hosts; root only): pod 0
//   bootstraps, pods 1 and 2 are added through the admin API, a restarted
//   pod resumes, SIGTERM gives exit 0.
// - deploy/grafana/driftd.json: every metric name it queries exists in the
//   /metrics output of a real 3-node cluster.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { requireBin, driftdHelp, hasFlag, httpRequest, waitFor, withTimeout } from './lib/harness.mjs';
import { Cluster, freePorts } from './lib/cluster.mjs';
import { requireCtl, ctlOk } from './lib/admin.mjs';

const T = { timeout: 120000 };
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DEPLOY = path.join(ROOT, 'deploy');
const read = (rel) => fs.readFileSync(path.join(ROOT, rel), 'utf8');

// Flags the deployments pass and the local script does not, and why.
const EXTRA_FLAGS = new Map([
  ['--advertise', 'containers listen on 0.0.0.0 and tell the others their DNS name'],
  ['--join', 'nodes added to a running cluster (systemd DRIFTD_CLUSTER, k8s pods > 0)'],
  ['--log-format', 'k8s logs one JSON object per line for the log collector'],
  ['--public-url', 'systemd example: behind a TLS proxy, room URLs name the public address'],
]);
// Which of the local script's flags a deployment may replace, and by what.
const ALTERNATIVES = new Map([['--bootstrap', '--join']]);

let tmpRoot;
after(async () => { if (tmpRoot) await fsp.rm(tmpRoot, { recursive: true, force: true }); });
async function tmp() {
  tmpRoot ??= await fsp.mkdtemp(path.join(os.tmpdir(), 'driftd-deploy-'));
  return fsp.mkdtemp(path.join(tmpRoot, 'x-'));
}

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

// ---- command lines ----------------------------------------------------------

const flagsIn = (s) => new Set((s.match(/(?<![\w-])--[a-z][a-z0-9-]*/g) ?? []));

// The flags deploy/run-cluster.sh gives driftd: the SECURE=(...) array and
// the "$DRIFTD" ... invocation up to its redirection.
function runClusterFlags() {
  const s = read('deploy/run-cluster.sh');
  const secure = /SECURE=\((--[^)]*)\)/.exec(s);
  const inv = /"\$DRIFTD" (--id[\s\S]*?)>/.exec(s);
  assert.ok(secure && inv, 'run-cluster.sh: driftd invocation not found');
  return new Set([...flagsIn(secure[1]), ...flagsIn(inv[1])]);
}

function composeFlags() {
  const doc = yamlLoad('deploy/docker/compose.yaml')[0];
  const out = new Map();
  for (const [name, svc] of Object.entries(doc.services)) {
    if (name.startsWith('node')) out.set(`compose ${name}`, new Set(svc.command.filter((a) => a.startsWith('--'))));
  }
  return out;
}

// deploy/k8s/entrypoint.sh: its args=( ... ) and args+=( ... ) arrays, plus
// the StatefulSet's DRIFTD_EXTRA_ARGS.
function k8sFlags() {
  const s = read('deploy/k8s/entrypoint.sh');
  const flags = new Set();
  for (const m of s.matchAll(/\bargs\+?=\(([\s\S]*?)\)\n/g)) for (const f of flagsIn(m[1])) flags.add(f);
  const sts = yamlLoad('deploy/k8s/driftd.yaml').find((d) => d.kind === 'StatefulSet');
  const env = sts.spec.template.spec.containers[0].env;
  const extra = env.find((e) => e.name === 'DRIFTD_EXTRA_ARGS');
  if (extra) for (const f of flagsIn(extra.value)) flags.add(f);
  return flags;
}

// The unit's ExecStart (continuation lines joined) and the DRIFTD_CLUSTER /
// DRIFTD_EXTRA examples of its header.
function systemdExecStart() {
  const s = read('deploy/systemd/driftd@.service').replace(/\\\n\s*/g, '');
  const m = /^ExecStart=(.*)$/m.exec(s);
  assert.ok(m, 'no ExecStart');
  return m[1];
}
function systemdFlags() {
  const s = read('deploy/systemd/driftd@.service');
  const flags = flagsIn(systemdExecStart());
  for (const m of s.matchAll(/^#\s+DRIFTD_(?:CLUSTER|EXTRA)=(.*)$/gm)) for (const f of flagsIn(m[1])) flags.add(f);
  return flags;
}

// ---- YAML --------------------------------------------------------------------

let python = null;
function findPython() {
  if (python !== null) return python;
  python = '';
  for (const p of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(p, ['-c', 'import yaml'], { encoding: 'utf8' });
    if (r.status === 0) { python = p; break; }
  }
  return python;
}

// All documents of a YAML file, through python3-yaml, as plain JSON values.
function yamlLoad(rel) {
  const py = findPython();
  assert.ok(py, 'python3 with the yaml module is missing (scripts/deps.sh installs python3-yaml)');
  const r = spawnSync(py, ['-c',
    'import json, sys, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))',
    path.join(ROOT, rel)], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${rel}: not valid YAML:\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

function yamlFiles(dir = DEPLOY, out = []) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yamlFiles(p, out);
    else if (/\.ya?ml$/.test(e.name)) out.push(path.relative(ROOT, p));
  }
  return out.sort();
}

// ---- tests ---------------------------------------------------------------------

describe('deployment files', () => {
  test('every YAML file under deploy/ parses', T, () => {
    const files = yamlFiles();
    for (const f of ['deploy/docker/compose.yaml', 'deploy/k8s/driftd.yaml', 'deploy/k8s/secret.example.yaml']) {
      assert.ok(files.includes(f), `${f} missing`);
    }
    for (const f of files) {
      const docs = yamlLoad(f);
      assert.ok(docs.length >= 1 && docs.every((d) => d && typeof d === 'object'), `${f}: empty or not a mapping`);
    }
  });

  test('Kubernetes: the objects are wired together (schema validation: see the skip note)', T, (t) => {
    const docs = [...yamlLoad('deploy/k8s/driftd.yaml'), ...yamlLoad('deploy/k8s/secret.example.yaml')];
    for (const d of docs) {
      assert.ok(d.apiVersion && d.kind && d.metadata?.name, `object without apiVersion/kind/name: ${JSON.stringify(d).slice(0, 200)}`);
    }
    const byKind = (k) => docs.filter((d) => d.kind === k);
    const [sts] = byKind('StatefulSet');
    assert.ok(sts, 'no StatefulSet');
    assert.equal(sts.apiVersion, 'apps/v1');
    assert.equal(sts.spec.replicas, 3);
    assert.equal(sts.spec.podManagementPolicy, 'Parallel');
    const labels = sts.spec.template.metadata.labels;
    for (const [k, v] of Object.entries(sts.spec.selector.matchLabels)) assert.equal(labels[k], v, 'selector does not match the pod labels');
    const headless = byKind('Service').find((s) => s.metadata.name === sts.spec.serviceName);
    assert.ok(headless, `no Service named ${sts.spec.serviceName} (the StatefulSet's serviceName)`);
    assert.equal(headless.spec.clusterIP, 'None');
    assert.equal(headless.spec.publishNotReadyAddresses, true);
    const client = byKind('Service').find((s) => s.spec.clusterIP !== 'None');
    assert.ok(client, 'no client Service');
    for (const svc of [headless, client]) {
      for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(labels[k], v, `${svc.metadata.name}: selector does not match the pods`);
    }
    const [pdb] = byKind('PodDisruptionBudget');
    assert.ok(pdb, 'no PodDisruptionBudget');
    assert.equal(pdb.spec.maxUnavailable, 1);
    for (const [k, v] of Object.entries(pdb.spec.selector.matchLabels)) assert.equal(labels[k], v);
    const pod = sts.spec.template.spec;
    const [c] = pod.containers;
    const ports = Object.fromEntries(c.ports.map((p) => [p.name, p.containerPort]));
    assert.deepEqual(ports, { http: 8080, raft: 9080 });
    assert.equal(c.readinessProbe.httpGet.path, '/healthz');
    assert.equal(c.readinessProbe.httpGet.port, 'http');
    assert.deepEqual(c.command, ['/usr/local/bin/driftd-k8s-entrypoint']);
    const env = Object.fromEntries(c.env.map((e) => [e.name, e]));
    assert.equal(env.POD_NAME.valueFrom.fieldRef.fieldPath, 'metadata.name');
    assert.equal(env.POD_NAMESPACE.valueFrom.fieldRef.fieldPath, 'metadata.namespace');
    assert.equal(env.DRIFTD_SERVICE.value, headless.metadata.name);
    assert.equal(env.DRIFTD_CLIENT_SERVICE.value, client.metadata.name);
    // Volumes: the PVC template and the secret, at the entrypoint's paths.
    const [vct] = sts.spec.volumeClaimTemplates;
    const mounts = Object.fromEntries(c.volumeMounts.map((m) => [m.name, m.mountPath]));
    assert.equal(mounts[vct.metadata.name], '/var/lib/driftd');
    const secretVol = pod.volumes.find((v) => v.secret);
    assert.equal(mounts[secretVol.name], '/etc/driftd/secrets');
    const [secret] = byKind('Secret');
    assert.equal(secretVol.secret.secretName, secret.metadata.name);
    assert.deepEqual(secretVol.secret.items.map((i) => i.key).sort(), Object.keys(secret.stringData).sort());
    assert.deepEqual(secretVol.secret.items.map((i) => i.path).sort(), ['admin-token', 'cluster-key']);
    assert.equal(secretVol.secret.defaultMode & 0o007, 0, 'driftd refuses a key file other users can read');
    const entry = read('deploy/k8s/entrypoint.sh');
    assert.match(entry, /SECRETS=\$\{DRIFTD_SECRETS:-\/etc\/driftd\/secrets\}/);
    assert.match(entry, /DATA=\$\{DRIFTD_DATA:-\/var\/lib\/driftd\/data\}/);
    // The image's user.
    const uid = /useradd[^\n]*--uid (\d+)/.exec(read('deploy/docker/Dockerfile'))?.[1];
    assert.equal(pod.securityContext.runAsUser, Number(uid));
    assert.equal(pod.securityContext.fsGroup, Number(uid));

    for (const v of ['kubeconform', 'kubeval']) {
      if (which(v)) {
        const r = spawnSync(v, ['-strict', '-summary', path.join(DEPLOY, 'k8s/driftd.yaml')], { encoding: 'utf8' });
        assert.equal(r.status, 0, `${v}:\n${r.stdout}${r.stderr}`);
        return;
      }
    }
    t.skip('Kubernetes schema validation skipped: no offline validator (kubeconform, kubeval) is installed, and Debian 12 packages none; `kubectl apply --dry-run` needs an API server');
  });

  test('Docker: Dockerfile on Debian 12 runs scripts/deps.sh and a non-root user; compose: 3 nodes, haproxy, secrets; haproxy -c', T, (t) => {
    const df = read('deploy/docker/Dockerfile');
    assert.match(df, /^FROM debian:12\s*$/m);
    assert.match(df, /^COPY scripts\/ \/src\/scripts\/$/m);
    assert.match(df, /^RUN \/src\/scripts\/deps\.sh/m);
    const user = /^USER (\S+)/m.exec(df)?.[1];
    assert.ok(user && !/^(0|root)(:|$)/.test(user), `the image must not run as root (USER ${user})`);
    assert.match(df, /^ENTRYPOINT \["\/usr\/local\/bin\/driftd"\]/m);
    assert.match(df, /install -m 0755 \/src\/deploy\/k8s\/entrypoint\.sh/);
    assert.match(read('deploy/docker/make-secrets.sh'), new RegExp(`chgrp ${user.split(':')[0]} `));

    const compose = yamlLoad('deploy/docker/compose.yaml')[0];
    assert.deepEqual(Object.keys(compose.services).sort(), ['haproxy', 'node1', 'node2', 'node3']);
    assert.deepEqual(Object.keys(compose.secrets).sort(), ['admin_token', 'cluster_key']);
    for (const id of [1, 2, 3]) {
      const svc = compose.services[`node${id}`];
      assert.deepEqual([...svc.secrets].sort(), ['admin_token', 'cluster_key']);
      const cmd = svc.command;
      const arg = (f) => cmd[cmd.indexOf(f) + 1];
      assert.equal(arg('--id'), String(id));
      assert.equal(arg('--raft'), `node${id}:9080`);
      assert.equal(arg('--advertise'), `node${id}:8080`);
      assert.equal(arg('--cluster-key-file'), '/run/secrets/cluster_key');
      assert.equal(arg('--admin-token-file'), '/run/secrets/admin_token');
      assert.equal(arg('--bootstrap'), '1=node1:9080,2=node2:9080,3=node3:9080');
      assert.ok(svc.volumes.some((v) => v.endsWith(':/var/lib/driftd')), `node${id}: no data volume`);
    }
    const hp = compose.services.haproxy;
    assert.ok(hp.volumes.some((v) => v.startsWith('./haproxy.cfg:')));
    const cfg = read('deploy/docker/haproxy.cfg');
    for (const id of [1, 2, 3]) assert.match(cfg, new RegExp(`server node${id} node${id}:8080 check`));
    if (which('haproxy')) {
      const r = spawnSync('haproxy', ['-c', '-f', path.join(DEPLOY, 'docker/haproxy.cfg')], { encoding: 'utf8' });
      assert.equal(r.status, 0, `haproxy -c:\n${r.stdout}${r.stderr}`);
    }
    const notes = [];
    if (!which('docker') || spawnSync('docker', ['compose', 'version']).status !== 0) notes.push('`docker compose config` (no compose plugin)');
    if (!which('hadolint')) notes.push('hadolint (not installed)');
    notes.push('building the image (no Docker daemon is assumed)');
    t.diagnostic(`not checked here: ${notes.join(', ')}`);
  });

  test('the deployment scripts pass bash -n and shellcheck', T, () => {
    const scripts = ['deploy/run-cluster.sh', 'deploy/run-local.sh', 'deploy/docker/make-secrets.sh', 'deploy/k8s/entrypoint.sh',
      'scripts/deps.sh', 'scripts/patched-deps.sh', 'scripts/bench.sh'];
    for (const f of scripts) {
      const r = spawnSync('bash', ['-n', path.join(ROOT, f)], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${f}: ${r.stderr}`);
      assert.ok(fs.statSync(path.join(ROOT, f)).mode & 0o100, `${f} is not executable`);
    }
    // scripts/deps.sh installs shellcheck: its absence is a set-up fault.
    assert.ok(which('shellcheck'), 'shellcheck is not installed (scripts/deps.sh installs it)');
    const r = spawnSync('shellcheck', scripts.map((f) => path.join(ROOT, f)), { encoding: 'utf8' });
    assert.equal(r.status, 0, `shellcheck:\n${r.stdout}${r.stderr}`);
  });

  test('driftd command lines: flags from driftd --help; the local script\'s flags in every deployment', T, () => {
    requireBin();
    assert.ok(driftdHelp().includes('--bootstrap'), 'driftd --help gave no text');
    const local = runClusterFlags();
    for (const f of ['--id', '--http', '--raft', '--data', '--bootstrap', '--cluster-key-file', '--admin-token-file']) {
      assert.ok(local.has(f), `run-cluster.sh no longer passes ${f}: update this test`);
    }
    const lines = new Map([...composeFlags(), ['k8s entrypoint', k8sFlags()], ['systemd unit', systemdFlags()]]);
    assert.equal(lines.size, 5);
    for (const [where, flags] of [['run-cluster.sh', local], ...lines]) {
      for (const f of flags) assert.ok(hasFlag(f), `${where}: ${f} is not a flag of driftd --help`);
    }
    for (const [where, flags] of lines) {
      for (const f of local) {
        const alt = ALTERNATIVES.get(f);
        assert.ok(flags.has(f) || (alt && flags.has(alt)), `${where}: does not pass ${f}, which run-cluster.sh passes`);
      }
      for (const f of flags) {
        assert.ok(local.has(f) || EXTRA_FLAGS.has(f), `${where}: passes ${f}, which run-cluster.sh does not; add it to EXTRA_FLAGS with the reason if intended`);
      }
    }
  });

  test('systemd: systemd-analyze verify (no warning) and security (exposure OK)', T, async (t) => {
    if (!which('systemd-analyze')) {
      t.skip('systemd-analyze is not installed (scripts/deps.sh installs systemd)');
      return;
    }
    const dir = await tmp();
    for (const f of ['cluster.key', 'admin.token']) await fsp.writeFile(path.join(dir, f), 'x\n', { mode: 0o600 });
    await fsp.writeFile(path.join(dir, 'node-1.env'), 'DRIFTD_HTTP=127.0.0.1:8080\nDRIFTD_RAFT=127.0.0.1:9080\nDRIFTD_CLUSTER=--join\n');
    const unit = read('deploy/systemd/driftd@.service')
      .replaceAll('/usr/local/bin/driftd', requireBin())
      .replaceAll('/etc/driftd/', `${dir}/`);
    await fsp.writeFile(path.join(dir, 'driftd@.service'), unit);
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', 'driftd@1.service'], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, `systemd-analyze verify failed:\n${r.stdout}${r.stderr}`);
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '', `systemd-analyze verify warned:\n${r.stdout}${r.stderr}`);
    // The check has teeth: a broken copy must fail it.
    await fsp.writeFile(path.join(dir, 'broken@.service'), unit.replace(/^ExecStart=\S+/m, 'ExecStart=/nonexistent/driftd').replace('SystemCallFilter=@system-service', 'SystemCallFilter=@no-such-group'));
    const bad = spawnSync('systemd-analyze', ['verify', '--man=no', 'broken@1.service'], { cwd: dir, encoding: 'utf8' });
    assert.notEqual(bad.status, 0, 'verify accepted a missing ExecStart binary');
    assert.match(bad.stderr, /no-such-group/);
    const sec = spawnSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', 'driftd@1.service'], { cwd: dir, encoding: 'utf8' });
    const m = /Overall exposure level for driftd@1\.service: ([\d.]+)/.exec(sec.stdout);
    assert.ok(m, `systemd-analyze security gave no rating:\n${sec.stdout}${sec.stderr}`);
    assert.ok(Number(m[1]) <= 2.0, `exposure ${m[1]} > 2.0:\n${sec.stdout}`);
    t.diagnostic(`systemd-analyze security: exposure ${m[1]}`);
  });

  test('systemd: the unit\'s ExecStart starts a bootstrapping node and a --join node (added with driftctl add)', T, async () => {
    requireCtl();
    const dir = await tmp();
    const key = path.join(dir, 'cluster.key');
    const tokenFile = path.join(dir, 'admin.token');
    const token = crypto.randomBytes(16).toString('hex');
    await fsp.writeFile(key, `${crypto.randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    await fsp.writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
    // systemd copies the credentials into $CREDENTIALS_DIRECTORY (%d).
    const cred = path.join(dir, 'credentials');
    await fsp.mkdir(cred, { mode: 0o700 });
    await fsp.copyFile(key, path.join(cred, 'cluster-key'));
    await fsp.copyFile(tokenFile, path.join(cred, 'admin-token'));
    await fsp.chmod(path.join(cred, 'cluster-key'), 0o400);
    await fsp.chmod(path.join(cred, 'admin-token'), 0o400);
    const state = path.join(dir, 'state');
    const [h1, h2, r1, r2] = await freePorts(4);
    const envs = {
      1: { DRIFTD_HTTP: `127.0.0.1:${h1}`, DRIFTD_RAFT: `127.0.0.1:${r1}`, DRIFTD_CLUSTER: `--bootstrap 1=127.0.0.1:${r1}`, DRIFTD_EXTRA: '--election-timeout 500 --heartbeat 50' },
      2: { DRIFTD_HTTP: `127.0.0.1:${h2}`, DRIFTD_RAFT: `127.0.0.1:${r2}`, DRIFTD_CLUSTER: '--join', DRIFTD_EXTRA: '' },
    };
    // systemd.service(5), "Command lines": ${VAR} is one word, $VAR is split
    // at whitespace (nothing when empty); specifiers first.
    const expand = (id) => systemdExecStart()
      .replaceAll('%i', String(id)).replaceAll('%S', state).replaceAll('%d', cred)
      .split(/\s+/).filter((w) => w !== '')
      .flatMap((w) => {
        let m = /^\$\{(\w+)\}$/.exec(w);
        if (m) return [envs[id][m[1]]];
        m = /^\$(\w+)$/.exec(w);
        if (m) return envs[id][m[1]].split(/\s+/).filter((x) => x !== '');
        assert.ok(!w.includes('$') && !w.includes('%'), `unexpanded word in ExecStart: ${w}`);
        return [w];
      });
    const procs = [];
    const out = [];
    const start = async (id) => {
      const argv = expand(id);
      assert.equal(argv[0], '/usr/local/bin/driftd');
      await fsp.mkdir(path.join(state, 'driftd', `node-${id}`), { recursive: true, mode: 0o700 });
      const p = spawn(requireBin(), argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
      p.stderr.on('data', (d) => out.push(`[node${id}] ${d}`));
      p.stdout.on('data', (d) => out.push(`[node${id}] ${d}`));
      p.exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })));
      procs.push(p);
      return p;
    };
    try {
      await start(1);
      const base1 = `http://127.0.0.1:${h1}`;
      await waitFor(async () => (await httpRequest(`${base1}/healthz`, { timeoutMs: 1000 })).status === 200, 20000, 'node 1 ready');
      const p2 = await start(2);
      const base2 = `http://127.0.0.1:${h2}`;
      // A --join node runs and waits (the old unit made it exit 2).
      const r = await waitFor(async () => {
        assert.equal(p2.exitCode, null, `the --join node exited:\n${out.join('')}`);
        const a = await httpRequest(`${base2}/healthz`, { timeoutMs: 1000 });
        return a.status === 503 ? a : null;
      }, 20000, 'node 2 answering, not ready');
      assert.match(r.text, /not ready/);
      await ctlOk(['add', '2', `127.0.0.1:${r2}`], { server: base1, token });
      await waitFor(async () => (await httpRequest(`${base2}/healthz`, { timeoutMs: 1000 })).status === 200, 30000, 'node 2 ready');
      assert.ok(fs.readdirSync(path.join(state, 'driftd', 'node-2')).length > 0, 'node 2 data not under %S/driftd/node-2');
      for (const p of procs) p.kill('SIGTERM');
      for (const p of procs) assert.deepEqual(await withTimeout(p.exited, 20000, 'exit'), { code: 0, signal: null });
    } catch (e) {
      process.stderr.write(`\n----- nodes -----\n${out.join('').slice(-30000)}\n`);
      throw e;
    } finally {
      for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
  });

  // deploy/k8s/entrypoint.sh against local processes: each "pod" runs in
  // its own mount namespace whose /etc/hosts gives the headless and client
  // services' names to 127.0.0.11-13, as cluster DNS would.
  test('k8s: the entrypoint bootstraps pod 0, adds pods 1 and 2 through the admin API, resumes on restart', T, async (t) => {
    const canNs = process.getuid?.() === 0 && spawnSync('unshare', ['-m', 'true']).status === 0;
    if (!canNs) {
      t.skip('needs root and unshare -m (a private /etc/hosts gives the pods their DNS names)');
      return;
    }
    const dir = await tmp();
    const ns = 'bbtest';
    const domain = `driftd-headless.${ns}.svc.cluster.local`;
    const ip = (i) => `127.0.0.${11 + i}`;
    // The names the headless and client services would give; the client
    // service answers on pod 0 here.
    await fsp.writeFile(path.join(dir, 'hosts'), `127.0.0.1 localhost\n${[0, 1, 2].map((i) => `${ip(i)} driftd-${i}.${domain}${i === 0 ? ` driftd.${ns}.svc.cluster.local` : ''}`).join('\n')}\n`);
    const secrets = path.join(dir, 'secrets');
    await fsp.mkdir(secrets, { mode: 0o700 });
    const token = crypto.randomBytes(16).toString('hex');
    await fsp.writeFile(path.join(secrets, 'cluster-key'), `${crypto.randomBytes(32).toString('hex')}\n`, { mode: 0o400 });
    await fsp.writeFile(path.join(secrets, 'admin-token'), `${token}\n`, { mode: 0o400 });
    const [httpPort, raftPort] = await freePorts(2);
    const entry = path.join(ROOT, 'deploy/k8s/entrypoint.sh');
    const out = [];
    const pods = new Map();
    const start = (i) => {
      const p = spawn('unshare', ['-m', '--propagation', 'private', 'bash', '-c',
        'mount --bind "$HOSTS_FILE" /etc/hosts && exec "$ENTRY"'], {
        env: {
          ...process.env,
          HOSTS_FILE: path.join(dir, 'hosts'), ENTRY: entry,
          POD_NAME: `driftd-${i}`, POD_NAMESPACE: ns,
          DRIFTD: requireBin(), DRIFTCTL: requireCtl(),
          DRIFTD_SECRETS: secrets, DRIFTD_DATA: path.join(dir, `pod${i}`, 'data'),
          DRIFTD_LISTEN: ip(i), DRIFTD_HTTP_PORT: String(httpPort), DRIFTD_RAFT_PORT: String(raftPort),
          DRIFTD_EXTRA_ARGS: '--election-timeout 500 --heartbeat 50',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      p.stdout.on('data', (d) => out.push(`[pod${i}] ${d}`));
      p.stderr.on('data', (d) => out.push(`[pod${i}] ${d}`));
      p.exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })));
      pods.set(i, p);
      return p;
    };
    const base = (i) => `http://${ip(i)}:${httpPort}`;
    const ready = (i, ms = 60000) => waitFor(async () => {
      assert.equal(pods.get(i).exitCode, null, `pod ${i} exited`);
      return (await httpRequest(`${base(i)}/healthz`, { timeoutMs: 1000 })).status === 200;
    }, ms, `pod ${i} ready`, 100);
    const stop = async (i) => {
      pods.get(i).kill('SIGTERM');
      return withTimeout(pods.get(i).exited, 20000, `pod ${i} to exit`);
    };
    try {
      // Parallel, as the StatefulSet starts them.
      for (const i of [0, 1, 2]) start(i);
      for (const i of [0, 1, 2]) await ready(i);
      const st = (await ctlOk(['--json', 'status'], { server: base(0), token })).json();
      assert.deepEqual(st.nodes.map((n) => [n.id, n.role, n.raft]).sort(), [0, 1, 2].map((i) => [i + 1, 'voter', `driftd-${i}.${domain}:${raftPort}`]));
      const text = out.join('');
      assert.match(text, /entrypoint: node 1: .* --bootstrap 1=driftd-0\./);
      assert.match(text, /entrypoint: node 2: .* --join/);
      assert.match(text, /entrypoint: node 3: .* --join/);
      // A restart of pod 1 (data on its volume): it resumes, nothing re-added.
      assert.deepEqual(await stop(1), { code: 0, signal: null });
      const mark = out.join('').length;
      start(1);
      await ready(1);
      assert.doesNotMatch(out.join('').slice(mark), /is now voter|event=bootstrapped/);
      for (const i of [0, 1, 2]) pods.get(i).kill('SIGTERM');
      for (const i of [0, 1, 2]) assert.deepEqual(await withTimeout(pods.get(i).exited, 20000, 'exit'), { code: 0, signal: null }, `pod ${i} exit status`);
    } catch (e) {
      process.stderr.write(`\n----- pods -----\n${out.join('').slice(-40000)}\n`);
      throw e;
    } finally {
      for (const p of pods.values()) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
  });
});

describe('deploy/grafana/driftd.json', () => {
  let c;
  after(async () => { if (c) await c.dispose(); });

  test('every metric the dashboard queries is in a real cluster\'s /metrics', T, async () => {
    const dash = JSON.parse(read('deploy/grafana/driftd.json'));
    const exprs = [];
    const ids = new Set();
    const walk = (panels) => {
      for (const p of panels) {
        assert.ok(!ids.has(p.id), `duplicate panel id ${p.id}`);
        ids.add(p.id);
        for (const t of p.targets ?? []) exprs.push(t.expr);
        if (p.panels) walk(p.panels);
      }
    };
    walk(dash.panels);
    for (const v of dash.templating.list) if (typeof v.query === 'object') exprs.push(v.query.query);
    const used = new Set(exprs.flatMap((e) => e.match(/\bdriftd_[a-z0-9_]+/g) ?? []));
    assert.ok(used.size >= 30, `only ${used.size} metric names used`);

    c = await Cluster.start({ size: 3, name: 'grafana' });
    // Some pushes, so every family has samples.
    const room = JSON.parse((await httpRequest(`${c.base(1)}/new`, { method: 'POST' })).text).room;
    await httpRequest(`${c.base(2)}/room/${room}/send`, { method: 'POST', body: { type: 'push', action: { type: 'append' }, value: 1, key: 'k' } });
    const names = new Set();
    for (const id of c.ids) {
      const text = (await httpRequest(`${c.base(id)}/metrics`)).text;
      for (const line of text.split('\n')) {
        const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
        if (m) names.add(m[1]);
      }
    }
    const missing = [...used].filter((n) => !names.has(n));
    assert.deepEqual(missing, [], `the dashboard queries metrics no node exports: ${missing.join(', ')}`);
    // What the dashboard is for (issue #13): each of these is on it.
    for (const n of ['driftd_pushes_total', 'driftd_deliveries_total', 'driftd_push_ack_seconds_bucket', 'driftd_raft_role',
      'driftd_raft_term', 'driftd_raft_commit_index', 'driftd_raft_applied_index', 'driftd_raft_peer_match_index',
      'driftd_forward_link_up', 'driftd_forward_queue_batches', 'driftd_connections', 'driftd_rooms', 'driftd_retained_bytes',
      'driftd_errors_total', 'driftd_slow_consumer_closes_total', 'driftd_process_cpu_seconds_total',
      'driftd_process_resident_memory_bytes', 'driftd_process_open_fds']) {
      assert.ok(used.has(n), `the dashboard does not show ${n}`);
    }
    await c.stopAll();
  });
});
