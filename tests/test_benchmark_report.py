"""benchmarks/report.py: a new run rewrites results.md's tables and keeps the analysis written by
hand below them, marking it when it discusses another commit's run."""

from pathlib import Path

from benchmarks import report
from benchmarks.analysis import Goal, Results
from benchmarks.machine import REPO
from benchmarks.settings import Settings

ANALYSIS = "## Analysis\n\nasyncdl was 83x faster than the script.\n"


def machine(commit: str) -> dict[str, object]:
    return {
        "date": "2026-11-25T00:00:00+00:00",
        "nproc": 2,
        "cpu": "test",
        "python": "3.11",
        "versions": {"asyncdl": "0.1.0"},
        "commit": commit,
        "asyncdl_modified": False,
        "asyncdl_source": str(REPO / "asyncdl"),
        "load_average_at_start": [1.0, 1.0, 1.0],
    }


def results(measured: str) -> Results:
    return Results(jobs={}, rows=[], goals=[Goal("a goal", measured, True)])


def write(folder: Path, commit: str, measured: str) -> str:
    report.write(Settings(out_dir=folder), machine(commit), results(measured), folder)
    return (folder / "results.md").read_text()


def test_a_new_run_keeps_the_analysis_and_says_when_it_is_for_another_commit(tmp_path):
    first = write(tmp_path, "aaaaaaa", "1.0")
    assert "<!-- analysis" not in first  # nothing to keep yet
    mark = report.ANALYSIS_MARK.format(commit="aaaaaaa")
    (tmp_path / "results.md").write_text(f"{first}\n{mark}\n\n{ANALYSIS}")

    same = write(tmp_path, "aaaaaaa", "2.0")
    assert same == report.markdown(Settings(), machine("aaaaaaa"), results("2.0")) + (
        f"\n{mark}\n\n{ANALYSIS}"
    )

    newer = write(tmp_path, "bbbbbbb", "3.0")
    assert "| a goal | 3.0 | yes |" in newer and "| a goal | 2.0 |" not in newer
    assert newer.endswith(ANALYSIS)
    assert newer.count("This analysis discusses the run at commit aaaaaaa") == 1
    assert "the tables above are from commit bbbbbbb" in newer

    again = write(tmp_path, "ccccccc", "4.0")  # the note is replaced, not stacked
    assert again.count("This analysis discusses") == 1
    assert "from commit ccccccc" in again and "from commit bbbbbbb" not in again
    assert again.endswith(ANALYSIS)


def test_an_analysis_brought_up_to_date_loses_its_note(tmp_path):
    mark = report.ANALYSIS_MARK.format(commit="aaaaaaa")
    (tmp_path / "results.md").write_text(f"old tables\n\n{mark}\n\n{ANALYSIS}")
    stale = write(tmp_path, "bbbbbbb", "1.0")
    updated = stale.replace("run at commit aaaaaaa:", "run at commit bbbbbbb:")
    (tmp_path / "results.md").write_text(updated)
    assert "This analysis discusses" not in write(tmp_path, "bbbbbbb", "1.0")
