"""`epm-spark review serve` without a browser: the queue's order, leases, CSRF, verdict semantics equal to
`review import`, two reviewers at once, the cluster and price views' verdicts, SFT picking a verdict
up, and one-line errors. The browser tests are in test_review_browser.py."""

from __future__ import annotations

import html
import re
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from review_client import KEY, HttpReviewer, TestClientReviewer, left_count, shown_pair
from review_data import write_review_night

from epm_spark.cli import main
from epm_spark.config import load_settings
from epm_spark.errors import ConcurrentWriteError
from epm_spark.io import delta
from epm_spark.pipeline.catalog.match import reviewed_pairs
from epm_spark.pipeline.matcher.review_app import create_app, make_server
from epm_spark.pipeline.matcher.review_app.leases import LeaseBook, LeaseConflict
from epm_spark.pipeline.matcher.review_app.queue import decision_threshold
from epm_spark.pipeline.matcher.review_app.store import AlreadyDecided, PairRef, ReviewStore

QUEUE = [("l3", "r3", "disagrees"), ("l5", "r5", "disagrees"), ("l1", "l11", "uncertain"),
         ("l2", "l10", "uncertain"), ("l8", "r9", "uncertain"), ("l0", "r1", "uncertain"),
         ("l2", "r3", "uncertain"), ("l4", "r5", "uncertain"), ("l6", "r7", "uncertain"), ("l9", "r9", "uncertain")]


class Clock:
    """A clock the test moves, for lease expiry."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def written_night(tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("review-night") / "warehouse"
    write_review_night(str(warehouse))
    return warehouse


@pytest.fixture
def night(written_night, tmp_path):
    """A fresh copy of the night for each test (Delta logs hold relative paths: a copy is a warehouse)."""
    warehouse = tmp_path / "warehouse"
    shutil.copytree(written_night, warehouse)
    return load_settings(warehouse=str(warehouse))


def rationale(settings, left_id: str, right_id: str) -> dict:
    rows = delta.read_pandas(settings.warehouse, "rationales")
    found = rows[(rows.left_id == left_id) & (rows.right_id == right_id)]
    assert len(found) == 1, f"{len(found)} rationale rows for {left_id}/{right_id}"
    return found.iloc[0].to_dict()


def version(settings) -> int:
    return delta.table_version(settings.warehouse, "rationales")


def teacher_label(page: str) -> str:
    return re.search(r'id="teacher-label">(\w+)<', page).group(1)


# ----------------------------------------------------------------------------- what the queue serves


def test_queue_serves_disagreements_then_the_pairs_nearest_the_threshold(night):
    queue = ReviewStore(night).queue()
    assert list(zip(queue.left_id, queue.right_id, queue.reason)) == QUEUE
    # Each run's threshold is read off its own rows: (0.45 + 0.52) / 2 and (0.48 + 0.55) / 2.
    thresholds = dict(zip(zip(queue.left_id, queue.right_id), queue.threshold))
    assert thresholds[("l3", "r3")] == pytest.approx(0.485) and thresholds[("l1", "l11")] == pytest.approx(0.515)
    # A nightly pair a benchmark labels is filed under it (l9/r9: valid, kept out of SFT); others under `review`.
    filed = dict(zip(zip(queue.left_id, queue.right_id), zip(queue.benchmark, queue.split, queue.gold)))
    assert filed[("l9", "r9")] == ("hard", "valid", "match") and filed[("l0", "r1")] == ("review", "train", None)
    # l1/r1 (0.52, 0.035 from the threshold) is not asked: the teacher agreed with its gold label.
    assert ("l1", "r1") not in thresholds


def test_decision_threshold_is_read_off_a_runs_labels():
    p = pd.Series(np.linspace(0.0, 1.0, 101))
    assert decision_threshold(p, p >= 0.3) == pytest.approx(0.295)
    flipped = (p >= 0.3).copy()
    flipped.iloc[80] = False  # an explained decision overruled the probability once
    assert decision_threshold(p, flipped) == pytest.approx(0.295)
    assert decision_threshold(pd.Series([np.nan]), pd.Series([False])) == 0.5


def test_leases_keep_reviewers_apart_and_expire():
    clock = Clock()
    book = LeaseBook(300, clock)
    keys = ["a", "b", "c"]
    assert book.assign("alice", keys) == "a"
    assert book.assign("bob", keys) == "b"
    assert book.assign("alice", keys) == "a"  # a reload shows the same pair
    with pytest.raises(LeaseConflict, match="alice"):
        book.claim("bob", "a")
    book.skip("alice", "a")
    assert book.assign("alice", keys) == "c"  # skipped pairs come last
    assert book.held_by_others("bob", keys) == 1
    book.finish("b")  # bob decided b: a queue read before his commit must not hand it out again
    assert book.assign("carol", keys) == "a" and book.assign("dave", keys) is None
    clock.now += 301
    book.claim("bob", "c")  # every lease has expired
    assert book.assign("erin", keys) == "a"


# ----------------------------------------------------------------------------- verdicts


def test_a_page_verdict_writes_the_row_review_import_writes(night, tmp_path):
    """Accepting the teacher and overruling it with a note: the same rows as a review file's accept/correct."""
    app = create_app(night)
    alice = TestClientReviewer(app, "alice")
    _, page = alice.get("/pairs")
    first = shown_pair(page)
    assert (first["left_id"], first["right_id"]) == ("l3", "r3") and teacher_label(page) == "no_match"
    assert alice.decide(first, "no_match")[0] == 303
    _, page = alice.get("/pairs")
    second = shown_pair(page)
    assert (second["left_id"], second["right_id"]) == ("l5", "r5")
    note = "The same UAP-AC-LR access point; the 3-pack is sold per unit here."
    assert alice.decide(second, "match", note)[0] == 303

    twin = load_settings(warehouse=str(tmp_path / "twin"))
    write_review_night(twin.warehouse)
    review = tmp_path / "review.csv"
    pd.DataFrame([{**first, "verdict": "accept"},
                  {**second, "verdict": "correct", "corrected_label": "match", "corrected_rationale": note,
                   "reviewer_note": note}]).to_csv(review, index=False)
    assert main(["--warehouse", twin.warehouse, "review", "import", "--file", str(review), "--run-id", "r1"]) == 0
    for pair, status in ((first, "accepted"), (second, "corrected")):
        page_row = rationale(night, pair["left_id"], pair["right_id"])
        file_row = rationale(twin, pair["left_id"], pair["right_id"])
        assert page_row["review_status"] == status and page_row["run_id"] == "review:alice"
        same = [c for c in page_row if c not in ("run_id", "updated_at")]
        assert {c: page_row[c] for c in same} == {c: file_row[c] for c in same}
    assert rationale(night, "l5", "r5")["reviewer_note"] == note
    assert '"rationale": "The same UAP-AC-LR' in rationale(night, "l5", "r5")["verified_decision"]


