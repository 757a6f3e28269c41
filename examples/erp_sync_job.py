"""Seed 002's ERP_ARTICLE_SYNC as a monitored job, against a fake ERP on 127.0.0.1.

The fake enventa ERP serves articles page by page and answers some requests with 503, as
a busy ERP does; the sync retries them, skips articles without an EAN (counted as failed
items), and reports progress every 100 articles. With ``--down`` the ERP stops answering
half-way and the run fails after three attempts, classified ``ERP_CONNECTION_FAILED``.

Before the run, a preflight registers the ERP as a connected service (an HTTP health
check, reported ``connected``/``disconnected`` by the readiness payload and as
``appvitals.health.check.*`` metrics) and measures the connection with
``appvitals.test_connection``; the sync does not start when the ERP is not reachable.

    python examples/erp_sync_job.py              # telemetry in ./appvitals-data (jsonl)
    python examples/erp_sync_job.py --down       # a failing run; exit status 1
    python examples/erp_sync_job.py --pings https://hc-ping.com/<uuid>
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import appvitals
from appvitals import health
from appvitals.health import checks
from appvitals.jobs import JobError, JobRun, job, retry

logger = logging.getLogger("erp.article_sync")


class ErpUnavailable(JobError):  # noqa: N818 - named like the state it reports
    """The ERP did not answer usefully: worth retrying, category ERP_CONNECTION_FAILED."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True, category="ERP_CONNECTION_FAILED")


class FakeErp:
    """An ERP article API on 127.0.0.1: ``GET /articles?offset=&limit=`` and ``/articles/count``.

    Every ``flaky_every``-th request fails once with 503; with ``down_from`` set, every page
    from that offset on fails for good. Every 50th article has no EAN. ``GET /health``
    always answers 200 and is not counted among the requests.
    """

    def __init__(
        self, articles: int = 1000, *, flaky_every: int = 4, down_from: Optional[int] = None
    ) -> None:
        self.articles = articles
        self.requests = 0
        lock = threading.Lock()
        erp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/health":
                    self._send(200, {"status": "ok"})
                    return
                query = {key: int(values[0]) for key, values in parse_qs(url.query).items()}
                with lock:
                    erp.requests += 1
                    number = erp.requests
                offset = query.get("offset", 0)
                if url.path == "/articles/count":
                    self._send(200, {"count": erp.articles})
                elif down_from is not None and offset >= down_from:
                    self._send(503, {"error": "enventa session pool exhausted"})
                elif flaky_every and number % flaky_every == 0:
                    self._send(503, {"error": "busy, try again"})
                else:
                    end = min(erp.articles, offset + query.get("limit", 100))
                    rows = [
                        {"sku": f"A-{n:06d}", "ean": None if n % 50 == 49 else f"40{n:011d}"}
                        for n in range(offset, end)
                    ]
                    self._send(200, {"articles": rows, "count": erp.articles})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # the access log is noise here
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FakeErp:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET a JSON document; a 5xx or a network error becomes :class:`ErpUnavailable`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http only
            return json.load(response)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code >= 500:
            raise ErpUnavailable(f"ERP answered {error.code} for {url}") from error
        raise
    except (urllib.error.URLError, TimeoutError) as error:
        raise ErpUnavailable(f"ERP unreachable: {error}") from error


def preflight(erp_url: str) -> tuple[bool, str]:
    """Register the ERP as a connected service, check it and measure the connection.

    Returns:
        Whether the sync may start (the ERP is ``connected`` and every test request
        succeeded), and one line for the terminal.
    """
    health.register("erp", checks.http(f"{erp_url}/health", expect_status=200), timeout=2.0)
    _, ready = health.ready_payload()
    state = ready["services"]["erp"]
    connection = appvitals.test_connection(f"{erp_url}/health", requests=3, timeout=2.0)
    if connection.passed:
        measured = f"{connection.rating}, median {connection.median_ms('total'):.1f} ms"
    else:
        measured = "failed: " + ", ".join(f"{e.category}/{e.type}" for e in connection.errors)
    return state == "connected" and connection.passed, f"ERP {state}; connection {measured}"


def sync_articles(
    erp_url: str,
    *,
    tenant: str = "t-123",
    page_size: int = 100,
    sleep: Callable[[float], object] = time.sleep,
    pings: Optional[str] = None,
) -> JobRun:
    """Copy every article from the ERP into the catalogue as one ERP_ARTICLE_SYNC run.

    Returns the ended run; a run that failed is returned too (its error is in ``run.error``).
    """
    total = int(get_json(f"{erp_url}/articles/count")["count"])
    fetch_page = retry(get_json, attempts=3, backoff=0.2, max_backoff=2.0, sleep=sleep)
    catalogue: dict[str, str] = {}
    run = job(
        "ERP_ARTICLE_SYNC",
        total=total,
        tenant=tenant,
        metadata={"erp.system": "enventa Trade", "erp.page_size": page_size},
        pings=pings,
    )
    try:
        with run:
            logger.info("syncing %d articles from %s", total, erp_url)
            with run.step("download"):
                try:
                    for offset in range(0, total, page_size):
                        run.raise_if_cancelled()
                        page = fetch_page(f"{erp_url}/articles?offset={offset}&limit={page_size}")
                        valid = {a["sku"]: a["ean"] for a in page["articles"] if a["ean"]}
                        skipped = len(page["articles"]) - len(valid)
                        if skipped:
                            logger.warning("offset %d: %d article(s) without EAN", offset, skipped)
                        catalogue.update(valid)
                        run.progress(
                            processed=len(page["articles"]), succeeded=len(valid), failed=skipped
                        )
                except ErpUnavailable:
                    logger.exception("giving up on the ERP after %d attempts", 3)
                    raise
            with run.step("publish"):
                logger.info("published %d articles to the catalogue", len(catalogue))
    except ErpUnavailable:
        pass  # recorded on the run: failed, transient, ERP_CONNECTION_FAILED
    return run


def summary(run: JobRun) -> str:
    """One line for the terminal."""
    counts = run.counts
    line = (
        f"{run.job_type} {run.run_id} {run.outcome} in {run.duration or 0.0:.2f} s: "
        f"{counts.processed}/{counts.total} processed, {counts.succeeded} succeeded, "
        f"{counts.failed} failed, {len([a for a in run.attempts if a.delay is not None])} retries"
    )
    if run.error is not None:
        line += f" ({run.error_category}: {run.error})"
    return line


def main(argv: Optional[list[str]] = None) -> int:
    """Run the sync once against a fresh fake ERP; exit status 0 when it completed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--down", action="store_true", help="the ERP stops answering half-way")
    parser.add_argument("--pings", help="a Healthchecks-compatible ping URL")
    args = parser.parse_args(argv)
    appvitals.configure(service_name="erp-sync", sampler_ratio=1.0)
    down_from = args.articles // 2 if args.down else None
    try:
        with FakeErp(args.articles, down_from=down_from) as erp:
            ready, line = preflight(erp.url)
            print(line)
            if not ready:
                return 1
            run = sync_articles(erp.url, pings=args.pings)
        print(summary(run))
        return 0 if run.outcome == "completed" else 1
    finally:
        health.stop()
        appvitals.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
