import json
import urllib.error
import urllib.request
from urllib.parse import unquote

import pytest

from asyncdl import ApiError, Endpoints, FetchError, FetchOptions, UsageError, VolumeError
from asyncdl.catalog import (
    StructureNames,
    _page,
    _search,
    find_experiments,
    list_experiments,
)
from asyncdl.emulator import CATALOGUE_IDS, DATA_SET_IDS
from asyncdl.emulator.ontology import BY_ACRONYM, structure_tree
from asyncdl.emulator.synthetic import Experiment as Synthetic
from asyncdl.fetcher import HttpClient, Tally
from asyncdl.responses import rows
from asyncdl.urls import QUERY_SAFE_ACRONYM

from .conftest import SHARED, EmulatorThread

ISOCORTEX = {"VISp", "VISrl", "VISpor", "SSp-bfd", "MOp", "ACAd"}
SEARCH_PATH = "/api/v2/data/query.json?criteria=service::mouse_connectivity_injection_structure"
#: The real structure graph 1 (1327 structures, flat, as AllenSDK's StructureTree dumps it).
REAL_TREE = SHARED / "reference" / "allen_structure_tree_graph1_brainrender.json"


def get_json(emulator, criteria):
    url = f"{emulator.base_url}/api/v2/data/query.json?criteria={criteria}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


async def search(emulator, structure, **kwargs):
    tally = Tally()
    async with HttpClient(FetchOptions(concurrency=4)) as client:
        found = await list_experiments(client, emulator.endpoints, structure, tally=tally, **kwargs)
    return found, tally


def searches_on_the_wire(emulator):
    """The raw request targets of the injection-structure searches the emulator received."""
    return [raw for raw, _agent in emulator.stats.wire if raw.startswith(SEARCH_PATH)]


def test_url_is_the_real_services_encoded_like_allensdk():
    url = Endpoints().injection_structure_search("VISp", True, 2000, 500)
    assert url == (
        "https://api.brain-map.org/api/v2/data/query.json?criteria="
        "service::mouse_connectivity_injection_structure"
        "%5Binjection_structures$eqVISp%5D%5Bprimary_structure_only$eqtrue%5D"
        "%5Bstart_row$eq2000%5D%5Bnum_rows$eq500%5D"
    )
    # Without --primary-only the parameter is not sent at all (AllenSDK sends only what it is given).
    anywhere = Endpoints().injection_structure_search("385,SSp-bfd,IG/FC", False, 0, 1)
    assert unquote(anywhere).endswith(
        "[injection_structures$eq385,SSp-bfd,IG/FC][start_row$eq0][num_rows$eq1]"
    )
    assert "primary_structure_only" not in anywhere


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
    encoded = service.replace("[", "%5B").replace("]", "%5D")
    assert get_json(emulator, encoded) == first  # both forms, as the real server takes them
    assert [raw.count("[") for raw in searches_on_the_wire(emulator)] == [1, 0]
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
    assert tally.requests == 3  # the structure tree, a full page of 2000, a short one of 600
    assert emulator.stats.requests["query"] == 2
    assert emulator.stats.requests["structure_graph"] == 1
    assert [unquote(raw)[len(SEARCH_PATH) :] for raw in searches_on_the_wire(emulator)] == [
        "[injection_structures$eqgrey][start_row$eq0][num_rows$eq2000]",
        "[injection_structures$eqgrey][start_row$eq2000][num_rows$eq2000]",
    ]


async def test_small_pages_give_the_same_list(emulator):
    found, tally = await search(emulator, "Isocortex", page_size=300)
    expected = [
        i for i in CATALOGUE_IDS if Synthetic(i).metadata()["structure-abbrev"] in ISOCORTEX
    ]
    assert [e.id for e in found] == expected
    assert len(expected) % 300 != 0
    assert emulator.stats.requests["query"] == len(expected) // 300 + 1 > 2  # last one short
    assert tally.requests == emulator.stats.requests["query"] + 1  # and the structure tree


