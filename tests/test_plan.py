"""The run plan: built once from what a caller gives, and picklable whole (a Dask worker gets it)."""

import pickle

import pytest

from asyncdl import Endpoints, FetchOptions, UsageError
from asyncdl.plan import RunPlan


def test_a_plan_validates_ids_in_order_and_makes_the_output_folder(tmp_path):
    out = tmp_path / "a" / "b"
    plan = RunPlan.make(["7", 3, 7, " 12 "], out)
    assert plan.ids == (7, 3, 12)
    assert out.is_dir() and plan.out == out and plan.cache == out / ".cache"
    assert RunPlan.make([1], out, cache_dir=tmp_path / "c").cache == tmp_path / "c"


@pytest.mark.parametrize("ids", [[], ["x"], [0], [True]])
def test_a_plan_refuses_bad_or_no_ids(tmp_path, ids):
    with pytest.raises(UsageError):
        RunPlan.make(ids, tmp_path)


def test_an_output_folder_that_cannot_be_made_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot create output directory"):
        RunPlan.make([1], tmp_path / "file" / "out")


def test_a_plan_travels_whole_and_says_what_results_depend_on(tmp_path):
    options = FetchOptions(concurrency=9, density_range=(0.1, 0.2), volumes="legacy")
    plan = RunPlan.make([5], tmp_path, options=options, endpoints=Endpoints("http://h:1"))
    again = pickle.loads(pickle.dumps(plan))
    assert again == plan
    assert (
        again.params
        == plan.params
        == {
            "density_range": [0.1, 0.2],
            "injection_threshold": 0.5,
            "volumes": "legacy",
            "source": Endpoints("http://h:1").name,
        }
    )
