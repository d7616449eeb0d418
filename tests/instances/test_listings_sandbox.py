"""The gateway's upstream listings against the real sandbox under each page numbering Novita's
public sources allow (pages from 0, from 1, 0 read as 1): every item, each once."""

import pytest

from instances.novita.client import get_client
from instances.novita.sandbox import PAGE_NUMBERINGS
from instances.services import snapshot
from tests.instances.test_sync import private_fleet_cache  # noqa: F401 - autouse fixture
from tests.sandbox import gateway_on_sandbox

pytestmark = pytest.mark.django_db

FLEET = 2 * snapshot.UPSTREAM_PAGE_SIZE + 50  # three pages of the gateway's page size


@pytest.fixture(params=PAGE_NUMBERINGS)
def sandbox(request, settings):
    options = {"step_seconds": 0, "seed": 17, "page_numbering": request.param}
    with gateway_on_sandbox(settings, **options) as sb:
        yield sb


def test_fleet_snapshot_holds_every_instance(sandbox):
    ids = sandbox.seed_instances(FLEET)
    taken = snapshot.fetch_snapshot()
    assert set(taken.rows) == set(ids)
    assert taken.complete is True


def test_comprehensive_listing_shows_every_instance(sandbox, api, make_instance):
    ids = sandbox.seed_instances(FLEET)
    make_instance(name="seed-0", novita_instance_id=ids[0])
    body = api.get("/api/instances/comprehensive").json()
    assert body["total"] == FLEET
    assert body["sources"] == {"local": 0, "novita": FLEET - 1, "merged": 1}


def test_name_lookup_finds_an_instance_on_the_last_page(sandbox):
    # The oldest instance comes last (lists are newest first), behind many with similar names.
    wanted = sandbox.api_create(
        {
            "name": "gpu-box",
            "productId": "3090.12c.46g",
            "gpuNum": 1,
            "imageUrl": "x",
            "kind": "gpu",
        }
    )["id"]
    sandbox.seed_instances(FLEET, name_prefix="gpu-box")
    found = get_client().list_instances(name="gpu-box")
    assert len({i.id for i in found}) == len(found) == FLEET + 1
    assert [i.id for i in found if i.name == "gpu-box"] == [wanted]


def test_job_listing_returns_every_job(sandbox):
    for instance_id in sandbox.seed_instances(FLEET):
        sandbox.api_action("migrate", {"instanceId": instance_id})
    jobs = get_client().list_jobs(type="instanceMigrate")
    assert len({j.id for j in jobs}) == len(jobs) == FLEET


def test_template_listing_returns_every_template(sandbox):
    templates = get_client().list_templates(page_size=1)
    assert sorted(t.id for t in templates) == ["comfyui", "pytorch-jupyter", "ubuntu-ssh"]
