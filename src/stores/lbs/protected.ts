/**
 * The protected mount: the metadata log holds the checksums every read is verified against, so it
 * must live where the untrusted side cannot touch it. These checks run at create and at every open.
 */
import { stat } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { VdiskError } from '../../errors.js';

export async function checkMetaDir(dir: string): Promise<void> {
  let st;
  try {
    st = await stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new VdiskError('ENOENT', `metadata directory ${dir} does not exist; create it on a protected mount (mkdir -m 700 ${dir})`);
    }
    throw err;
  }
  if (!st.isDirectory()) throw new VdiskError('ENOTDIR', `metadata directory ${dir} is not a directory`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new VdiskError('EPERM', `metadata directory ${dir} is owned by uid ${st.uid}, not by you (uid ${uid}); use a directory you own on a protected mount`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw new VdiskError(
      'EPERM',
      `metadata directory ${dir} is group- or world-writable (mode ${(st.mode & 0o7777).toString(8)}); only you may write there: chmod go-w ${dir}`,
    );
  }
}

export interface FilesystemInfo {
  device: string;
  mountpoint?: string;
  fstype?: string;
  source?: string;
}

function majorMinor(dev: number): string {
  // Linux dev_t: major in bits 8–19 and 32–43, minor in bits 0–7 and 20–31.
  const big = BigInt(dev);
  const major = ((big >> 8n) & 0xfffn) | ((big >> 32n) & ~0xfffn);
  const minor = (big & 0xffn) | ((big >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** The filesystem a path lives on (device number, and where it is mounted, from mountinfo). */
export async function filesystemOf(path: string): Promise<FilesystemInfo> {
  const device = majorMinor((await stat(path)).dev);
  const info: FilesystemInfo = { device };
  try {
    // The deepest mount with this device holding the path; good enough to name it for the user.
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const [left, right] = line.split(' - ');
      if (!left || !right) continue;
      const f = left.split(' ');
      if (f[2] !== device) continue;
      const mp = f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
      if (!(path === mp || path.startsWith(mp.endsWith('/') ? mp : mp + '/'))) continue;
      if (info.mountpoint && info.mountpoint.length >= mp.length) continue;
      const r = right.split(' ');
      Object.assign(info, { mountpoint: mp, fstype: r[0], source: r[1] });
    }
  } catch {
    /* not Linux: the device number alone */
  }
  return info;
}

export async function checkSeparateFilesystems(metaDir: string, dataPath: string): Promise<void> {
  const [meta, data] = await Promise.all([stat(metaDir), stat(dataPath)]);
  if (meta.dev === data.dev) {
    const fs = await filesystemOf(metaDir);
    throw new VdiskError(
      'EINVAL',
      `the metadata directory ${metaDir} is on the same filesystem as the data file ${dataPath} (device ${fs.device}${fs.mountpoint ? `, mounted at ${fs.mountpoint}` : ''}); put the log on a separate protected mount, or pass --allow-same-filesystem`,
    );
  }
}
