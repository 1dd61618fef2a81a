"""The review page: a small Flask app over :class:`.store.ReviewStore`.

Why Flask: it is small, mature and well kept (Pallets), needs no build step or JavaScript
framework, and its Jinja templates escape every value by default for ``.html`` templates, which is
the property this page depends on most: every title, brand, attribute, rationale and note shown
here was typed by a seller, a model or a reviewer, and is rendered as text, never as markup. No
template marks data ``|safe`` and no view builds HTML by hand.

Defences, each also tested:

* **Escaping**: Jinja autoescaping (above), and a Content-Security-Policy that allows scripts
  only from this server's ``/static`` (no inline script, no inline event handler), so even a
  slip in a template would not run an injected ``onerror=``.
* **CSRF**: every session gets a random token; every POST must carry it (form field ``csrf``)
  or is refused with 400 before any view runs, so it writes nothing. The session cookie is
  ``SameSite=Strict`` and HttpOnly.
* **Loopback**: ``epm-spark review serve`` binds 127.0.0.1 unless ``--host`` says otherwise.
* **Leases**: a pair shown to one reviewer is leased to them (:mod:`.leases`); a verdict on a
  pair leased to someone else is refused (409).
"""

from __future__ import annotations

import errno
import hmac
import math
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
from flask import Flask, flash, redirect, render_template, request, session, url_for

from epm_spark.config import Settings
from epm_spark.errors import ConcurrentWriteError, EpmError, InputError, TableNotFoundError
from epm_spark.io import delta
from epm_spark.models.matcher.decision import ATTRIBUTES, MATCH, NO_MATCH
from epm_spark.pipeline.matcher.review_app import queue as q
from epm_spark.pipeline.matcher.review_app.leases import LeaseBook, LeaseConflict
from epm_spark.pipeline.matcher.review_app.store import (AlreadyDecided, PairRef, ReviewStore, VerdictRefused,
                                                 check_reviewer)

__all__ = ["create_app", "make_server", "serve", "compare_listings"]

MAX_NOTE = 600
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
_OPEN_ENDPOINTS = {"login", "login_post", "static"}


