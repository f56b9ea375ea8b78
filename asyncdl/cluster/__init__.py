"""A run spread over the processes and machines of a Dask cluster (``pip install 'asyncdl[dask]'``).

One task per data set, keyed by its id and the run. Each worker holds, for the run, what a local
run holds once: one HTTP client, one volume source and one ``Pipeline``, so the data sets it is
given share its lanes and its pipe stays full between them. Under ``-c auto`` (the default) each
worker runs a controller of its own and nothing is split. A fixed ``-c`` (and ``--rate``) is
shared among the workers that have data sets to fetch: evenly at first, then a worker with nothing
left gives its share to the others, so the last data sets of a run get the whole of ``-c``.
Progress comes back in batches through Dask's event log. Everything else is the local run's: the
same ``DataSet`` life, the same files, so resume and a worker that dies mid-data-set are handled by
the per-data-set resume (and ``store`` gives each attempt a ``lines.ndjson`` of its own).

    connect   a cluster for the run, or a running one; the workers up and seeing the output folder
    client    the run as the client drives it: tasks, results, the workers' progress relayed
    shares    a fixed -c and --rate split among the workers that have work, moved as the work moves
    worker    the run on one worker: its live state, the task that fetches a data set
    messages  what a worker tells the client, written by ``worker`` and read by ``client``

Only ``fetch(..., client=...)`` and the command line's ``--workers``/``--scheduler`` import this.
"""

try:
    import distributed  # noqa: F401 (the extra's one check, before any module here needs it)
except ImportError as exc:  # pragma: no cover (the extra is installed for the tests)
    from ..errors import UsageError

    raise UsageError("running on Dask needs the 'dask' extra: pip install 'asyncdl[dask]'") from exc

from .client import fetch_on_cluster
from .connect import connect, ready

__all__ = ["connect", "fetch_on_cluster", "ready"]
