import asyncdl


def test_public_api_is_exactly_what_is_meant():
    assert sorted(asyncdl.__all__) == sorted(
        [
            "ApiError",
            "AsyncdlError",
            "CertificateError",
            "DataSetResult",
            "Endpoints",
            "Events",
            "Experiment",
            "FetchError",
            "FetchOptions",
            "HTTPStatusError",
            "LegacyVolumesWarning",
            "StorageError",
            "Streamlines",
            "Survey",
            "TLSError",
            "TransientError",
            "UsageError",
            "Verdict",
            "VolumeError",
            "__version__",
            "fetch",
            "fetch_sync",
            "find_experiments",
            "read_ids_file",
            "read_parquet",
            "read_streamlines",
            "survey",
            "verify",
        ]
    )
    for name in asyncdl.__all__:
        assert hasattr(asyncdl, name)


def test_every_error_is_an_asyncdl_error():
    for name in (
        "ApiError",
        "CertificateError",
        "FetchError",
        "HTTPStatusError",
        "StorageError",
        "TransientError",
        "UsageError",
        "VolumeError",
    ):
        assert issubclass(getattr(asyncdl, name), asyncdl.AsyncdlError)
    assert issubclass(asyncdl.UsageError, ValueError)
    assert issubclass(asyncdl.CertificateError, asyncdl.FetchError)
    assert not issubclass(asyncdl.CertificateError, asyncdl.TransientError)  # never retried