def test_overruling_the_teacher_without_a_note_is_refused(night):
    app = create_app(night)
    alice = TestClientReviewer(app, "alice")
    pair = shown_pair(alice.get("/pairs")[1])
    before = version(night)
    status, page = alice.decide(pair, "match")
    assert status == 400 and "write in the note why" in page
    assert version(night) == before
    assert rationale(night, "l3", "r3")["review_status"] == "pending"
    assert shown_pair(page) == pair  # the same pair again, to add the note


def test_a_verdict_on_a_new_nightly_pair_creates_its_teacher_row(night):
    app = create_app(night)
    alice = TestClientReviewer(app, "alice")
    before = len(delta.read_pandas(night.warehouse, "rationales"))
    for _ in range(2):
        alice.decide(shown_pair(alice.get("/pairs")[1]), "skip")
    _, page = alice.get("/pairs")
    pair = shown_pair(page)
    assert (pair["left_id"], pair["right_id"], pair["benchmark"]) == ("l1", "l11", "review")
    assert alice.decide(pair, teacher_label(page))[0] == 303
    row = rationale(night, "l1", "l11")
    assert row["review_status"] == "accepted" and row["teacher"] == "agentic" and row["split"] == "train"
    assert row["verified_decision"] == row["teacher_decision"]
    assert len(delta.read_pandas(night.warehouse, "rationales")) == before + 1
    # Deciding it again is refused, however the post comes.
    status, page = alice.decide(pair, "no_match", "second thoughts")
    assert status == 409 and "already decided" in page
    assert rationale(night, "l1", "l11")["review_status"] == "accepted"


