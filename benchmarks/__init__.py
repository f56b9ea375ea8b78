"""On-demand benchmarks: asyncdl against the 2013 script it replaces, on the emulator over loopback.

Run ``python -m benchmarks`` (see ``benchmarks/README.md``); nothing here runs in the unit tests,
which only share ``server.EmulatorProcess``.
"""
