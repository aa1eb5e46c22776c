"""`mailer issue build --check-links`: ask every web address the email links to whether it is there.

The one place composing touches the network, and only when the editor asks. Each distinct address
is fetched once, a few at a time: HEAD first (no body), then GET when HEAD is refused or fails
(many servers answer HEAD with 403, 404 or 405 where GET works); redirects are followed. A 4xx or
5xx answer, an address that cannot be reached within the timeout, and a redirect that ends on
another host (a moved site, a parked domain, a login page) are warnings with the issue's line: the
lint report's errors stay about what the email itself gets wrong. Pictures are left out: a reader's
mail app fetches them, and the lint report already checks their addresses.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from mailer.compose.findings import Problem, Severity

TIMEOUT = 5.0             # seconds per request: a page slower than this loses readers anyway
WORKERS = 8               # requests at once (distinct hosts mostly; none is asked twice)
USER_AGENT = "crank-mailer-linkcheck/1 (a newsletter checking its links before sending)"


@dataclass(frozen=True)
class Answer:
    url: str
    status: int | None        # the last answer's status; None when nothing answered
    final: str                # the address the redirects ended on
    error: str = ""           # why nothing answered


def check_links(hrefs, *, timeout: float | None = None) -> list[Problem]:
    """A warning for every http(s) address in `hrefs` that is missing, failing, unreachable or
    moved to another host; each address is asked once, in the order given."""
    urls = list(dict.fromkeys(h for h in hrefs if urlsplit(h).scheme.lower() in ("http", "https")))
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        answers = list(pool.map(lambda url: fetch(url, TIMEOUT if timeout is None else timeout), urls))
    return [problem for answer in answers if (problem := judge(answer))]


def fetch(url: str, timeout: float) -> Answer:
    """HEAD, then GET if the server answered HEAD with an error (one that did not answer at all,
    or not in time, is not asked again)."""
    first = _request(url, "HEAD", timeout)
    if first.status is None or first.status < 400:
        return first
    second = _request(url, "GET", timeout)
    return second if second.status is not None else first


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects with the same method: a HEAD stays a HEAD (urllib's own turns it into GET)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.method = req.get_method()
        return new


_OPENER = urllib.request.build_opener(_Redirects)


def _request(url: str, method: str, timeout: float) -> Answer:
    request = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT,
                                                                  "Accept": "text/html,*/*"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Answer(url, response.status, response.geturl())
    except urllib.error.HTTPError as exc:
        return Answer(url, exc.code, exc.geturl() or url)
    except (urllib.error.URLError, OSError, ValueError) as exc:   # DNS, refused, timeout, TLS
        reason = getattr(exc, "reason", exc)
        return Answer(url, None, url, str(reason) or type(exc).__name__)


def judge(answer: Answer) -> Problem | None:
    needles = (f"]({answer.url})", answer.url)
    if answer.status is None:
        return Problem(Severity.WARNING, "link check", f"{answer.url} could not be reached "
                       f"({answer.error}): check the address", needles)
    if answer.status >= 400:
        return Problem(Severity.WARNING, "link check", f"{answer.url} answers {answer.status}"
                       f"{_reason(answer.status)}: check the address", needles)
    if _host(answer.final) != _host(answer.url):
        return Problem(Severity.WARNING, "link check", f"{answer.url} redirects to another host "
                       f"({answer.final}): link to where it leads, if that is the page you mean",
                       needles)
    return None


def _host(url: str) -> str:
    """The host without a leading "www.": example.org and www.example.org are one site."""
    host = (urlsplit(url).hostname or "").lower()
    return host.removeprefix("www.")


def _reason(status: int) -> str:
    words = {401: "unauthorized", 403: "forbidden", 404: "not found", 410: "gone",
             429: "too many requests", 500: "server error", 502: "bad gateway",
             503: "unavailable", 504: "gateway timeout"}.get(status)
    return f" ({words})" if words else ""
