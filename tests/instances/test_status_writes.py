"""transitions.py is the one writer of an instance's status: no other module of the app passes
`status=` to an ORM write or assigns `.status`, so every change gets its guard, event and
webhook."""

import ast
from pathlib import Path

import instances

APP = Path(instances.__file__).parent
# The sandbox simulates upstream (its own instances, not ours); migrations describe the schema.
NOT_THE_APP = ("novita/sandbox", "migrations")
WRITES = {"update", "create", "bulk_create", "update_or_create", "get_or_create"}


def status_writes(source: str) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in WRITES
            and any(k.arg == "status" for k in node.keywords)
        ):
            lines.append(node.lineno)
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr == "status":
                lines.append(node.lineno)
    return sorted(lines)


def test_only_transitions_writes_an_instance_status():
    offenders = []
    for path in sorted(APP.rglob("*.py")):
        relative = path.relative_to(APP).as_posix()
        if relative == "services/transitions.py" or relative.startswith(NOT_THE_APP):
            continue
        offenders += [f"{relative}:{line}" for line in status_writes(path.read_text())]
    assert offenders == []


def test_the_check_sees_each_kind_of_status_write():
    source = (
        "Instance.objects.filter(pk=1).update(status='ready')\n"
        "Instance.objects.create(name='x', status='creating')\n"
        "instance.status = 'stopped'\n"
        "Instance.objects.filter(status='ready').update(next_poll_at=None)\n"
    )
    assert status_writes(source) == [1, 2, 3]
