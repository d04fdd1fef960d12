import { describe, expect, it } from 'vitest';
import {
  bracedGuid, deriveGuid, guidEquals, guidToBytesLE, isGuid, parseGuid, readGuidLE, readUuidBE, writeUuidBE,
} from '../../src/formats/guid.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex').replace(/(..)/g, '$1 ').trim();

describe('GUIDs', () => {
  it('writes the Microsoft mixed-endian layout (the spec digest table)', () => {
    expect(hex(guidToBytesLE('2DC27766-F623-4200-9D64-115E9BFD4A08'))).toBe('66 77 c2 2d 23 f6 00 42 9d 64 11 5e 9b fd 4a 08');
    expect(hex(guidToBytesLE('8B7CA206-4790-4B9A-B8FE-575F050F886E'))).toBe('06 a2 7c 8b 90 47 9a 4b b8 fe 57 5f 05 0f 88 6e');
    expect(hex(guidToBytesLE('caa16737-fa36-4d43-b3b6-33f0aa44e76b'))).toBe('37 67 a1 ca 36 fa 43 4d b3 b6 33 f0 aa 44 e7 6b');
    expect(hex(guidToBytesLE('b04aefb7-d19e-4a81-b789-25b8e9445913'))).toBe('b7 ef 4a b0 9e d1 81 4a b7 89 25 b8 e9 44 59 13');
  });

  it('round-trips both byte orders', () => {
    const g = '0123abcd-4567-89ef-fedc-ba9876543210';
    expect(readGuidLE(guidToBytesLE(g), 0)).toBe(g);
    const b = new Uint8Array(20);
    writeUuidBE(b, 4, g);
    expect(hex(b.subarray(4))).toBe('01 23 ab cd 45 67 89 ef fe dc ba 98 76 54 32 10');
    expect(readUuidBE(b, 4)).toBe(g);
  });

  it('parses any case with or without braces, and refuses junk', () => {
    expect(parseGuid('{83ED0EC3-24C8-49A6-A959-5E4BF1288BFB}')).toBe('83ed0ec3-24c8-49a6-a959-5e4bf1288bfb');
    expect(bracedGuid('83ED0EC3-24C8-49A6-A959-5E4BF1288BFB')).toBe('{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}');
    expect(guidEquals('{83ED0EC3-24C8-49A6-A959-5E4BF1288BFB}', '83ed0ec3-24c8-49a6-a959-5e4bf1288bfb')).toBe(true);
    expect(isGuid('83ed0ec3-24c8-49a6-a959-5e4bf1288bf')).toBe(false);
    expect(isGuid('{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb')).toBe(false);
    expect(() => parseGuid('nope', 'disk id')).toThrow(/disk id "nope" is not a GUID/);
  });

  it('derives stable version-5 GUIDs (RFC 4122 appendix vector)', () => {
    // uuid.uuid5(uuid.NAMESPACE_DNS, 'python.org')
    expect(deriveGuid('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'python.org')).toBe('886313e1-3b8a-5372-9b90-0c9aee199e5d');
    const a = deriveGuid('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'x');
    expect(deriveGuid('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'x')).toBe(a);
    expect(deriveGuid('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'y')).not.toBe(a);
  });
});
