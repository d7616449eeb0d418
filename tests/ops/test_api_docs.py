"""The API reference lives in the repository (docs/), generated from the OpenAPI schema, and
nothing a reader is sent to lies outside the repository."""

import re
from pathlib import Path

from ops import apidocs

ROOT = Path(__file__).resolve().parents[2]


def test_docs_openapi_yaml_and_api_md_match_the_schema():
    for path, expected in apidocs.render().items():
        assert path.exists(), f"{path} is missing: run `.venv/bin/python manage.py api_docs`"
        assert path.read_text() == expected, (
            f"{path.relative_to(ROOT)} is stale: run `.venv/bin/python manage.py api_docs`"
        )


def test_api_md_documents_every_endpoint_of_the_schema():
    schema = apidocs.schema()
    text = (ROOT / "docs" / "api.md").read_text()
    for path, item in schema["paths"].items():
        for method in apidocs.METHODS:
            if method in item:
                assert f"### `{method.upper()} {path}`" in text


def test_the_bare_address_redirects_to_the_api_docs(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/api/docs/"
    assert client.get(response["Location"]).status_code == 200


def _markdown_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_document_points_outside_the_repository():
    for doc in _markdown_files():
        text = doc.read_text()
        assert "../shared" not in text and "/work/" not in text, doc.name
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            resolved = (doc.parent / target.split("#")[0]).resolve()
            assert resolved.is_relative_to(ROOT), f"{doc.name} links outside: {target}"
            assert resolved.exists(), f"{doc.name} links to a missing file: {target}"
