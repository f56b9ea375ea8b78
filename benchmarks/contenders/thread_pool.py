"""The seed's concurrent variant: its api.py mapped requests over an eventlet GreenPool; here a
thread pool of C workers does the same with urllib (a new connection per request, as urllib does).

``python -m benchmarks.contenders.thread_pool ID... --base-url URL -o OUT -c C [--sample K]``
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from . import seed, sequential


def main() -> None:
    job = seed.parse_job()
    with ThreadPoolExecutor(max_workers=job.concurrency) as pool:
        sequential.run(job, pool.map)


if __name__ == "__main__":
    main()
