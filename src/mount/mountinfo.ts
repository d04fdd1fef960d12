/** Reading /proc/self/mountinfo: is a path a mount point, and of what type. */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';

export interface MountEntry {
  mountpoint: string;
  fstype: string;
  source: string;
}

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export async function mounts(): Promise<MountEntry[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const l = left.split(' ');
    const r = right.split(' ');
    out.push({ mountpoint: unescape(l[4]!), fstype: r[0]!, source: unescape(r[1] ?? '') });
  }
  return out;
}

export async function mountAt(path: string): Promise<MountEntry | undefined> {
  const full = resolve(path);
  const all = await mounts();
  // The last entry wins when mounts are stacked.
  return all.filter((m) => m.mountpoint === full).pop();
}
