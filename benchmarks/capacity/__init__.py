"""The "capacity" benchmark: asyncdl against servers of limited capacity, -c auto against fixed -c.

Each server is the emulator with K handlers of service time L and a FIFO queue beyond them
(``asyncdl emulate --capacity K``), one of them shedding (``--shed-queue Q``). Each contender is
``asyncdl fetch`` with a fixed ``-c`` or the default ``-c auto``; the server says what it served
and what queue waits it imposed. Run ``python -m benchmarks.capacity`` (see benchmarks/README.md).
"""
