// Builds the project's two C artefacts without node-gyp, so `npm ci` needs no network
// beyond the npm registry: N-API is ABI-stable, and the only headers an N-API addon needs
// come from the `node-api-headers` package.
//   build/edgemesh_tun.node  — the dataplane addon (dataplane/native/*.c): the TUN device and
//                              the UDP session engine. Its AEAD calls (OpenSSL EVP) are left
//                              undefined and bind at load time to the OpenSSL that every Node
//                              binary exports (Node 24: 3.5): nothing to install on the host,
//                              only the OpenSSL 3 headers to build (Debian: libssl-dev).
//   build/edgemesh           — the thin CNI client for /opt/cni/bin (cni/client/*.c), static
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'build');
mkdirSync(out, { recursive: true });
const cc = process.env.CC ?? 'cc';
const cflags = ['-O2', '-Wall', '-Wextra', '-Werror=implicit-function-declaration', '-std=gnu11'];

function sources(dir) {
  const abs = join(root, dir);
  if (!existsSync(abs)) return [];
  return readdirSync(abs)
    .filter((f) => f.endsWith('.c'))
    .map((f) => join(abs, f));
}

function run(args) {
  console.log(`[build-native] ${cc} ${args.join(' ')}`);
  execFileSync(cc, args, { stdio: 'inherit' });
}

const require = createRequire(import.meta.url);
let napiInclude;
try {
  napiInclude = require('node-api-headers').include_dir;
} catch {
  console.error('[build-native] node-api-headers is missing: run `npm ci` first');
  process.exit(1);
}

const addon = sources('dataplane/native');
const opensslHeader = ['/usr/include/openssl/evp.h', '/usr/local/include/openssl/evp.h'];
if (addon.length > 0 && !process.env.CFLAGS?.includes('-I') && !opensslHeader.some((f) => existsSync(f))) {
  console.error('[build-native] OpenSSL 3 headers are missing: install libssl-dev (scripts/setup.sh does)');
  process.exit(1);
}
if (addon.length > 0) {
  run([
    ...cflags,
    '-shared',
    '-fPIC',
    '-pthread',
    '-DNAPI_VERSION=8',
    `-I${napiInclude}`,
    ...(process.env.CFLAGS ? process.env.CFLAGS.split(/\s+/).filter(Boolean) : []),
    ...addon,
    '-o',
    join(out, 'edgemesh_tun.node'),
  ]);
}

const client = sources('cni/client');
if (client.length > 0) {
  const target = join(out, 'edgemesh');
  try {
    // Static so the DaemonSet can copy it onto any host, Node.js or not.
    run([...cflags, '-pthread', '-static', ...client, '-o', target]);
  } catch {
    console.warn('[build-native] static link failed; building a dynamically linked client');
    run([...cflags, '-pthread', ...client, '-o', target]);
  }
}