async def test_a_page_size_dividing_the_matches_ends_on_an_empty_page(emulator):
    assert len(CATALOGUE_IDS) % 1300 == 0
    found, _ = await search(emulator, "grey", page_size=1300)
    assert [e.id for e in found] == list(CATALOGUE_IDS)
    starts = [unquote(raw).split("[start_row$eq")[1] for raw in searches_on_the_wire(emulator)]
    assert starts == ["0][num_rows$eq1300]", "1300][num_rows$eq1300]", "2600][num_rows$eq1300]"]


@pytest.mark.parametrize("total_rows", ["absent", "page"])
async def test_paging_does_not_depend_on_total_rows(total_rows):
    # What total_rows means for connected services is undocumented: absent, or only this page's
    # count, it must neither stop the paging early nor change the list.
    with EmulatorThread(search_total_rows=total_rows, record=True) as emu:
        answer = get_json(
            emu,
            "service::mouse_connectivity_injection_structure"
            "[injection_structures$eqgrey][num_rows$eq10]",
        )
        assert answer.get("total_rows", "absent") == ("absent" if total_rows == "absent" else 10)
        emu.stats.reset()
        for size, pages in [(2000, 2), (1300, 3), (700, 4)]:
            found, _ = await search(emu, "grey", page_size=size)
            assert [e.id for e in found] == list(CATALOGUE_IDS)
            assert len(searches_on_the_wire(emu)) == pages
            emu.stats.reset()


async def test_pages_are_bounded_when_they_never_run_short(emulator):
    tally = Tally()
    async with HttpClient(FetchOptions(retries=0)) as client:
        with pytest.raises(FetchError, match="full pages after 2"):
            await list_experiments(
                client, emulator.endpoints, "grey", page_size=100, max_pages=2, tally=tally
            )
    assert emulator.stats.requests["query"] == 2


async def test_primary_only_counts_the_primary_structure_only(emulator):
    primary, _ = await search(emulator, "VISp", primary_only=True)
    [asked] = searches_on_the_wire(emulator)
    assert "%5Bprimary_structure_only$eqtrue%5D" in asked
    emulator.stats.reset()
    anywhere, _ = await search(emulator, "VISp")
    [plain] = searches_on_the_wire(emulator)
    assert "primary_structure_only" not in plain
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


async def test_unknown_structure_is_refused_before_searching_with_close_matches(emulator):
    with pytest.raises(UsageError) as err:
        await find_experiments("VISq", endpoints=emulator.endpoints)
    assert str(err.value) == (
        "unknown structure acronym 'VISq' (not in the structure tree); close matches: VISp, VS, VISrl, VISpor"
    )
    with pytest.raises(UsageError, match=r"'NOPE' .*; no close match$"):
        await find_experiments("VISp,NOPE", endpoints=emulator.endpoints)
    with pytest.raises(UsageError, match="unknown structure id 123456789"):
        await find_experiments("385,123456789", endpoints=emulator.endpoints)
    assert "query" not in emulator.stats.requests  # the search itself never ran
    # Case is forgiven where the tree leaves no doubt, and the tree's spelling is sent.
    found, _ = await search(emulator, "visp,0385", primary_only=True)
    assert found and {e.structure for e in found} == {"VISp"}
    assert unquote(searches_on_the_wire(emulator)[0]).startswith(
        SEARCH_PATH + "[injection_structures$eqVISp,385]"
    )
    # An acronym a query cannot carry goes by its id.
    await find_experiments("fiber tracts", endpoints=emulator.endpoints)
    assert unquote(searches_on_the_wire(emulator)[-1]).startswith(
        SEARCH_PATH + "[injection_structures$eq1009]"
    )


