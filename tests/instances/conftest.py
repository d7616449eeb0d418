import pytest
import responses

from instances.models import Instance
from instances.status import Desired, Status
from tests.instances.upstream import FakeNovita


@pytest.fixture
def novita():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeNovita(mock)


@pytest.fixture
def make_instance(db):
    def make(**fields):
        defaults = {
            "name": f"inst-{Instance.objects.count() + 1}",
            "product_name": "RTX 4090 24GB",
            "template_id": "pytorch-jupyter",
            "status": Status.READY,
            "desired_status": Desired.RUNNING,
            "novita_instance_id": f"nov-{Instance.objects.count() + 1}",
            "next_poll_at": None,
        }
        defaults.update(fields)
        return Instance.objects.create(**defaults)

    return make