def test_posts_without_the_session_token_are_refused_and_write_nothing(night):
    app = create_app(night)
    alice, bob = TestClientReviewer(app, "alice"), TestClientReviewer(app, "bob")
    pair = shown_pair(alice.get("/pairs")[1])
    before = version(night)
    attempts = [
        ("/pairs/verdict", {**pair, "verdict": "no_match"}),
        ("/clusters/split", {"source": "ours", "run_id": "n1", "cluster_id": "C1", "product_id": "l11", "note": "x"}),
        ("/prices/reject", {"our_source": "ours", "our_id": "l7", "competitor_source": "competitor_a",
                            "competitor_id": "r7", "note": "x"}),
        ("/login", {"reviewer": "mallory"}),
        ("/logout", {}),
    ]
    for path, data in attempts:
        status, page = alice.post(path, data, with_token=False)
        assert status == 400 and "security token" in page, path
        # Another session's token is no better than none.
        status, _ = alice.post(path, {**data, "csrf": bob.csrf}, with_token=False)
        assert status == 400, path
    assert version(night) == before
    assert rationale(night, "l3", "r3")["review_status"] == "pending"
    assert 'id="reviewer">alice<' in alice.get("/pairs")[1]  # neither renamed nor signed out


def test_a_verdict_on_a_pair_leased_to_another_reviewer_is_refused(night):
    clock = Clock()
    app = create_app(night, clock=clock)
    alice, bob = TestClientReviewer(app, "alice"), TestClientReviewer(app, "bob")
    mine = shown_pair(alice.get("/pairs")[1])
    theirs = shown_pair(bob.get("/pairs")[1])
    assert mine != theirs
    before = version(night)
    status, page = bob.decide(mine, "no_match")
    assert status == 409 and "being reviewed by alice" in page
    assert version(night) == before
    clock.now += night.review.lease_seconds + 1  # alice walked away
    assert bob.decide(mine, "no_match")[0] == 303
    assert rationale(night, mine["left_id"], mine["right_id"])["run_id"] == "review:bob"


def test_two_reviewers_at_once_lose_no_verdict_and_decide_no_pair_twice(night):
    server = make_server(night, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.port}"
    shown: dict[str, list[tuple]] = {"alice": [], "bob": []}
    recorded: dict[str, list[tuple]] = {"alice": [], "bob": []}
    errors: list[str] = []
    start = threading.Barrier(2)

    def review(name: str) -> None:
        try:
            me = HttpReviewer(base, name)
            start.wait(timeout=30)
            for _ in range(30):
                status, page = me.get("/pairs")
                pair = shown_pair(page)
                if pair is None:
                    return
                key = tuple(pair[k] for k in KEY)
                shown[name].append(key)
                status, page = me.decide(pair, teacher_label(page))
                if status != 303:
                    found = re.search(r'id="(?:message|error)">([^<]*)<', page)
                    errors.append(f"{name}: {status} {found.group(1) if found else page[:300]}")
                    return
                recorded[name].append(key)
        except Exception as exc:  # noqa: BLE001 - reported below, with the reviewer
            errors.append(f"{name}: {exc!r}")

    try:
        before = delta.read_pandas(night.warehouse, "rationales")
        workers = [threading.Thread(target=review, args=(name,)) for name in shown]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=240)
        assert not any(w.is_alive() for w in workers), "a reviewer hung"
    finally:
        server.shutdown()
    assert not errors, errors
    assert not set(shown["alice"]) & set(shown["bob"]), "both reviewers were shown the same pair"
    assert recorded["alice"] and recorded["bob"], recorded
    decided = recorded["alice"] + recorded["bob"]
    assert len(decided) == len(set(decided)) == len(QUEUE)
    after = delta.read_pandas(night.warehouse, "rationales")
    assert not after.duplicated(KEY).any()
    assert len(after) == len(before) + sum(1 for k in decided if k[0] == "review" or k[1] == "valid")
    by_key = {tuple(r[k] for k in KEY): r for r in after.to_dict("records")}
    for name, keys in recorded.items():
        for key in keys:
            assert by_key[key]["review_status"] == "accepted" and by_key[key]["run_id"] == f"review:{name}"