async def test_a_structure_the_service_does_not_know_is_an_api_error(emulator):
    # Should the tree and the service disagree, the service's own answer is reported.
    async with HttpClient(FetchOptions(retries=0)) as client:
        with pytest.raises(ApiError, match="Unknown structure"):
            await _search(client, emulator.endpoints, "NOPE", False, 2000, 5, Tally())


def test_unknown_acronyms_are_matched_against_the_real_tree():
    names = StructureNames.from_tree(json.loads(REAL_TREE.read_text()))
    assert len(names.acronyms) == len(names.ids) == 1327
    assert len({a.lower() for a in names.acronyms}) == 1325  # CM/cm and IPF/ipf differ by case
    assert names.resolve("VISp,Isocortex,385") == "VISp,Isocortex,385"
    assert names.resolve("visp,ssp-BFD") == "VISp,SSp-bfd"
    assert names.resolve("cm") == "cm" and names.resolve("CM") == "CM"
    with pytest.raises(UsageError, match=r"'Cm' is ambiguous: did you mean CM or cm\?$"):
        names.resolve("Cm")
    with pytest.raises(UsageError) as err:
        names.resolve("VISpp")
    message = str(err.value)
    assert "\n" not in message and message.startswith("unknown structure acronym 'VISpp'")
    close = message.split("close matches: ")[1].split(", ")
    assert close[0] == "VISp" and {"VISpl", "VISpm"} < set(close) and len(close) == 5
    with pytest.raises(UsageError, match=r"^unknown structure acronym 'VISp\]'"):
        names.resolve("VISp]")  # refused by the tree; it could not reach a query anyway
    with pytest.raises(UsageError, match="not a structure acronym or id"):
        names.resolve("VISp," * 101)
    with pytest.raises(UsageError, match="an empty structure in 'VISp,,MOp'"):
        names.resolve("VISp,,MOp")


def test_real_acronyms_with_spaces_or_commas_are_searched_by_id():
    names = StructureNames.from_tree(json.loads(REAL_TREE.read_text()))
    odd = sorted(a for a in names.acronyms if not QUERY_SAFE_ACRONYM.fullmatch(a))
    assert odd == [
        "CUL4, 5",
        "CUL4, 5gr",
        "CUL4, 5mo",
        "CUL4, 5pu",
        "fiber tracts",
        "grv of CBX",
        "grv of CTX",
    ]
    cul = names.id_of["CUL4, 5"]
    assert names.resolve("fiber tracts") == "1009"
    assert names.resolve("CUL4, 5") == str(cul)  # found whole, not as CUL4 and 5
    assert names.resolve("VISp, CUL4, 5 ,385") == f"VISp,{cul},385"
    assert names.resolve("Fiber Tracts") == "1009"
    for query in ("fiber tracts", "VISp, CUL4, 5 ,grv of CTX"):
        Endpoints().injection_structure_search(names.resolve(query), False, 0, 10)  # valid


def test_the_emulators_tree_is_read_nested():
    names = StructureNames.from_tree(structure_tree())
    assert names.acronyms == set(BY_ACRONYM) and names.ids == set(BY_ACRONYM.values())
    for broken in [
        [{"id": 1}],
        [{"id": "1", "acronym": "x"}],
        [{"id": 1, "acronym": "x", "children": 3}],
        [5],
    ]:
        with pytest.raises(VolumeError, match="malformed structure tree"):
            StructureNames.from_tree(broken)  # type: ignore[arg-type]


def test_answers_are_read_whatever_their_total_rows():
    for total in ["many", 10**9, -1, None]:
        payload = {
            "success": True,
            "msg": [{"id": 5, "injection-volume": None}],
            "total_rows": total,
        }
        [exp] = _page(payload, "u")
        assert (exp.id, exp.injection_volume) == (5, None)
    assert _page({"success": True, "msg": []}, "u") == []
    with pytest.raises(FetchError, match="valid id"):
        _page({"success": True, "msg": [{"id": "x"}], "total_rows": 1}, "u")
