"""zupu's hub: a self-hosted Git + Git LFS home for models, datasets and spaces.

`zupu hub serve` speaks the Hugging Face Hub's HTTP API (so `huggingface_hub`, `transformers` and
`datasets` work against it through `HF_ENDPOINT`), git smart HTTP and Git LFS. Layout:

    db.py       users, organisations, tokens, repos, LFS ownership (SQLAlchemy; SQLite WAL by default)
    storage.py  content-addressed LFS objects in --data (hashed while written, then moved into place)
    s3.py       the same in an S3 bucket (--storage s3://bucket/prefix; multipart completed once verified)
    gitrepo.py  bare git repos via the git CLI: trees, blobs, compare-and-swap commits
    server.py   the HTTP API, downloads, LFS transfer links (FastAPI)
    githttp.py  git smart HTTP (git http-backend) and the LFS batch API
    web.py      the web pages (templates/, static/): repo lists, model cards, files, commits, sign-in
    client.py   `zupu.from_pretrained("org/name")` and `zupu push`
    cli.py      `zupu hub serve|token|org` and `zupu push`
"""
