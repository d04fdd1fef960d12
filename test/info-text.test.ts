/** `vdiskfs info` text output: every field readable, a chain as one line per layer (never raw JSON). */
import { describe, expect, it } from 'vitest';
import { infoLines } from '../src/cli/commands/info.js';

describe('info text output', () => {
  it('prints a chain as one readable line per layer', () => {
    const lines = infoLines({
      name: 'c',
      size: 64 * 1024 * 1024,
      views: ['raw', 'vhdx'],
      chain: [
        { layer: 'top', file: '/s/c-1.vhdx', format: 'VHDX differencing', blockSize: 2 * 1024 * 1024, allocated: '1/32 blocks', fileSize: 8 * 1024 * 1024 },
        { layer: 'base', file: '/s/base.vhd', format: 'VHD dynamic', blockSize: 2 * 1024 * 1024, allocated: '32/32 blocks', fileSize: 67_110_400 },
      ],
    });
    expect(lines.join('\n')).not.toMatch(/[{}[\]"]/);
    expect(lines).toContain('views          raw, vhdx');
    expect(lines).toContain('chain          2 entries');
    const top = lines.find((l) => l.startsWith('  top'))!;
    expect(top).toContain('/s/c-1.vhdx');
    expect(top).toContain('format VHDX differencing');
    expect(top).toContain('blockSize 2097152 (2 MiB)');
    expect(lines.findIndex((l) => l.startsWith('  base'))).toBe(lines.indexOf(top) + 1);
    expect(lines.find((l) => l.startsWith('size'))).toBe('size           67108864 (64 MiB)');
  });
  it('prints a nested record as key value pairs', () => {
    expect(infoLines({ commitInProgress: { into: '/s/base.vhd', step: 3 } })).toEqual(['commitInProgress into /s/base.vhd, step 3']);
  });
});