def create_app(settings: Settings, *, clock: Callable[[], float] = time.monotonic,
               secret_key: bytes | None = None) -> Flask:
    """The app for ``settings.warehouse``; raises one clear :class:`EpmError` when it has nothing to review."""
    store = ReviewStore(settings)
    store.check()
    leases = LeaseBook(settings.review.lease_seconds, clock)
    app = Flask(__name__)
    app.config.update(
        # A fresh key per start: sessions (names, tokens) end with the server, which is all a local tool needs.
        SECRET_KEY=secret_key or secrets.token_bytes(32),
        SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True, MAX_CONTENT_LENGTH=64 * 1024,
        TEMPLATES_AUTO_RELOAD=False)
    app.extensions["epm_review"] = {"store": store, "leases": leases}
    app.jinja_env.filters["pct"] = _pct
    app.jinja_env.filters["money"] = _money
    app.jinja_env.filters["prob"] = _prob

    @app.before_request
    def guard():
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        if request.method == "POST":
            sent = request.form.get("csrf", "")
            if not hmac.compare_digest(sent.encode(), session["csrf"].encode()):
                return _message("This form came without its security token (or from an older session), so "
                                "nothing was recorded. Reload the page and send it again.", 400)
        if request.endpoint not in _OPEN_ENDPOINTS and "reviewer" not in session:
            return redirect(url_for("login", next=request.path))
        return None

    @app.after_request
    def headers(response):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(EpmError)
    def epm_error(exc: EpmError):
        status = 503 if isinstance(exc, ConcurrentWriteError) else 400 if isinstance(exc, VerdictRefused) else 500
        return _message(str(exc), status)

    @app.get("/login")
    def login():
        return render_template("login.html", next=_local(request.args.get("next")))

    @app.post("/login")
    def login_post():
        try:
            name = check_reviewer(request.form.get("reviewer", ""))
        except VerdictRefused as exc:
            return render_template("login.html", error=str(exc), next=_local(request.form.get("next"))), 400
        session.clear()
        # A new token with the new identity: a token seen before logging in is worth nothing after.
        session.update(reviewer=name, csrf=secrets.token_urlsafe(32))
        return redirect(_local(request.form.get("next")) or url_for("pairs"), 303)

    @app.post("/logout")
    def logout():
        session.clear()
        return redirect(url_for("login"), 303)

    @app.get("/")
    def index():
        return redirect(url_for("pairs"))

    @app.get("/pairs")
    def pairs():
        return _pairs_page(store, leases, session["reviewer"])

    @app.post("/pairs/verdict")
    def verdict():
        reviewer = session["reviewer"]
        ref = PairRef.of(request.form)
        choice = request.form.get("verdict", "")
        if choice == "skip":
            leases.skip(reviewer, ref.key)
            flash(f"Skipped {ref.left_id} vs {ref.right_id}; it comes back after the others.", "info")
            return redirect(url_for("pairs"), 303)
        if choice not in (MATCH, NO_MATCH):
            return _message(f"verdict is match, no_match or skip, not {choice[:20]!r}; nothing was recorded", 400)
        note = request.form.get("note", "")[:MAX_NOTE]
        row = store.rows_by_key().get(ref.key)
        if row is not None and row["review_status"] in ("accepted", "rejected", "corrected"):
            return _message(_decided_line(ref, row), 409, link=("pairs", "Next pair"))
        if ref.key not in _queue_keys(store.queue()):
            return _message(f"{ref.left_id} vs {ref.right_id} is not in the review queue; nothing was recorded",
                            404, link=("pairs", "Next pair"))
        try:
            leases.claim(reviewer, ref.key)
        except LeaseConflict as exc:
            return _message(str(exc), 409, link=("pairs", "Next pair"))
        try:
            store.record(reviewer, [ref], choice, note)
        except AlreadyDecided as exc:
            leases.finish(ref.key)
            return _message(str(exc), 409, link=("pairs", "Next pair"))
        except VerdictRefused as exc:
            return _pairs_page(store, leases, reviewer, error=str(exc), note=note, status=400)
        leases.finish(ref.key)
        flash(f"Recorded {choice.replace('_', ' ')} for {ref.left_id} vs {ref.right_id} as {reviewer}.", "ok")
        return redirect(url_for("pairs"), 303)

    @app.get("/clusters")
    def clusters():
        return _table_view("clusters.html", "groups", lambda: _cluster_groups(store, settings.review.clusters))

    @app.post("/clusters/split")
    def split():
        reviewer = session["reviewer"]
        source, run_id = request.form.get("source", ""), request.form.get("run_id", "")
        cluster_id, product_id = request.form.get("cluster_id", ""), request.form.get("product_id", "")
        cluster = next((c for c in _clusters_of(store, settings.review.clusters, source, run_id)
                        if c["cluster_id"] == cluster_id), None)
        if cluster is None or product_id not in cluster["members"]:
            return _message(f"{product_id} is not a member of cluster {cluster_id} in the last dedup run of "
                            f"{source}; nothing was recorded", 404, link=("clusters", "Clusters"))
        edges = q.member_edges(cluster, product_id)
        if not edges:
            return _message(f"no accepted match of run {run_id} joins {product_id} to cluster {cluster_id}; "
                            "nothing to split", 400, link=("clusters", "Clusters"))
        refs = [store.ref_for(e["left_source"], str(e["left_id"]), e["right_source"], str(e["right_id"]))
                for e in edges]
        return _record_many(store, leases, reviewer, refs, request.form.get("note", "")[:MAX_NOTE],
                            done=f"Split {product_id} off cluster {cluster_id}: no match on {len(refs)} "
                                 f"pair{'s' * (len(refs) != 1)}, recorded as {reviewer}; the next night's "
                                 "match and dedup follow it.",
                            back="clusters", anchor=cluster_id)

    @app.get("/prices")
    def prices():
        return _table_view("prices.html", "gaps", lambda: _price_rows(store, settings.review.price_gaps))

    @app.post("/prices/reject")
    def reject():
        reviewer = session["reviewer"]
        f = request.form
        sides = [f.get("our_source", ""), f.get("our_id", ""), f.get("competitor_source", ""),
                 f.get("competitor_id", "")]
        listed = {q.pair_key(g["our_source"], g["our_id"], g["competitor_source"], g["competitor_id"])
                  for g in _price_rows(store, settings.review.price_gaps)}
        if q.pair_key(*sides) not in listed:
            return _message(f"{sides[1]} vs {sides[3]} is not among the listed price gaps; nothing was recorded",
                            404, link=("prices", "Price gaps"))
        ref = store.ref_for(*sides)
        return _record_many(store, leases, reviewer, [ref], f.get("note", "")[:MAX_NOTE],
                            done=f"Rejected the match {sides[1]} vs {sides[3]} as {reviewer}; the next night's "
                                 "match and price-match follow it.",
                            back="prices", anchor=f"gap-{sides[1]}-{sides[3]}")

    return app