def test_concurrent_commits_are_applied_again_never_lost_or_doubled(night, monkeypatch):
    """Two servers on one warehouse (two stores: no shared leases): both read the same version, both commit;
    the one that loses the race applies its verdict again on the new version."""
    a, b = ReviewStore(night), ReviewStore(night)
    queue = a.queue()
    one, two = (PairRef.of(r) for r in queue[queue.benchmark == "review"].head(2).to_dict("records"))
    real_write = delta.write_pandas
    gate = threading.Barrier(2)
    writes: list[str] = []

    def write_together(*args, **kwargs):
        name = threading.current_thread().name
        if name not in writes:
            gate.wait(timeout=30)  # both read version v before either commits
        writes.append(name)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(delta, "write_pandas", write_together)
    outcome: dict[str, object] = {}

    def decide(name, store, ref, label, note):
        try:
            store.record(name, [ref], label, note)
            outcome[name] = "ok"
        except Exception as exc:  # noqa: BLE001
            outcome[name] = exc

    runs = [threading.Thread(target=decide, name=n, args=(n, s, ref, "no_match", "Different capacity."))
            for n, s, ref in (("alice", a, one), ("bob", b, two))]
    for t in runs:
        t.start()
    for t in runs:
        t.join(timeout=120)
    assert outcome == {"alice": "ok", "bob": "ok"}
    assert len(writes) == 3  # one commit lost the race and was applied again
    for ref, name in ((one, "alice"), (two, "bob")):
        row = rationale(night, ref.left_id, ref.right_id)
        assert row["run_id"] == f"review:{name}" and '"label": "no_match"' in row["verified_decision"]

    # The same pair from both servers at once: one verdict lands, the other is refused, none is doubled.
    monkeypatch.setattr(delta, "write_pandas", write_together)
    writes.clear()
    gate.reset()
    three = PairRef.of(queue[queue.benchmark == "review"].iloc[2].to_dict())
    outcome.clear()
    runs = [threading.Thread(target=decide, name=n, args=(n, s, three, label, "A person's view."))
            for n, s, label in (("carol", a, "match"), ("dave", b, "no_match"))]
    for t in runs:
        t.start()
    for t in runs:
        t.join(timeout=120)
    winners = [n for n, o in outcome.items() if o == "ok"]
    losers = [o for o in outcome.values() if o != "ok"]
    assert len(winners) == 1 and len(losers) == 1 and isinstance(losers[0], AlreadyDecided), outcome
    row = rationale(night, three.left_id, three.right_id)
    assert row["run_id"] == f"review:{winners[0]}"


def test_a_verdict_gives_up_cleanly_when_others_keep_committing(night, monkeypatch):
    store = ReviewStore(night)
    ref = PairRef.of(store.queue().iloc[0].to_dict())
    before = version(night)

    def always_late(*args, **kwargs):
        raise ConcurrentWriteError("table 'rationales': another job committed to the same rows")

    monkeypatch.setattr(delta, "write_pandas", always_late)
    monkeypatch.setattr("epm_spark.pipeline.matcher.review_app.store.time.sleep", lambda s: None)
    with pytest.raises(ConcurrentWriteError, match="was not recorded"):
        store.record("alice", [ref], "no_match", None)
    assert version(night) == before


# ----------------------------------------------------------------------------- clusters and price gaps


def test_splitting_a_cluster_member_records_no_match_on_the_matches_that_joined_it(night):
    app = create_app(night)
    alice = TestClientReviewer(app, "alice")
    _, page = alice.get("/clusters")
    assert page.index('id="C1"') < page.index('id="C2"')  # four listings before two
    status, _ = alice.post("/clusters/split", {"source": "ours", "run_id": "n1", "cluster_id": "C1",
                                                "product_id": "l11", "note": "The 2TB drive, not the 1TB one."})
    assert status == 303
    row = rationale(night, "l1", "l11")
    assert row["benchmark"] == "review" and row["run_id"] == "review:alice"
    assert '"label": "no_match"' in row["verified_decision"]
    _, page = alice.get("/clusters")
    assert "split off by alice" in page
    # What the next night's match reads: the pair is no_match whichever listing is on the left.
    reviewed = reviewed_pairs(night.warehouse, "ours", "ours")
    labels = {(r.left_id, r.right_id): r.review_label for r in reviewed.itertuples()}
    assert labels == {("l1", "l11"): "no_match", ("l11", "l1"): "no_match"}
    # Splitting it again records nothing new.
    before = version(night)
    status, _ = alice.post("/clusters/split", {"source": "ours", "run_id": "n1", "cluster_id": "C1",
                                                "product_id": "l11", "note": "again"})
    assert status == 303 and version(night) == before
    # A listing of another cluster is refused.
    status, page = alice.post("/clusters/split", {"source": "ours", "run_id": "n1", "cluster_id": "C1",
                                                   "product_id": "l4", "note": "x"})
    assert status == 404 and "not a member" in page


