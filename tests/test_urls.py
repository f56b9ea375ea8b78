import pytest

from asyncdl import Endpoints, UsageError
from asyncdl.urls import data_set_id

REAL = Endpoints()


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


def test_target_spatial_formats_coordinates_like_the_seed():
    # The seed formats numpy floats with %d: truncation, not rounding.
    url = REAL.target_spatial([9500.0, 2700.9, 9800.4], 156394513)
    assert url == (
        "https://api.brain-map.org/api/v2/data/query.json?criteria="
        "service::mouse_connectivity_target_spatial"
        "[seed_point$eq9500,2700,9800][section_data_set$eq156394513]"
    )


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
