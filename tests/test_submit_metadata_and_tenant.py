"""`submit(..., metadata=..., tenant=...)`: stored with the run in a real SQLite file, shown by
`run()`, handles and `RunRecord`, filterable by tenant, merged with `ctx.metadata` by a real
worker; bad values are refused before anything is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from flow_jobs import Item, tag_metadata
from pydantic import BaseModel

from actors import Client, MemoryStore, Supervisor, job
from actors.run import NewRun
from actors.stores import SQLiteStore

pytestmark = pytest.mark.timeout(60)


def item(tmp_path: Path, n: int = 0) -> Item:
    return Item(dir=str(tmp_path), n=n)


def test_metadata_and_tenant_are_stored_shown_and_merged_by_the_job(db: str, tmp_path: Path):
    sup = Supervisor([tag_metadata], workers=1, store=db)
    handle = sup.submit(tag_metadata, item(tmp_path, 7), metadata={"source": "upload", "size": [1, 2]}, tenant="acme")
    record = sup.run(handle.id)
    assert record.metadata == {"source": "upload", "size": [1, 2]} and record.tenant == "acme"
    assert handle.metadata() == {"source": "upload", "size": [1, 2]}
    assert sup.serve(until="drained") == "drained"
    assert handle.result() == 7
    assert handle.metadata() == {"source": "upload", "size": [1, 2], "seen": 7}  # ctx.metadata merged in
    assert sup.run(handle.id).tenant == "acme"
    sup.close()


def test_runs_filter_by_tenant_in_the_supervisor_and_a_client(db: str, tmp_path: Path):
    sup = Supervisor([tag_metadata], workers=1, store=db)
    acme = sup.submit_many(tag_metadata, [item(tmp_path, n) for n in range(3)], tenant="acme")
    globex = sup.submit(tag_metadata, item(tmp_path, 9), tenant="globex")
    nobody = sup.submit(tag_metadata, item(tmp_path, 10))
    assert [r.id for r in sup.runs(tenant="acme")] == sorted((h.id for h in acme), reverse=True)
    assert [r.id for r in sup.runs(tenant="globex")] == [globex.id]
    assert len(sup.runs()) == 5 and sup.run(nobody.id).tenant is None
    with Client(db, jobs=[tag_metadata]) as client:
        mine = client.submit(tag_metadata, item(tmp_path, 11), tenant="globex", metadata={"by": "client"})
        assert [r.id for r in client.runs(tenant="globex")] == [mine.id, globex.id]
        assert client.run(mine.id).metadata == {"by": "client"}
        assert client.runs(tenant="globex", status="queued", job="tag_metadata", limit=1)[0].id == mine.id
        by_name = client.submit("some_job_known_elsewhere", {"x": 1}, tenant="initech", metadata={"k": True})
        assert (client.run(by_name.id).tenant, client.run(by_name.id).metadata) == ("initech", {"k": True})
    sup.close()


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"metadata": ["not", "a", "dict"]}, TypeError, "metadata must be a dict"),
    ({"metadata": "{}"}, TypeError, "metadata must be a dict"),
    ({"metadata": {"when": object()}}, TypeError, "metadata is not JSON-serializable"),
    ({"metadata": {"x": float("nan")}}, TypeError, "metadata is not JSON-serializable"),
    ({"metadata": {1: "int key"}}, TypeError, "metadata keys must be str"),
    ({"tenant": ""}, ValueError, "invalid tenant"),
    ({"tenant": "   "}, ValueError, "invalid tenant"),
    ({"tenant": 42}, ValueError, "invalid tenant"),
])
def test_bad_metadata_or_tenant_is_refused_with_nothing_stored(db: str, tmp_path: Path, kwargs, error, match):
    sup = Supervisor([tag_metadata], workers=1, store=db)
    with pytest.raises(error, match=match):
        sup.submit(tag_metadata, item(tmp_path), **kwargs)
    with pytest.raises(error, match=match):
        sup.submit_many(tag_metadata, [item(tmp_path), item(tmp_path)], **kwargs)
    with Client(db, jobs=[tag_metadata]) as client:
        with pytest.raises(error, match=match):
            client.submit(tag_metadata, item(tmp_path), **kwargs)
        with pytest.raises(error, match=match):
            client.submit("by_name", {}, **kwargs)
    assert sup.runs() == []
    sup.close()


class Tenanted(BaseModel):
    tenant: str = ""


@job
def tenanted(t: Tenanted) -> str:
    return t.tenant


def test_an_input_field_named_tenant_is_not_taken_for_the_option():
    sup = Supervisor([tenanted], workers=1, store=":memory:")
    with pytest.raises(TypeError, match="'tenant' is an option of submit"):
        sup.submit(tenanted, tenant="acme")
    handle = sup.submit(tenanted, {"tenant": "field"}, tenant="option")
    assert sup.run(handle.id).tenant == "option"
    sup.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_stores_keep_tenant_metadata_and_parent_id(kind: str, tmp_path: Path):
    store = SQLiteStore(tmp_path / "s.db") if kind == "sqlite" else MemoryStore()
    ((parent, _),) = store.insert([NewRun("j", "{}")], 1.0)
    ((child, _), (other, _)) = store.insert([
        NewRun("j", "{}", parent_id=parent, tenant="acme", metadata='{"a":1}'),
        NewRun("j", "{}", tenant="globex"),
    ], 2.0)
    record = store.get(child)
    assert record is not None
    assert (record.parent_id, record.tenant, record.metadata) == (parent, "acme", {"a": 1})
    assert [r.id for r in store.runs(tenant="acme")] == [child]
    assert [r.id for r in store.runs(tenant="globex", job="j")] == [other]
    assert store.runs(tenant="nobody") == []
    loaded = {p.id: p.tenant for p in store.load_ready()}
    assert loaded == {parent: None, child: "acme", other: "globex"}
    store.close()
