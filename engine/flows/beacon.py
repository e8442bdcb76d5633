"""The browser beacon with the site's compiled sitemap in front of it (GET /sdk/kairos.js).

The body is `engine.logic.sitemap.beacon_bundle(sitemap, sdk_js/dist/kairos.js)`. Both inputs are
watched by their modification time, checked at most once a second on request (one `stat` each):
an edited `config/sitemap.yaml` is recompiled and served at once; an invalid edit is logged with
its file:line messages and the last good sitemap stays in service. An invalid sitemap at start-up
stops the engine (the message names the file, line and field). Without a sitemap file the beacon
is served alone; without a built beacon the answer is a 503 saying to run `kairos setup`.

Each bundle is also compressed once, with zopfli (gzip format, a few per cent smaller than
gzip -9): what a browser that accepts gzip downloads.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zopfli.gzip

from engine.logic.sitemap import SitemapError, beacon_bundle, load

log = logging.getLogger("kairos.sdk")

ROOT = Path(__file__).resolve().parent.parent.parent
DIST = ROOT / "sdk_js" / "dist" / "kairos.js"
CHECK_EVERY_S = 1.0


def _stamp(path: Path) -> tuple[int, int] | None:
    """(modification time, size) of a file, or None when it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@dataclass
class Bundle:
    body: bytes
    etag: str
    gzipped: bytes = b""  # the body in gzip format (what `Content-Encoding: gzip` sends)

    @property
    def gzip_etag(self) -> str:
        return self.etag[:-1] + '-gz"'


class BeaconSource:
    """The served bundle, rebuilt when the sitemap file or the built beacon changes."""

    def __init__(self, sitemap_path: Path, dist_path: Path = DIST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sitemap_path = sitemap_path
        self.dist_path = dist_path
        self.sitemap: dict[str, Any] | None = None
        self._clock = clock
        self._sitemap_stamp: tuple[int, int] | None = None
        self._dist_stamp: tuple[int, int] | None = None
        self._bundle: Bundle | None = None
        self._checked = 0.0

    def load_initial(self) -> None:
        """Compile the sitemap once at start-up; raises SitemapError when the file is invalid."""
        self._sitemap_stamp = _stamp(self.sitemap_path)
        if self._sitemap_stamp is not None:
            self.sitemap = load(self.sitemap_path)
        self._checked = self._clock()

    def _reload_sitemap(self, stamp: tuple[int, int] | None) -> bool:
        """Recompile after a change; False (and the last good one kept) when the file is invalid."""
        self._sitemap_stamp = stamp
        if stamp is None:
            log.warning("%s is gone; serving the beacon without a sitemap", self.sitemap_path)
            self.sitemap = None
            return True
        try:
            self.sitemap = load(self.sitemap_path)
        except SitemapError as exc:
            log.error("sitemap not reloaded, the last good one stays in service:\n%s", exc)
            return False
        log.info("sitemap reloaded from %s", self.sitemap_path)
        return True

    def current(self) -> Bundle | None:
        """The bundle to serve, or None when the beacon is not built."""
        now = self._clock()
        if now - self._checked >= CHECK_EVERY_S or self._bundle is None:
            self._checked = now
            sm_stamp = _stamp(self.sitemap_path)
            if sm_stamp != self._sitemap_stamp and self._reload_sitemap(sm_stamp):
                self._bundle = None
            dist_stamp = _stamp(self.dist_path)
            if dist_stamp != self._dist_stamp:
                self._dist_stamp = dist_stamp
                self._bundle = None
        if self._bundle is None and self._dist_stamp is not None:
            try:
                beacon = self.dist_path.read_bytes()
            except OSError:
                return None
            if self.sitemap is None:  # the beacon alone (window.__kairosSitemap unset)
                body, etag = beacon, '"' + hashlib.sha256(beacon).hexdigest()[:32] + '"'
            else:
                body, etag = beacon_bundle(self.sitemap, beacon)
            self._bundle = Bundle(body, etag, zopfli.gzip.compress(body))
        return self._bundle
