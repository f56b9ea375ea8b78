import json
import urllib.error
import urllib.request

import pytest

from asyncdl import ApiError, Endpoints, FetchError, FetchOptions, TransientError, UsageError
from asyncdl.catalog import Experiment, _page, find_experiments, list_experiments
from asyncdl.emulator import CATALOGUE_IDS, DATA_SET_IDS
from asyncdl.emulator.ontology import BY_ACRONYM
from asyncdl.emulator.synthetic import Experiment as Synthetic
from asyncdl.fetcher import HttpClient, Tally
from asyncdl.responses import rows

ISOCORTEX = {"VISp", "VISrl", "VISpor", "SSp-bfd", "MOp", "ACAd"}


def get_json(emulator, criteria):
    url = f"{emulator.base_url}/api/v2/data/query.json?criteria={criteria}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


async def search(emulator, structure, **kwargs):
    tally = Tally()
    async with HttpClient(FetchOptions(concurrency=4)) as client:
        found = await list_experiments(client, emulator.endpoints, structure, tally=tally, **kwargs)
    return found, tally


def test_url_is_the_real_services():
    url = Endpoints().injection_structure_search("VISp", True, 2000, 500)
    assert url == (
        "https://api.brain-map.org/api/v2/data/query.json?criteria="
        "service::mouse_connectivity_injection_structure"
        "[injection_structures$eqVISp][primary_structure_only$eqtrue]"
        "[start_row$eq2000][num_rows$eq500]"
    )
    assert "[injection_structures$eq385,SSp-bfd,IG/FC]" in Endpoints().injection_structure_search(
        "385,SSp-bfd,IG/FC", False, 0, 1
    )


@pytest.mark.parametrize(
    "bad",
    ["", "VISp][num_rows$eq5", "VISp&x=1", "VIS p", "VISp,", ",VISp", "VISp%5D", "x" * 501, 385],
)
def test_structures_that_could_change_the_query_are_refused(bad):
    with pytest.raises(UsageError, match="not a structure acronym or id"):
        Endpoints().injection_structure_search(bad, False, 0, 10)


@pytest.mark.parametrize(("start", "rows"), [(-1, 10), (0, 0), (0, 2001)])
def test_paging_parameters_are_checked(start, rows):
    with pytest.raises(UsageError):
        Endpoints().injection_structure_search("VISp", False, start, rows)


def test_emulator_pages_like_the_service(emulator):
    service = "service::mouse_connectivity_injection_structure[injection_structures$eqgrey]"
    first = get_json(emulator, service)
    assert first["success"] is True and first["start_row"] == 0
    assert first["num_rows"] == len(first["msg"]) == 2000  # the service's cap
    assert first["total_rows"] == len(CATALOGUE_IDS) > 2000
    big = get_json(emulator, service + "[start_row$eq2500][num_rows$eq5000]")
    assert big["num_rows"] == len(big["msg"]) == len(CATALOGUE_IDS) - 2500
    past = get_json(emulator, service + "[start_row$eq9999][num_rows$eq10]")
    assert past["msg"] == [] and past["total_rows"] == len(CATALOGUE_IDS)
    record = first["msg"][0]
    assert {
        "id",
        "structure-abbrev",
        "structure-name",
        "structure-id",
        "transgenic-line",
        "injection-volume",
        "injection-structures",
        "product-id",
        "gender",
        "strain",
        "name",
        "injection-coordinates",
    } <= set(record)
    assert set(DATA_SET_IDS) <= set(CATALOGUE_IDS)


def test_emulator_refuses_what_it_cannot_run(emulator):
    unknown = get_json(
        emulator, "service::mouse_connectivity_injection_structure[injection_structures$eqNOPE]"
    )
    assert unknown["success"] is False and "NOPE" in unknown["msg"]
    for criteria in [
        "service::mouse_connectivity_injection_structure[primary_structure_only$eqtrue]",
        "service::mouse_connectivity_injection_structure[injection_structures$eqVISp][colour$eq1]",
        "service::mouse_connectivity_injection_structure[injection_structures$eqVISp][num_rows$eq-1]",
    ]:
        with pytest.raises(urllib.error.HTTPError) as err:
            get_json(emulator, criteria)
        err.value.close()
        assert err.value.code == 400


