{
  "targets": [{
    "target_name": "vdiskfs_sys",
    "sources": ["sys.c"],
    "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"]
  }]
}