# ---------------------------------------------------------------------------- views' helpers


def _message(text: str, status: int, link: tuple[str, str] | None = None):
    return render_template("message.html", text=text, link=link), status


def _table_view(template: str, name: str, load: Callable[[], list[dict[str, Any]]]):
    """A page listing rows of one table; a missing table is said on the page, naming the job that writes it."""
    try:
        rows = load()
    except TableNotFoundError as exc:
        return render_template(template, missing=str(exc), **{name: []})
    return render_template(template, missing=None, **{name: rows})


def _local(target: str | None) -> str | None:
    """Only same-site paths are followed after logging in."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def _queue_keys(queue: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in queue[list(PairRef.__dataclass_fields__)].itertuples(index=False)]


def _decided_line(ref: PairRef, row: dict[str, Any]) -> str:
    who = str(row["run_id"]).removeprefix("review:")
    return (f"{ref.left_id} vs {ref.right_id} was already decided ({row['review_status']}) by {who}; "
            "nothing was changed")


def _pairs_page(store: ReviewStore, leases: LeaseBook, reviewer: str, *, error: str | None = None,
                note: str = "", status: int = 200):
    queue = store.queue()
    keys = _queue_keys(queue)
    key = leases.assign(reviewer, keys)
    context: dict[str, Any] = {"left_count": len(keys), "busy": leases.held_by_others(reviewer, keys),
                               "error": error, "note": note, "item": None, "reasons": q.REASONS}
    if key is not None:
        row = queue.iloc[keys.index(key)].to_dict()
        ref = PairRef.of(row)
        result = store.decision(ref)
        listings = store.listings([(ref.left_source, ref.left_id), (ref.right_source, ref.right_id)])
        left = listings.get((ref.left_source, ref.left_id), {"title": "(listing no longer in products)"})
        right = listings.get((ref.right_source, ref.right_id), {"title": "(listing no longer in products)"})
        d = result.decision
        context["item"] = {
            "ref": ref, "row": row, "left": left, "right": right, "rows": compare_listings(left, right),
            "decision": d, "failure": result.failure, "teacher": result.teacher,
            "evidence": [(a, d.verdict(a)) for a in ATTRIBUTES] if d else [],
        }
    return render_template("pairs.html", **context), status


def _clusters_of(store: ReviewStore, per_kind: int, source: str | None = None,
                 run_id: str | None = None) -> list[dict[str, Any]]:
    rows = delta.read_pandas(store.warehouse, "clusters", columns=["source", "run_id", "clustered_at"])
    last = q.latest_runs(rows, ["source"], "clustered_at")[["source", "run_id"]].drop_duplicates()
    out = []
    for r in last.sort_values("source").to_dict("records"):
        if source is not None and (r["source"], r["run_id"]) != (source, run_id):
            continue
        members = delta.read_pandas(store.warehouse, "clusters", filters=[("run_id", "=", r["run_id"]),
                                                                          ("source", "=", r["source"])])
        matches = pd.DataFrame(columns=[*q.SIDES, "label", "probability", "decided_by", "rationale"])
        if delta.table_exists(store.warehouse, "matches"):
            matches = delta.read_pandas(store.warehouse, "matches", filters=[
                ("run_id", "=", r["run_id"]), ("left_source", "=", r["source"]), ("right_source", "=", r["source"])])
        out.extend(q.cluster_overview(members, matches, per_kind=per_kind))
    return out


def _cluster_groups(store: ReviewStore, per_kind: int) -> list[dict[str, Any]]:
    clusters = _clusters_of(store, per_kind)
    listings = store.listings([(c["source"], m) for c in clusters for m in c["members"]])
    verdicts = store.human_verdicts()
    for c in clusters:
        c["listings"] = [listings.get((c["source"], m), {"product_id": m, "title": "(not in products)"})
                         for m in c["members"]]
        for e in c["edges"]:
            e["verdict"] = verdicts.get(q.pair_key(*(e[s] for s in q.SIDES)))
        c["split"] = {}
        for m in c["members"]:
            mine = q.member_edges(c, m)
            said = [e["verdict"] for e in mine]
            if mine and all(v is not None and v["label"] == NO_MATCH for v in said):
                c["split"][m] = said[-1]["by"]
    return clusters


def _last_price_runs(store: ReviewStore) -> list[tuple[str, str]]:
    """(our_source, run_id) of the newest price-match run per our catalog: price_comparisons has no
    timestamp, so a run is as new as the matches it compared (their ``scored_at``)."""
    runs = delta.read_pandas(store.warehouse, "price_comparisons", columns=["our_source", "run_id"]).drop_duplicates()
    if runs.empty:
        return []
    scored = pd.DataFrame(columns=["run_id", "scored_at"])
    if delta.table_exists(store.warehouse, "matches"):
        scored = (delta.read_pandas(store.warehouse, "matches", columns=["run_id", "scored_at"])
                  .groupby("run_id", as_index=False)["scored_at"].max())
    runs = runs.merge(scored, on="run_id", how="left")
    # Run ids default to UTC dates, so among runs without scored matches the greatest id is the newest.
    runs = runs.sort_values(["our_source", "scored_at", "run_id"], na_position="first")
    return [(r["our_source"], r["run_id"]) for r in runs.groupby("our_source").tail(1).to_dict("records")]


def _price_rows(store: ReviewStore, limit: int) -> list[dict[str, Any]]:
    frames = [delta.read_pandas(store.warehouse, "price_comparisons",
                                filters=[("run_id", "=", run_id), ("our_source", "=", source)])
              for source, run_id in _last_price_runs(store)]
    if not frames:
        return []
    gaps = q.price_gaps(pd.concat(frames, ignore_index=True), limit=limit).to_dict("records")
    listings = store.listings([(g["our_source"], g["our_id"]) for g in gaps]
                              + [(g["competitor_source"], g["competitor_id"]) for g in gaps])
    verdicts = store.human_verdicts()
    for g in gaps:
        g["ours"] = listings.get((g["our_source"], g["our_id"]), {"title": g["our_title"]})
        g["theirs"] = listings.get((g["competitor_source"], g["competitor_id"]), {"title": g["competitor_title"]})
        g["verdict"] = verdicts.get(q.pair_key(g["our_source"], g["our_id"], g["competitor_source"],
                                               g["competitor_id"]))
        g["rows"] = compare_listings(g["ours"], g["theirs"])
    return gaps


def _record_many(store: ReviewStore, leases: LeaseBook, reviewer: str, refs: list[PairRef], note: str, *,
                 done: str, back: str, anchor: str):
    verdicts = store.human_verdicts()
    todo = []
    for ref in refs:
        said = verdicts.get(ref.pair)
        if said is None:
            todo.append(ref)
        elif said["label"] != NO_MATCH:
            return _message(f"{said['by']} decided {ref.left_id} vs {ref.right_id} as {said['status']} "
                            f"({said['label'] or 'no label'}); a person's verdict is not overwritten here, "
                            "nothing was recorded", 409, link=(back, "Back"))
    if not todo:
        flash("Already recorded: a person said no match on " + ", ".join(f"{r.left_id} vs {r.right_id}"
                                                                          for r in refs) + ".", "info")
        return redirect(url_for(back, _anchor=anchor), 303)
    claimed = []
    try:
        for ref in todo:
            leases.claim(reviewer, ref.key)
            claimed.append(ref.key)
        store.record(reviewer, todo, NO_MATCH, note)
        for key in claimed:
            leases.finish(key)
        claimed.clear()
    except LeaseConflict as exc:
        return _message(str(exc), 409, link=(back, "Back"))
    except VerdictRefused as exc:
        return _message(str(exc), 409 if isinstance(exc, AlreadyDecided) else 400, link=(back, "Back"))
    finally:
        for key in claimed:
            leases.release(key)
    flash(done, "ok")
    return redirect(url_for(back, _anchor=anchor), 303)


_COMPARED = ("brand", "category", "price")


def compare_listings(left: dict[str, Any], right: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the side-by-side table: brand, category, price, then every attribute of either listing.

    ``state``: ``same``, ``different`` (both given, not equal ignoring case and spacing) or
    ``one-sided``; the page highlights the last two.
    """
    def value(item: dict[str, Any], name: str) -> str | None:
        if name == "price":
            return _money(item.get("price"), item.get("currency"))
        v = item.get(name)
        return None if _missing(v) or str(v).strip() == "" else str(v)

    def attributes(item: dict[str, Any]) -> dict[str, str]:
        a = item.get("attributes")
        return {str(k): str(v) for k, v in (a.items() if isinstance(a, dict) else (a or [])) if not _missing(v)}

    la, ra = attributes(left), attributes(right)
    rows = [(name, value(left, name), value(right, name)) for name in _COMPARED]
    rows += [(name, la.get(name), ra.get(name)) for name in sorted(set(la) | set(ra))]
    out = []
    for name, lv, rv in rows:
        if lv is None and rv is None:
            continue
        if lv is None or rv is None:
            state = "one-sided"
        else:
            state = "same" if " ".join(lv.split()).casefold() == " ".join(rv.split()).casefold() else "different"
        out.append({"name": name, "left": lv, "right": rv, "state": state})
    return out


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _money(amount: Any, currency: Any = None) -> str | None:
    if _missing(amount):
        return None
    return f"{float(amount):,.2f}" + (f" {currency}" if not _missing(currency) and currency else "")


