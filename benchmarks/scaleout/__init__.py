"""The "scale-out" benchmark: asyncdl on running Dask clusters of 1, 2 and 3 workers.

Two parts, each in interleaved rounds against one emulator (``python -m benchmarks.scaleout``;
see benchmarks/README.md):

- **machines**: each worker is a small machine of its own, a cgroup with 0.2 of a core, and the
  server (the emulator, alone on the other core) is big: how the rate grows with the workers, with
  a fixed ``-c 512`` and with ``-c auto`` (a controller per worker), and what the tail costs.
- **server**: the workers have the machine's CPU and the server has K handlers (``asyncdl
  emulate --capacity K``): whether their controllers fill the server together, share it fairly and
  keep its queue short.
"""
