"""The rule of transactions, checked on the source (DESIGN.md): services own their
transactions, so the faces (API, gallery, settings, auth, operations, CLI and the helpers they
share) and the job functions never reach the database session, not even to import it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from config import BASE_DIR

FACES = ["app/api", "app/gallery", "app/settings", "app/auth", "app/ops", "app/cli", "app/views.py"]
JOBS = ["app/jobs.py"]


def sources(*places: str) -> list[Path]:
    root = Path(BASE_DIR)
    found = []
    for place in places:
        path = root / place
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


def session_uses(source: str) -> list[str]:
    """Where the code reaches the database: importing `db` from app.extensions (under any
    name), or `<db>.session` through such a name or through the module."""
    tree = ast.parse(source)
    db_names = set()
    module_names = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "app.extensions":
            for alias in node.names:
                if alias.name in ("db", "*"):
                    db_names.add(alias.asname or alias.name)
                    found.append(f"line {node.lineno}: imports db from app.extensions")
        elif isinstance(node, ast.ImportFrom) and node.module == "app":
            module_names |= {a.asname or a.name for a in node.names if a.name == "extensions"}
        elif isinstance(node, ast.Import):
            module_names |= {
                a.asname or a.name for a in node.names if a.name.startswith("app.extensions")
            }
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr == "session"):
            continue
        holder = node.value
        via_name = isinstance(holder, ast.Name) and holder.id in db_names
        via_module = (
            isinstance(holder, ast.Attribute)
            and holder.attr == "db"
            and ast.unparse(holder.value) in module_names | {"app.extensions"}
        )
        if via_name or via_module:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(
    "path",
    sources(*FACES, *JOBS),
    ids=lambda p: str(p.relative_to(BASE_DIR)),
)
def test_faces_and_jobs_leave_the_session_to_the_services(path):
    uses = session_uses(path.read_text())
    assert uses == [], f"{path.relative_to(BASE_DIR)}: call a service instead: {uses}"


def test_the_faces_and_jobs_are_all_checked():
    checked = {str(p.relative_to(BASE_DIR)) for p in sources(*FACES, *JOBS)}
    assert {"app/api/images.py", "app/cli/imports.py", "app/views.py", "app/jobs.py"} <= checked
    assert len(checked) >= 20


@pytest.mark.parametrize(
    "source",
    [
        "from app.extensions import db\n",
        "from app.extensions import db as database\ndatabase.session.commit()\n",
        "from app.extensions import login_manager, db\n",
        "import app.extensions\napp.extensions.db.session.rollback()\n",
        "from app import extensions\nextensions.db.session.add(row)\n",
        "from app import extensions as ext\next.db.session.execute(query)\n",
    ],
)
def test_the_check_finds_every_way_to_the_session(source):
    assert session_uses(source)


def test_the_check_lets_other_sessions_be():
    # The cookie session of Flask, the login manager: not the database.
    source = (
        "from flask import session\nfrom app.extensions import login_manager\n"
        "session.clear()\nlogin_manager.session_protection = 'strong'\n"
    )
    assert session_uses(source) == []
