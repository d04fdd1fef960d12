/**
 * In-memory LbsFiles for tests, and a recorder that logs every write, truncate and sync to either
 * file in one global order, so a crash can be simulated at any byte of that stream afterwards
 * (optionally also losing or tearing writes that no sync had covered yet, as a real disk may).
 */
import type { LbsFile } from '../../src/stores/lbs/files.js';
import { LbsDevice, type LbsOpenOptions } from '../../src/stores/lbs/lbs-core.js';
import { formatLbsFiles, lbsGeometry, type LbsParams } from '../../src/stores/lbs/create.js';
import { randomUUID } from 'node:crypto';
import { Random } from '../support/random.js';

export type FileName = 'data' | 'log';
export type Op =
  | { file: FileName; type: 'write'; pos: number; bytes: Buffer; start: number }
  | { file: FileName; type: 'truncate'; size: number; start: number }
  | { file: FileName; type: 'sync'; start: number };

export class Recorder {
  readonly ops: Op[] = [];
  /** Bytes written so far in the global stream (a cut point is a position in it). */
  position = 0;
  enabled = true;

  record(op: Op): void {
    if (!this.enabled) return;
    this.ops.push(op);
    if (op.type === 'write') this.position += op.bytes.length;
  }
}

export class MemFile implements LbsFile {
  data: Buffer;
  length: number;
  /** Fail writes with this errno code (for ENOSPC tests). */
  failWrites?: string;

  constructor(
    readonly name: FileName,
    private readonly recorder?: Recorder,
    initial?: Buffer,
  ) {
    this.data = initial ? Buffer.from(initial) : Buffer.alloc(0);
    this.length = this.data.length;
  }

  async read(buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    const n = Math.max(0, Math.min(length, this.length - position));
    if (n > 0) buf.set(this.data.subarray(position, position + n), offset);
    return n;
  }

  async write(buf: Uint8Array, offset: number, length: number, position: number): Promise<void> {
    if (this.failWrites) throw Object.assign(new Error(`${this.failWrites} (simulated)`), { code: this.failWrites });
    const bytes = Buffer.from(buf.buffer, buf.byteOffset + offset, length);
    this.recorder?.record({ file: this.name, type: 'write', pos: position, bytes: Buffer.from(bytes), start: this.recorder.position });
    this.put(bytes, position);
  }

  put(bytes: Uint8Array, position: number): void {
    const end = position + bytes.length;
    if (end > this.data.length) {
      const next = Buffer.alloc(Math.max(end, this.data.length * 2));
      this.data.copy(next, 0, 0, this.length);
      this.data = next;
    }
    this.data.set(bytes, position);
    this.length = Math.max(this.length, end);
  }

  async datasync(): Promise<void> {
    this.recorder?.record({ file: this.name, type: 'sync', start: this.recorder.position });
  }

  async truncate(size: number): Promise<void> {
    this.recorder?.record({ file: this.name, type: 'truncate', size, start: this.recorder.position });
    this.setLength(size);
  }

  setLength(size: number): void {
    if (size > this.data.length) {
      const next = Buffer.alloc(size);
      this.data.copy(next, 0, 0, this.length);
      this.data = next;
    } else {
      this.data.fill(0, size, this.length);
    }
    this.length = size;
  }

  async size(): Promise<number> {
    return this.length;
  }

  async close(): Promise<void> {}

  snapshot(): Buffer {
    return Buffer.from(this.data.subarray(0, this.length));
  }
}

export interface MemStore {
  data: MemFile;
  log: MemFile;
  id: string;
}

/** Formats a fresh store in memory. */
export async function formatMemStore(params: LbsParams, recorder?: Recorder): Promise<MemStore> {
  const g = lbsGeometry(params);
  const data = new MemFile('data', recorder);
  const log = new MemFile('log', recorder);
  const id = randomUUID();
  await formatLbsFiles(data, log, g, id);
  return { data, log, id };
}

export function openMem(s: MemStore, options: LbsOpenOptions = {}): Promise<LbsDevice> {
  return LbsDevice.open(s.data, s.log, { expectedId: s.id, ...options });
}

/**
 * The two files as they would be found after a crash at global byte `cut` of the recorded stream:
 * every op before it happened, the write it falls in is torn at that byte, nothing after happened.
 * With `rnd`, writes not yet covered by a sync of their file are also dropped or torn at random.
 */
export function filesAtCut(base: { data: Buffer; log: Buffer }, ops: readonly Op[], cut: number, rnd?: Random): { data: MemFile; log: MemFile } {
  const files = { data: new MemFile('data', undefined, base.data), log: new MemFile('log', undefined, base.log) };
  // An op happened if it started before the cut (a write possibly only in part). With `rnd`, a
  // write after its file's last sync is volatile: kept, lost or torn at random.
  const lastSync: Record<FileName, number> = { data: -1, log: -1 };
  ops.forEach((op, i) => {
    if (op.type === 'sync' && op.start < cut) lastSync[op.file] = i;
  });
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    if (op.start >= cut) break;
    const f = files[op.file];
    if (op.type === 'truncate') f.setLength(op.size);
    else if (op.type === 'write') {
      let n = Math.min(op.bytes.length, cut - op.start);
      if (rnd && i > lastSync[op.file]) {
        const r = rnd.int(3);
        if (r === 0) continue; // lost
        if (r === 1) n = rnd.int(n + 1); // torn
      }
      f.put(op.bytes.subarray(0, n), op.pos);
    }
  }
  return files;
}
