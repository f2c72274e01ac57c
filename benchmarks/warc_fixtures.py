"""Build WARC and WET test inputs from real HTML: Debian's documentation packages.

`benchmarks/curation_setup.sh` installs python3.11-doc, debian-handbook (26 languages) and
debian-reference-* with apt; `build_debian_warcs` packs their pages into WARC files as HTTP
`response` records (alternating gzip'd and plain files) plus WET-style `conversion` records of
extracted text. A sprinkling of pages is re-encoded in a legacy charset declared only in the
HTTP header (the page's own meta tag still says UTF-8), as crawls often are.

    python -m benchmarks.warc_fixtures --out runs/debian-warc --pages-per-shard 250

It builds inputs for the curation tests, benchmarks and experiments.curation_compare, so it lives
beside the benchmarks rather than in the library.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
from pathlib import Path
from typing import Iterable, Iterator

DEBIAN_ROOTS = {
    "python": Path("/usr/share/doc/python3.11/html"),
    "handbook": Path("/usr/share/doc/debian-handbook/html"),
    "reference": Path("/usr/share/debian-reference"),
}
_REF_LANG = re.compile(r"\.([a-z]{2}(?:-[a-z]{2})?)\.html$")
LEGACY = {"fr": "windows-1252", "de": "iso-8859-1", "es": "windows-1252", "it": "iso-8859-1",
          "ja": "shift_jis", "ru": "koi8-r", "zh": "gb18030"}


def write_warc(path: str | os.PathLike, pages: Iterable[tuple[str, bytes, str]], compress: bool | None = None) -> Path:
    """Write (url, body, Content-Type header value) pages as HTTP response records."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compress = path.suffix == ".gz" if compress is None else compress
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=compress)
        for url, body, ctype in pages:
            http = StatusAndHeaders("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))],
                                    protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))
    return path


def write_wet(path: str | os.PathLike, docs: Iterable[tuple[str, str]], compress: bool | None = None) -> Path:
    """Write (url, text) pairs as WET `conversion` records (text/plain)."""
    from warcio.warcwriter import WARCWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compress = path.suffix == ".gz" if compress is None else compress
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=compress)
        for url, text in docs:
            w.write_record(w.create_warc_record(url, "conversion", payload=io.BytesIO(text.encode("utf-8")),
                                                warc_content_type="text/plain"))
    return path


def debian_pages(roots: dict[str, Path] | None = None) -> Iterator[tuple[str, Path, str]]:
    """(url, file, folder/file-name language) for every installed Debian documentation page."""
    for name, root in (roots or DEBIAN_ROOTS).items():
        if not root.is_dir():
            continue
        for f in sorted(root.rglob("*.html")):
            rel = f.relative_to(root)
            if name == "handbook":
                lang = rel.parts[0].split("-")[0]
            elif name == "reference":
                m = _REF_LANG.search(f.name)
                lang = m.group(1).split("-")[0] if m else "en"
            else:
                lang = "en"
            yield f"https://docs.example/{name}/{rel.as_posix()}", f, lang


def english_counterpart(path: Path) -> Path | None:
    """The English original of a translated handbook or reference page, if installed."""
    parts = path.parts
    if "debian-handbook" in parts:
        i = parts.index("html") + 1
        en = Path(*parts[:i], "en-US", *parts[i + 1:])
    else:
        en = path.with_name(_REF_LANG.sub(".en.html", path.name))
    return en if en.is_file() and en != path else None


def labelled_debian_texts(per_lang: int = 12, seed: int = 0) -> list[dict]:
    """Sampled pages per folder language: {"lang", "text", "untranslated"}.

    Folder labels are noisy: many translations are partial, so a page in, say, the Danish folder
    may be English text. `untranslated` marks pages whose text is mostly the same as their English
    original (word 3-gram Jaccard >= 0.5), so accuracy can be reported with and without them.
    Norwegian Bokmål folders (nb) are labelled "no", the code lid.176 uses.
    """
    from collections import defaultdict

    from lm.curation.extract import extract_text
    from lm.curation.minhash import jaccard, shingle_set

    groups = defaultdict(list)
    for _, f, lang in debian_pages():
        groups[{"nb": "no"}.get(lang, lang)].append(f)
    rng, out = random.Random(seed), []
    for lang, files in sorted(groups.items()):
        for f in rng.sample(files, min(per_lang, len(files))):
            text, reason = extract_text(f.read_bytes(), "text/html", "utf-8")
            if reason:
                continue
            en = english_counterpart(f) if lang != "en" else None
            same = False
            if en is not None:
                en_text, _ = extract_text(en.read_bytes(), "text/html", "utf-8")
                same = jaccard(shingle_set(text, 3), shingle_set(en_text, 3)) >= 0.5
            out.append({"lang": lang, "text": text, "untranslated": same})
    return out


def debian_available() -> bool:
    return any(r.is_dir() for r in DEBIAN_ROOTS.values())


def build_debian_warcs(out: str | os.PathLike, pages_per_shard: int = 250, max_pages: int | None = None,
                       legacy_fraction: float = 0.1, wet_shards: int = 1, seed: int = 0,
                       roots: dict[str, Path] | None = None, sample: bool = False) -> dict:
    """Pack Debian pages into out/debian-NNNNN.warc[.gz] (+ WET files); returns a manifest.

    `sample` picks `max_pages` spread across all sources and languages instead of the first ones.
    The manifest (also out/manifest.json) maps each URL to its folder language label.
    """
    from lm.curation.extract import extract_text

    rng = random.Random(seed)
    pages = list(debian_pages(roots))
    if not pages:
        raise FileNotFoundError("no Debian documentation pages found; run benchmarks/curation_setup.sh first")
    if sample and max_pages:
        pages = sorted(rng.sample(pages, min(max_pages, len(pages))), key=lambda p: p[0])
    pages = pages[:max_pages] if max_pages else pages
    rng.shuffle(pages)  # mix sources and languages across shards, as a crawl would
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files, labels, wet_docs = [], {}, []
    for shard in range(0, len(pages), pages_per_shard):
        batch, records = pages[shard:shard + pages_per_shard], []
        for url, f, lang in batch:
            body, ctype = f.read_bytes(), "text/html; charset=utf-8"
            if lang in LEGACY and rng.random() < legacy_fraction:
                try:
                    body = body.decode("utf-8").encode(LEGACY[lang])
                    ctype = f"text/html; charset={LEGACY[lang]}"
                except UnicodeError:
                    pass
            records.append((url, body, ctype))
            labels[url] = lang
        k = shard // pages_per_shard
        name = f"debian-{k:05d}.warc" + (".gz" if k % 2 == 0 else "")
        files.append(str(write_warc(out / name, records)))
        if k < wet_shards:
            wet_docs = [(u, extract_text(b, "text/html", c.split("=")[-1])[0]) for u, b, c in records]
            wet_name = f"debian-{k:05d}.warc.wet" + (".gz" if k % 2 == 0 else "")
            files.append(str(write_wet(out / wet_name, [(u + "#wet", t) for u, t in wet_docs if t])))
    manifest = {"files": files, "labels": labels, "pages": len(pages)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--pages-per-shard", type=int, default=250)
    p.add_argument("--max-pages", type=int, default=None)
    p.add_argument("--wet-shards", type=int, default=1)
    a = p.parse_args(argv)
    m = build_debian_warcs(a.out, a.pages_per_shard, a.max_pages, wet_shards=a.wet_shards)
    print(f"wrote {len(m['files'])} files with {m['pages']:,} pages to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
