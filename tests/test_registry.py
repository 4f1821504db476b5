"""Model registry: versions per (domain, strategy), exactly one active, verified model files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from lab.db import session_scope
from lab.db.models import ModelVersion
from lab.errors import ModelFileError, RegistryError, UnknownStrategy, UnknownVersion
from lab.registry import ModelRegistry


@pytest.fixture
def registry(engine, tmp_path) -> ModelRegistry:
    return ModelRegistry(engine, tmp_path / "models")


def model_file(tmp_path: Path, content: bytes, name: str = "model.ubj") -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


def active_ids(engine, strategy: str = "momentum") -> list[int]:
    with session_scope(engine) as session:
        return list(session.scalars(select(ModelVersion.id).where(
            ModelVersion.strategy == strategy, ModelVersion.is_active.is_(True))))


def test_undefined_and_infinite_figures_are_stored_as_null(registry, tmp_path):
    # PostgreSQL's JSON has no NaN or Infinity tokens; every JSON column stores them as null
    metrics = {"oos_auc": 0.61, "sharpe": float("nan"), "profit_factor": float("inf"),
               "folds": [{"auc": float("-inf")}, 0.5]}
    version = registry.save_version("trading", "momentum", model_file(tmp_path, b"a"), metrics=metrics)
    assert registry.get(version.id).metrics == {"oos_auc": 0.61, "sharpe": None, "profit_factor": None,
                                                "folds": [{"auc": None}, 0.5]}


def test_versions_are_numbered_per_domain_and_strategy(registry, tmp_path):
    a = registry.save_version("trading", "momentum", model_file(tmp_path, b"a"), params={"max_depth": 3},
                              metrics={"oos_auc": 0.61}, data_fingerprint="d1", feature_fingerprint="f1")
    b = registry.save_version("trading", "momentum", model_file(tmp_path, b"b"))
    c = registry.save_version("trading", "swing", model_file(tmp_path, b"c"))
    assert (a.version, b.version, c.version) == (1, 2, 1)
    assert a.params == {"max_depth": 3} and a.metrics == {"oos_auc": 0.61}
    assert (a.data_fingerprint, a.feature_fingerprint) == ("d1", "f1")
    assert not a.is_active and a.status == "candidate"


def test_model_files_are_stored_by_content_hash(registry, tmp_path):
    a = registry.save_version("trading", "momentum", model_file(tmp_path, b"same"))
    b = registry.save_version("trading", "swing", model_file(tmp_path, b"same"))
    assert a.model_path == b.model_path
    assert a.model_path.name.startswith(a.model_sha256)
    assert a.model_path.is_relative_to(tmp_path / "models")


def test_activate_makes_exactly_one_active(registry, engine, tmp_path):
    v1 = registry.save_version("trading", "momentum", model_file(tmp_path, b"1"))
    v2 = registry.save_version("trading", "momentum", model_file(tmp_path, b"2"))
    registry.activate(v1.id)
    registry.activate(v2.id)
    assert active_ids(engine) == [v2.id]
    assert registry.get_active_version("momentum").id == v2.id
    assert registry.get(v1.id).status == "retired"


def test_rollback_restores_an_earlier_version_in_its_domain(registry, tmp_path):
    v1 = registry.save_version("trading", "momentum", model_file(tmp_path, b"1"))
    v2 = registry.save_version("trading", "momentum", model_file(tmp_path, b"2"))
    registry.activate(v2.id)
    rolled = registry.rollback_to_version(v1.id)
    assert (rolled.id, rolled.domain, rolled.is_active) == (v1.id, "trading", True)
    assert [e["action"] for e in registry.history("momentum")][:2] == ["rolled_back", "activated"]


@pytest.mark.parametrize(("active", "target", "message"), [
    (None, 1, "trading/momentum has no active version to roll back from; `lab models activate {v1}` makes v1 active"),
    (2, 2, "v2 (id {v2}) is the active trading/momentum version already: nothing to roll back"),
    (1, 2, "v2 (id {v2}) is newer than the active trading/momentum v1 (id {v1}): a rollback goes back to an earlier "
           "version; `lab models activate {v2}` makes it active"),
])
def test_a_rollback_goes_only_to_an_older_version_than_the_active_one(registry, tmp_path, active, target, message):
    versions = {n: registry.save_version("trading", "momentum", model_file(tmp_path, str(n).encode())) for n in (1, 2)}
    if active is not None:
        registry.activate(versions[active].id)
    events = registry.history("momentum")
    with pytest.raises(RegistryError) as refused:
        registry.rollback_to_version(versions[target].id)
    assert str(refused.value) == message.format(v1=versions[1].id, v2=versions[2].id)
    assert registry.history("momentum") == events  # nothing activated, retired or recorded
    assert [v.is_active for v in registry.list_versions("trading", "momentum")] == [n == active for n in (1, 2)]


def test_the_database_itself_rejects_a_second_active_version(registry, engine, tmp_path):
    v1 = registry.save_version("trading", "momentum", model_file(tmp_path, b"1"))
    v2 = registry.save_version("trading", "momentum", model_file(tmp_path, b"2"))
    registry.activate(v1.id)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE model_versions SET is_active = true WHERE id = :id"), {"id": v2.id})


def test_list_versions_without_domain_lists_all_domains(registry, engine, tmp_path):
    registry.save_version("trading", "momentum", model_file(tmp_path, b"1"))
    registry.save_version("betting", "epl_over_under", model_file(tmp_path, b"2"))
    assert {v.domain for v in registry.list_versions()} == {"trading", "betting"}
    assert [v.domain for v in registry.list_versions(domain="betting")] == ["betting"]


def test_activating_a_missing_version_names_it(registry):
    with pytest.raises(UnknownVersion, match="model version 999 does not exist"):
        registry.activate(999)


def test_unknown_domain_and_strategy_are_rejected(registry, tmp_path):
    with pytest.raises(RegistryError, match="unknown domain 'sports'"):
        registry.save_version("sports", "momentum", model_file(tmp_path, b"1"))
    with pytest.raises(UnknownStrategy, match="unknown strategy 'momentun'"):
        registry.get_active_version("momentun")


def test_no_active_version_is_none(registry):
    assert registry.get_active_version("swing") is None


def test_a_corrupted_model_file_is_an_error_naming_the_version(registry, tmp_path):
    v = registry.save_version("trading", "momentum", model_file(tmp_path, b"good bytes"))
    v.model_path.write_bytes(b"tampered")
    with pytest.raises(ModelFileError, match=rf"model version {v.id} \(trading/momentum v1\).*corrupted"):
        registry.model_file(v.id)
    with pytest.raises(ModelFileError):
        registry.activate(v.id)


def test_a_missing_model_file_is_an_error_naming_the_version(registry, tmp_path):
    v = registry.save_version("trading", "momentum", model_file(tmp_path, b"x"))
    v.model_path.unlink()
    with pytest.raises(ModelFileError, match=rf"model version {v.id} .*missing"):
        registry.model_file(v)


def test_a_registry_whose_home_moved_loads_its_models_from_the_new_place(engine, tmp_path):
    """A LAB_HOME copied or mounted elsewhere (a restored backup, shared storage on a worker)
    reads the model files under its own models folder, not the paths of the old home."""
    old_home, new_home = tmp_path / "home", tmp_path / "moved"
    v = ModelRegistry(engine, old_home / "models").save_version("trading", "momentum",
                                                                 model_file(tmp_path, b"moved bytes"))
    shutil.copytree(old_home, new_home)
    shutil.rmtree(old_home)
    moved = ModelRegistry(engine, new_home / "models")
    path = moved.model_file(v.id)
    assert path.is_relative_to(new_home / "models") and path.read_bytes() == b"moved bytes"
    assert moved.get(v.id).model_path == path


def store_absolute_path(engine, version_id: int, path: Path) -> None:
    """What a row registered before model paths were stored relative to the models folder holds."""
    with session_scope(engine) as session:
        session.get(ModelVersion, version_id).model_path = str(path)


def test_an_old_row_with_an_absolute_path_still_loads(registry, engine, tmp_path):
    v = registry.save_version("trading", "momentum", model_file(tmp_path, b"old bytes"))
    elsewhere = tmp_path / "elsewhere" / v.model_path.name
    elsewhere.parent.mkdir()
    v.model_path.replace(elsewhere)
    store_absolute_path(engine, v.id, elsewhere)
    assert registry.model_file(v.id) == elsewhere


def test_an_old_absolute_row_reads_the_current_models_folder_when_the_file_is_there(engine, tmp_path):
    old_home, new_home = tmp_path / "home", tmp_path / "moved"
    v = ModelRegistry(engine, old_home / "models").save_version("trading", "momentum",
                                                                 model_file(tmp_path, b"old bytes"))
    store_absolute_path(engine, v.id, old_home / "models" / v.model_path.relative_to(old_home / "models"))
    shutil.copytree(old_home, new_home)
    shutil.rmtree(old_home)
    path = ModelRegistry(engine, new_home / "models").model_file(v.id)
    assert path.is_relative_to(new_home / "models") and path.read_bytes() == b"old bytes"


ACTIVATOR = textwrap.dedent("""
    import sys
    from pathlib import Path
    from lab.db import connect
    from lab.registry import ModelRegistry
    url, models, ids = sys.argv[1], sys.argv[2], [int(i) for i in sys.argv[3].split(",")]
    registry = ModelRegistry(connect(url), Path(models))
    for _ in range(150):
        for version_id in ids:
            registry.activate(version_id)
""")


def test_concurrent_activation_from_processes_leaves_exactly_one_active(registry, engine, db_url, tmp_path):
    """Eight processes activating in differing orders, long enough that PostgreSQL deadlocked
    (8 of 9 runs here) while the versions were locked in scan order rather than id order."""
    versions = [registry.save_version("trading", "momentum", model_file(tmp_path, bytes([i]))).id for i in range(4)]
    orders = [versions[i::-1] + versions[:i:-1] for i in range(4)] + [versions] * 4
    procs = [subprocess.Popen([sys.executable, "-c", ACTIVATOR, db_url, str(tmp_path / "models"),
                               ",".join(map(str, order))], stderr=subprocess.PIPE, text=True) for order in orders]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), [e[-800:] for e in errors if e]
    assert len(active_ids(engine)) == 1
