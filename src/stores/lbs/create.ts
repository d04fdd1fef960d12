/**
 * Creating an LBS store: geometry from the user's options, the protected-mount checks, a fully
 * allocated data file (zeros written, not a sparse file), a 0600 metadata log, and the descriptor.
 */
import { open, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { VdiskError } from '../../errors.js';
import { assertAbsent, writeNewDescriptor } from '../descriptor.js';
import { checksumByName, DEFAULT_CHECKSUM } from './checksums.js';
import { MIN_SPARE_CLUSTERS } from './cleaner.js';
import type { LbsFile } from './files.js';
import {
  DATA_HEADER_BLOCK,
  FORMAT_VERSION,
  checkGeometry,
  encodeDataHeader,
  encodeLogHeader,
  type ChecksumId,
  type Geometry,
} from './format.js';
import { checkMetaDir, checkSeparateFilesystems } from './protected.js';
import { formatSize } from '../../util/size.js';

export const DEFAULTS = { blockSize: 4096, clusterSize: 1 << 20, overprovision: 25, checksum: DEFAULT_CHECKSUM } as const;

export interface LbsParams {
  size: number;
  blockSize?: number;
  clusterSize?: number;
  /** Percent of extra physical space. */
  overprovision?: number;
  checksum?: string;
}

export function lbsGeometry(p: LbsParams): Geometry & { checksum: ChecksumId; overprovision: number } {
  const blockSize = p.blockSize ?? DEFAULTS.blockSize;
  const clusterSize = p.clusterSize ?? DEFAULTS.clusterSize;
  const overprovision = p.overprovision ?? DEFAULTS.overprovision;
  const checksum = checksumByName(p.checksum ?? DEFAULTS.checksum).id;
  if (!Number.isSafeInteger(p.size) || p.size <= 0 || p.size % 512 !== 0) {
    throw new VdiskError('EINVAL', `the size must be a positive multiple of 512 bytes (a disk sector), got ${p.size}`);
  }
  if (!Number.isFinite(overprovision) || overprovision < 5 || overprovision > 400) {
    throw new VdiskError('EINVAL', `--overprovision must be between 5 and 400 (percent), got ${overprovision}`);
  }
  const g: Geometry = { blockSize, clusterSize, clusterCount: 1, logicalSize: p.size, dataOffset: Math.max(DATA_HEADER_BLOCK, blockSize) };
  checkGeometry(g, 'lbs');
  const bpc = clusterSize / blockSize;
  const logicalBlocks = Math.ceil(p.size / blockSize);
  const logicalClusters = Math.ceil(logicalBlocks / bpc);
  g.clusterCount = Math.max(Math.ceil((logicalBlocks * (1 + overprovision / 100)) / bpc), logicalClusters + MIN_SPARE_CLUSTERS);
  checkGeometry(g, 'lbs');
  return { ...g, checksum, overprovision };
}

/** Writes both headers (the pure part of creation; tests use it over in-memory files). */
export async function formatLbsFiles(
  data: LbsFile,
  log: LbsFile,
  g: Geometry & { checksum: ChecksumId },
  storeId: string,
  options: { fill?: (progress?: (done: number, total: number) => void) => Promise<void>; progress?: (done: number, total: number) => void } = {},
): Promise<void> {
  const createdAt = Date.now();
  const dh = encodeDataHeader({ ...g, version: FORMAT_VERSION, flags: 0, storeId, createdAt });
  await data.write(dh, 0, dh.length, 0);
  if (options.fill) await options.fill(options.progress);
  else await data.truncate(g.dataOffset + g.clusterCount * g.clusterSize);
  await data.datasync();
  const lh = encodeLogHeader({
    ...g,
    version: FORMAT_VERSION,
    flags: 0,
    storeId,
    checksumSize: 4,
    encryption: 0,
    keyId: 0,
    generation: 0,
    createdAt,
  });
  await log.write(lh, 0, lh.length, 0);
  await log.datasync();
}

export interface CreateLbsOptions extends LbsParams {
  descriptorPath: string;
  dataPath: string;
  metaDir: string;
  allowSameFilesystem?: boolean;
  views?: string[];
  progress?: (done: number, total: number) => void;
}

export interface CreatedLbs {
  descriptorPath: string;
  dataPath: string;
  logPath: string;
  id: string;
  geometry: Geometry;
}

const FILL_CHUNK = 8 << 20;

function handleFile(h: FileHandle): LbsFile {
  return {
    read: async (b, o, l, p) => (await h.read(b, o, l, p)).bytesRead,
    write: async (b, o, l, p) => {
      for (let done = 0; done < l; ) done += (await h.write(b, o + done, l - done, p + done)).bytesWritten;
    },
    datasync: () => h.datasync(),
    truncate: (n) => h.truncate(n),
    size: async () => (await h.stat()).size,
    close: () => h.close(),
  };
}

export async function createLbsStore(o: CreateLbsOptions): Promise<CreatedLbs> {
  const descriptorPath = resolve(o.descriptorPath);
  if (!descriptorPath.endsWith('.vdisk')) throw new VdiskError('EINVAL', `${o.descriptorPath}: a descriptor's name must end in .vdisk`);
  const name = basename(descriptorPath, '.vdisk');
  const dataPath = resolve(o.dataPath);
  const metaDir = resolve(o.metaDir);
  const g = lbsGeometry(o);
  await checkMetaDir(metaDir);
  const dataDir = dirname(dataPath);
  try {
    if (!(await stat(dataDir)).isDirectory()) throw new VdiskError('ENOTDIR', `${dataDir} (for the data file) is not a directory`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new VdiskError('ENOENT', `the directory for the data file, ${dataDir}, does not exist`);
    throw err;
  }
  if (!o.allowSameFilesystem) await checkSeparateFilesystems(metaDir, dataDir);
  const logPath = join(metaDir, `${name}.lbslog`);
  await assertAbsent(descriptorPath);
  await assertAbsent(dataPath);
  await assertAbsent(logPath);

  const id = randomUUID();
  const dataSize = g.dataOffset + g.clusterCount * g.clusterSize;
  let dataHandle: FileHandle | undefined;
  let logHandle: FileHandle | undefined;
  let created: string[] = [];
  // Ctrl-C while a large data file is being written: stop, and remove what was made.
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    dataHandle = await open(dataPath, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600);
    created.push(dataPath);
    logHandle = await open(logPath, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600);
    created.push(logPath);
    const dh = dataHandle;
    // Real blocks, not a sparse file: the space is the user's promise that writes will fit.
    const fill = async (progress?: (done: number, total: number) => void) => {
      const zeros = Buffer.alloc(Math.min(FILL_CHUNK, dataSize));
      for (let at = g.dataOffset; at < dataSize; ) {
        if (interrupted) throw new VdiskError('EINTR', `interrupted while allocating ${dataPath}; nothing was created`);
        const n = Math.min(zeros.length, dataSize - at);
        for (let done = 0; done < n; ) done += (await dh.write(zeros, done, n - done, at + done)).bytesWritten;
        at += n;
        progress?.(at, dataSize);
      }
    };
    await formatLbsFiles(handleFile(dataHandle), handleFile(logHandle), g, id, { fill, progress: o.progress });
    await dataHandle.close();
    dataHandle = undefined;
    await logHandle.close();
    logHandle = undefined;
    await syncDir(metaDir);
    await syncDir(dataDir);
    const rel = relative(dirname(descriptorPath), dataPath);
    await writeNewDescriptor(descriptorPath, {
      kind: 'lbs',
      id,
      views: o.views,
      store: {
        data: rel.startsWith('..') || isAbsolute(rel) ? dataPath : rel,
        meta: metaDir,
        log: basename(logPath),
        size: g.logicalSize,
        blockSize: g.blockSize,
        clusterSize: g.clusterSize,
        overprovision: g.overprovision,
        checksum: checksumByName(o.checksum ?? DEFAULTS.checksum).name,
        allowSameFilesystem: !!o.allowSameFilesystem,
      },
    });
    created = [];
  } catch (err) {
    await dataHandle?.close().catch(() => {});
    await logHandle?.close().catch(() => {});
    for (const p of created) await rm(p, { force: true }).catch(() => {});
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      throw new VdiskError('ENOSPC', `not enough space for the LBS store: the data file needs ${formatSize(dataSize)} at ${dataPath} (nothing was created)`, { cause: err });
    }
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return { descriptorPath, dataPath, logPath, id, geometry: g };
}

async function syncDir(dir: string): Promise<void> {
  const h = await open(dir, constants.O_RDONLY);
  try {
    await h.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the files themselves are synced.
  } finally {
    await h.close();
  }
}
