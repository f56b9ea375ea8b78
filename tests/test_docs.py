"""The documentation's ties to the code that the docs build does not check itself."""

import re
from pathlib import Path

import asyncdl

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_has_an_entry_in_the_python_reference():
    page = (ROOT / "docs" / "python.md").read_text()
    documented = set(re.findall(r"^::: asyncdl\.(\w+)$", page, re.M))
    assert set(asyncdl.__all__) - {"__version__"} <= documented


def test_the_readmes_links_lead_to_files_of_the_repository():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local  # the README links to the docs
    for target in local:
        assert (ROOT / target).is_file(), target
