import { defineConfig } from 'vitest/config';

// Native tests mount real FUSE filesystems, attach loop devices and run qemu-img/fio. They run one
// file at a time (loop devices and CPU are shared), each with its own mount points.
export default defineConfig({
  test: {
    include: ['native-test/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
