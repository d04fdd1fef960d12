// fuse-native ships no types; this declares the part vdiskfs uses.
declare module 'fuse-native' {
  type Callback = (...args: any[]) => void;
  interface FuseOptions {
    force?: boolean;
    mkdir?: boolean;
    autoUnmount?: boolean;
    allowOther?: boolean;
    defaultPermissions?: boolean;
    maxRead?: number;
    fsname?: string;
    subtype?: string;
    timeout?: number | false;
    debug?: boolean;
    attrTimeout?: number;
    entryTimeout?: number;
  }
  class Fuse {
    constructor(mnt: string, ops: Record<string, Callback>, opts?: FuseOptions);
    readonly mnt: string;
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    protected _fuseOptions(): string;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    static isConfigured(cb: (err: Error | null, yes: boolean) => void): void;
  }
  export = Fuse;
}