def _pct(v: Any) -> str:
    return "" if _missing(v) else f"{float(v):+.1f}%"


def _prob(v: Any) -> str:
    return "n/a" if _missing(v) else f"{float(v):.3f}"


# ---------------------------------------------------------------------------- serving


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, or one line saying why not (werkzeug would print two and exit)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise InputError(f"--host {host}: not a host name or address this machine can resolve") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} on {host} is in use (another review page?); pass --port N") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise InputError(f"--host {host} is not an address of this machine") from None
        if exc.errno == errno.EACCES:
            raise InputError(f"port {port} needs privileges to bind; pass --port above 1023") from None
        raise
    return sock


def make_server(settings: Settings, *, host: str | None = None, port: int | None = None, **app_kwargs: Any):
    """A threaded WSGI server for the page, bound and ready (``port=0``: any free port)."""
    from werkzeug.serving import make_server as werkzeug_server

    host = host or settings.review.host
    port = settings.review.port if port is None else port
    app = create_app(settings, **app_kwargs)
    sock = _bind(host, port)
    server = werkzeug_server(host, sock.getsockname()[1], app, threaded=True, fd=sock.fileno())
    # werkzeug duplicated the descriptor; ours is no longer needed.
    sock.close()
    return server


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Serve the page until Ctrl-C."""
    server = make_server(settings, host=host, port=port)
    bound = server.server_address[0]
    url = f"http://{'[' + bound + ']' if ':' in bound else bound}:{server.port}/"
    print(f"review page for warehouse {settings.warehouse}: {url}  (Ctrl-C stops it)", flush=True)
    if bound not in ("127.0.0.1", "::1", "localhost"):
        print(f"warning: bound to {bound}, not loopback: anyone who reaches this machine on port "
              f"{server.port} can record verdicts under any name", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