def test_rejecting_a_price_gap_records_no_match_on_the_pair(night):
    app = create_app(night)
    alice = TestClientReviewer(app, "alice")
    _, page = alice.get("/prices")
    gaps = re.findall(r'<article class="gap" id="gap-(\w+)-(\w+)"', page)
    assert gaps[:3] == [("l7", "r7"), ("l2", "r2"), ("l0", "r0")]  # the largest undercut first
    before = version(night)
    status, page = alice.post("/prices/reject", {"our_source": "ours", "our_id": "l0", "competitor_source":
                                                  "competitor_a", "competitor_id": "r3", "note": "x"})
    assert status == 404 and version(night) == before  # not a listed gap
    status, _ = alice.post("/prices/reject", {"our_source": "ours", "our_id": "l7", "competitor_source":
                                               "competitor_a", "competitor_id": "r7",
                                               "note": "Another memory kit: 2666 vs 3200 MHz."})
    assert status == 303
    row = rationale(night, "l7", "r7")
    assert row["review_status"] == "corrected" and row["benchmark"] == "hard"
    assert '"label": "no_match"' in row["verified_decision"]
    assert "no match by alice" in alice.get("/prices")[1]


# ----------------------------------------------------------------------------- escaping, SFT, errors


def test_hostile_titles_are_sent_as_text(tmp_path):
    settings = load_settings(warehouse=str(tmp_path / "warehouse"))
    write_review_night(settings.warehouse, titles={("ours", "l3"): "<script>window.__pwned=1</script>",
                                                    ("competitor_a", "r3"): '<img src=x onerror="window.__pwned=2">'})
    alice = TestClientReviewer(create_app(settings), "alice")
    response = alice.client.get("/pairs")
    page = response.get_data(as_text=True)
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page and "<script>window" not in page
    assert "&lt;img src=x onerror=" in page and "<img" not in page
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_sft_trains_on_the_page_verdicts(night, monkeypatch):
    """`train-matcher --stage sft` builds its training set from rationales: the page's verdicts are in it."""
    from epm_spark.models.matcher.student import sft
    from epm_spark.pipeline.matcher.train_matcher import train_matcher

    seen: list[pd.DataFrame] = []

    def capture(train, folder, **kwargs):
        seen.append(train)
        return "card"

    monkeypatch.setattr(sft, "train_sft", capture)
    night.matcher.models_dir = str(night.warehouse) + "-models"
    train_matcher(night, stage="sft")
    before = {(r.left_id, r.right_id) for r in seen[-1].itertuples()}
    assert ("l5", "r5") not in before and ("l0", "r1") not in before  # pending / not yet asked

    alice = TestClientReviewer(create_app(night), "alice")
    note = "One access point against a 3-pack: the same product, sold per unit."
    pair = shown_pair(alice.get("/pairs")[1])
    assert alice.decide(pair, "skip")[0] == 303  # l3/r3 waits
    _, page = alice.get("/pairs")
    assert alice.decide(shown_pair(page), "match", note)[0] == 303  # l5/r5, overruling the teacher
    for _ in range(3):
        alice.decide(shown_pair(alice.get("/pairs")[1]), "skip")
    _, page = alice.get("/pairs")
    pair = shown_pair(page)
    assert (pair["left_id"], pair["right_id"]) == ("l0", "r1")
    assert alice.decide(pair, teacher_label(page))[0] == 303

    train_matcher(night, stage="sft")
    rows = {(r.left_id, r.right_id): r for r in seen[-1].itertuples()}
    corrected, accepted = rows[("l5", "r5")], rows[("l0", "r1")]
    assert corrected.status == "corrected" and corrected.target_label == "match" and note in corrected.decision_json
    assert accepted.status == "accepted" and accepted.left_title  # both listings joined for the prompt
    assert len(rows) == len(before) + 2


def test_serve_errors_are_one_line(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    assert main(["--warehouse", missing, "review", "serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err and missing in err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--warehouse", str(empty), "review", "serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'products' does not exist" in err

    warehouse = str(tmp_path / "warehouse")
    write_review_night(warehouse, teach=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["--warehouse", warehouse, "review", "serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"port {port} on 127.0.0.1 is in use" in err


def test_the_page_needs_a_reviewer_name(night):
    client = create_app(night).test_client()
    response = client.get("/pairs")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    login = client.get("/login").get_data(as_text=True)
    from review_client import token

    response = client.post("/login", data={"csrf": token(login), "reviewer": "<b>x</b>"})
    assert response.status_code == 400
    assert left_count(TestClientReviewer(create_app(night), "alice").get("/pairs")[1]) == len(QUEUE)


def test_a_view_whose_table_is_missing_says_which_job_writes_it(night):
    shutil.rmtree(Path(night.warehouse) / "clusters")
    alice = TestClientReviewer(create_app(night), "alice")
    status, page = alice.get("/clusters")
    assert status == 200 and "table 'clusters' does not exist" in html.unescape(page) and "epm-spark dedup" in page
    status, page = alice.get("/prices")
    assert status == 200 and 'id="gap-l7-r7"' in page
