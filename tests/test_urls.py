from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncdl import Endpoints, FetchError, TLSError, UsageError
from asyncdl.errors import InsecureRedirectError
from asyncdl.urls import RMA_SAFE, data_set_id, follow_redirect, is_allen_api

REAL = Endpoints()
#: AllenSDK's quoting of a query URL before a GET (allensdk/api/api.py), spelled out for the tests.
SAFE = ";/?:@&=+$,"
#: The seed's spatial-search URL (download_data.py), with raw brackets.
SEED_FMT = (
    "%s/api/v2/data/query.json?criteria=service::mouse_connectivity_target_spatial"
    "[seed_point$eq%d,%d,%d][section_data_set$eq%d]"
)


def test_urls_are_the_real_apis():
    assert REAL.grid_nrrd(156394513, "density") == (
        "https://api.brain-map.org/grid_data/download_file/156394513"
        "?image=projection_density&resolution=100"
    )
    assert REAL.grid_nrrd(156394513, "injection").endswith(
        "?image=injection_fraction&resolution=100"
    )
    assert REAL.grid_legacy(156394513, "density") == (
        "https://api.brain-map.org/grid_data/download/156394513?include=density"
    )
    assert REAL.grid_legacy(156394513, "injection").endswith("?include=injection")
    assert REAL.fiber_tracts_legacy() == (
        "https://api.brain-map.org/api/v2/well_known_file_download/197646984"
    )
    assert REAL.annotation_nrrd() == (
        "https://download.alleninstitute.org/informatics-archive/current-release/mouse_ccf/"
        "annotation/ccf_2017/annotation_25.nrrd"
    )
    assert REAL.structure_graph() == (
        "https://api.brain-map.org/api/v2/structure_graph_download/1.json"
    )


def test_target_spatial_formats_coordinates_like_the_seed_and_encodes_like_allensdk():
    # The seed formats numpy floats with %d: truncation, not rounding; AllenSDK sends [ ] encoded.
    url = REAL.target_spatial([9500.0, 2700.9, 9800.4], 156394513)
    assert url == (
        "https://api.brain-map.org/api/v2/data/query.json?criteria="
        "service::mouse_connectivity_target_spatial"
        "%5Bseed_point$eq9500,2700,9800%5D%5Bsection_data_set$eq156394513%5D"
    )
    assert unquote(url) == SEED_FMT % ("https://api.brain-map.org", 9500, 2700, 9800, 156394513)


coordinates = st.floats(min_value=-1e7, max_value=1e7, allow_nan=False)
ids = st.integers(min_value=1, max_value=2**63 - 1)


@given(x=coordinates, y=coordinates, z=coordinates, data_set=ids)
def test_target_spatial_is_the_quoted_seed_url(x, y, z, data_set):
    assert SAFE == RMA_SAFE
    plain = SEED_FMT % (REAL.base_url, x, y, z, data_set)
    assert REAL.target_spatial((x, y, z), data_set) == quote(plain, SAFE)
    # Another host: only what asyncdl appends is quoted; the base URL is taken as given.
    for base in ("http://127.0.0.1:8000", "https://[::1]:8443/allen"):
        url = Endpoints(base).target_spatial([x, y, z], str(data_set))  # type: ignore[arg-type]
        assert url == base + quote((SEED_FMT % ("", x, y, z, data_set)), SAFE)


@given(
    structures=st.lists(
        st.from_regex(r"[A-Za-z0-9/-]{1,12}", fullmatch=True), min_size=1, max_size=4
    ).map(",".join),
    primary=st.booleans(),
    start=st.integers(min_value=0, max_value=10**6),
    rows=st.integers(min_value=1, max_value=2000),
)
def test_injection_structure_search_is_the_quoted_plain_url(structures, primary, start, rows):
    plain = (
        f"{REAL.base_url}/api/v2/data/query.json?criteria="
        f"service::mouse_connectivity_injection_structure[injection_structures$eq{structures}]"
        + ("[primary_structure_only$eqtrue]" if primary else "")
        + f"[start_row$eq{start}][num_rows$eq{rows}]"
    )
    url = REAL.injection_structure_search(structures, primary, start, rows)
    assert url == quote(plain, SAFE)
    assert "[" not in url and "]" not in url


@pytest.mark.parametrize(
    ("url", "real"),
    [
        ("http://api.brain-map.org", True),
        ("https://api.brain-map.org", True),
        ("https://API.Brain-Map.org.:443/", True),
        ("http://127.0.0.1:8000", False),
        ("http://api.brain-map.org.example.com", False),
        ("http://mirror.example/api.brain-map.org", False),
        ("http://download.alleninstitute.org", False),
    ],
)
def test_is_allen_api_looks_at_the_host_only(url, real):
    assert is_allen_api(url) is real
    assert Endpoints(url).is_allen_api is real


def test_base_urls_are_normalised_and_checked():
    assert (
        Endpoints("http://127.0.0.1:8000/")
        .grid_legacy(1, "density")
        .startswith("http://127.0.0.1:8000/grid_data/")
    )
    with pytest.raises(UsageError):
        Endpoints("ftp://example.org")


@pytest.mark.parametrize("good", [1, "156394513", " 42 "])
def test_data_set_id_accepts_positive_ints(good):
    assert data_set_id(good) == int(str(good).strip())


@pytest.mark.parametrize("bad", [0, -3, "1e5", "12a", "", "../etc", "١٢", True, 1.5, None, 2**63])
def test_data_set_id_rejects_everything_else(bad):
    with pytest.raises(UsageError):
        data_set_id(bad)


@pytest.mark.parametrize(
    ("url", "location", "target"),
    [
        (
            "http://a:1/x/y?q=1",
            "http://localhost:2/x/y?q=%5B1%5D",
            "http://localhost:2/x/y?q=%5B1%5D",
        ),
        (
            "https://a/x/y",
            "/z?criteria=s%5Bseed$eq1,2,3%5D",
            "https://a/z?criteria=s%5Bseed$eq1,2,3%5D",
        ),
        ("https://a/x/y", "z", "https://a/x/z"),
        ("http://a/x", "https://b/x", "https://b/x"),  # up to https is fine
        ("https://a/x", "//b/y", "https://b/y"),  # scheme-relative keeps https
    ],
)
def test_a_redirect_leads_to_an_absolute_url(url, location, target):
    assert follow_redirect(url, location) == target


def test_a_redirect_from_https_to_plain_http_is_refused_naming_both():
    with pytest.raises(InsecureRedirectError) as err:
        follow_redirect("https://api.brain-map.org/x?a=1", "http://mirror.example:8080/x?a=1")
    assert isinstance(err.value, TLSError) and err.value.host == "api.brain-map.org"
    assert "https://api.brain-map.org/x?a=1" in str(err.value)
    assert "http://mirror.example:8080/x?a=1" in str(err.value)


@pytest.mark.parametrize("location", ["ftp://a/x", "file:///etc/passwd", "javascript:alert(1)"])
def test_a_redirect_to_another_scheme_is_refused(location):
    with pytest.raises(FetchError, match="not an http"):
        follow_redirect("http://a/x", location)