async def test_grey_needs_two_pages_and_lists_the_whole_catalogue(emulator):
    found, tally = await search(emulator, "grey")
    assert [e.id for e in found] == list(CATALOGUE_IDS)
    assert tally.requests == 2
    assert emulator.stats.requests["query"] == 2


async def test_small_pages_give_the_same_list(emulator):
    found, tally = await search(emulator, "Isocortex", page_size=300)
    expected = [
        i for i in CATALOGUE_IDS if Synthetic(i).metadata()["structure-abbrev"] in ISOCORTEX
    ]
    assert [e.id for e in found] == expected
    assert tally.requests == -(-len(expected) // 300) > 2


async def test_primary_only_counts_the_primary_structure_only(emulator):
    primary, _ = await search(emulator, "VISp", primary_only=True)
    anywhere, _ = await search(emulator, "VISp")
    assert primary and {e.structure for e in primary} == {"VISp"}
    assert {e.id for e in primary} < {e.id for e in anywhere}
    for exp in anywhere:
        listed = {s["abbreviation"] for s in exp.record["injection-structures"]}
        assert "VISp" in listed
    # VISpor is never a primary injection site in the emulator, only a spill-over.
    assert (await search(emulator, "VISpor", primary_only=True))[0] == []
    assert (await search(emulator, str(BY_ACRONYM["VISpor"])))[0]


async def test_listed_experiments_are_the_ones_the_emulator_serves(emulator):
    found, _ = await search(emulator, "CP,TH", primary_only=True)
    assert {e.structure for e in found} == {"CP", "TH"}
    exp = next(e for e in found if e.id not in DATA_SET_IDS)
    synthetic = Synthetic(exp.id)
    assert dict(exp.record) == synthetic.metadata()
    assert exp.structure_name == synthetic.metadata()["structure-name"]
    assert exp.injection_volume == pytest.approx(synthetic.metadata()["injection-volume"])
    x, y, z = synthetic.injection_coordinates()
    records = []
    async with HttpClient(FetchOptions()) as client:
        for dx in (-1500, 1000, 2000):
            url = emulator.endpoints.target_spatial([x + dx, y, z], exp.id)
            records += await client.get_json(url, Tally(), rows)
    assert records
    for record in records:  # the spatial search describes the same experiment
        assert {k: record[k] for k in exp.record} == dict(exp.record)


async def test_transgenic_lines_are_filtered(emulator):
    everything, _ = await search(emulator, "MOp")
    cux2, _ = await search(emulator, "MOp", transgenic_lines=["cux2-ires-cre"])
    wild, _ = await search(emulator, "MOp", transgenic_lines=["0"])
    assert cux2 == [e for e in everything if e.transgenic_line == "Cux2-IRES-Cre"] != []
    assert wild == [e for e in everything if e.transgenic_line == ""] != []
    with pytest.raises(UsageError):
        await search(emulator, "MOp", transgenic_lines=[" "])
    with pytest.raises(UsageError):
        await search(emulator, "MOp", transgenic_lines="Cux2-IRES-Cre")


async def test_unknown_structure_is_an_api_error(emulator):
    with pytest.raises(ApiError, match="Unknown structure"):
        await find_experiments(
            "NOPE", endpoints=emulator.endpoints, options=FetchOptions(retries=0)
        )


def test_broken_answers_are_recognised():
    with pytest.raises(TransientError, match="total_rows"):
        _page({"success": True, "msg": [], "total_rows": "many"}, "u")
    with pytest.raises(TransientError, match="total_rows"):
        _page({"success": True, "msg": [], "total_rows": 10**9}, "u")
    with pytest.raises(FetchError, match="valid id"):
        _page({"success": True, "msg": [{"id": "x"}], "total_rows": 1}, "u")
    page = _page(
        {"success": True, "msg": [{"id": 5, "injection-volume": None}], "total_rows": 1}, "u"
    )
    assert page.experiments == [Experiment(5, "", "", "", None, {})]
