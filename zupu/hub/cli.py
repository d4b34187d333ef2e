"""`zupu hub serve|token|org` and `zupu push RUN REPO`.

Scripts rely on this contract: `zupu hub token create --data DIR --user NAME [--scope read|write]`
creates the user if needed and prints the token alone on the last line of stdout.
"""

from __future__ import annotations

import argparse

from zupu.errors import ZupuError


def _sessions(args: argparse.Namespace):
    from zupu.hub import db

    return db.connect(args.db or db.default_url(args.data))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from zupu.hub.limits import server_options
    from zupu.hub.server import Hub, create_app

    if args.sweep_after < 0:
        raise ZupuError(f"--sweep-after {args.sweep_after}: give a number of seconds, 0 or more")
    hub = Hub(args.data, args.db, max_object_size=args.max_object_size, storage=args.storage,
              sweep_after=args.sweep_after, run_spaces=args.run_spaces, spaces_host=args.spaces_host,
              spaces_bind=args.host, spaces_idle=args.spaces_idle, spaces_dir=args.spaces_dir)
    print(f"zupu hub on http://{args.host}:{args.port} (data {hub.data}, LFS in {args.storage or 'data'}); "
          f"clients: HF_ENDPOINT=http://{args.host}:{args.port} HF_HUB_DISABLE_XET=1", flush=True)
    if args.spaces_host == args.host:
        print(f"note: Spaces are served at http://{args.spaces_host}:PORT, the same host name as the pages: browsers "
              "then send the pages' cookie to Spaces; give --spaces-host another name for the same address",
              flush=True)
    try:
        uvicorn.run(create_app(hub), host=args.host, port=args.port, log_level=args.log_level, **server_options())
    finally:
        hub.spaces.close()  # the Spaces' apps are processes of their own: stop them with the hub
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from zupu.hub import db

    sessions = _sessions(args)
    with sessions() as s, s.begin():
        if args.action == "create":
            if not args.user:
                raise ZupuError("token create needs --user NAME")
            tok, secret = db.create_token(s, args.user, args.scope, args.name)
            print(f"token {tok.id} ({tok.name}, {tok.scope}) for {args.user}; it is shown only now:")
            print(secret)
        elif args.action == "list":
            stmt = select(db.Token, db.User).join(db.User, db.User.id == db.Token.user_id).order_by(db.Token.id)
            if args.user:
                stmt = stmt.where(db.User.name == args.user)
            for tok, user in s.execute(stmt).all():
                state = "revoked" if tok.revoked else "active"
                print(f"{tok.id:>4}  {user.name:<20} {tok.scope:<5} {state:<7} "
                      f"{tok.created:%Y-%m-%d %H:%M}  {tok.name}")
        else:
            if not args.id:
                raise ZupuError("token revoke needs --id N (see `zupu hub token list`)")
            tok = s.get(db.Token, args.id)
            if tok is None:
                raise ZupuError(f"no token with id {args.id}; see `zupu hub token list`")
            tok.revoked = True
            print(f"token {tok.id} revoked")
    return 0


def cmd_org(args: argparse.Namespace) -> int:
    from zupu.hub import db

    sessions = _sessions(args)
    with sessions() as s, s.begin():
        org = db.get_or_create_user(s, args.name, is_org=True)
        if not org.is_org:
            raise ZupuError(f"{args.name} is a user, not an organisation")
        for member in args.member:
            user = db.get_or_create_user(s, member)
            if s.get(db.Membership, (org.id, user.id)) is None:
                s.add(db.Membership(org_id=org.id, user_id=user.id))
        print(f"organisation {args.name}: members {', '.join(args.member) or '(unchanged)'}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from zupu.hub.client import push

    print(push(args.run, args.repo, private=args.private, message=args.message, space=args.space))
    return 0


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="hub-data", help="the hub's data folder (default: hub-data)")
    p.add_argument("--db", help="database URL: postgresql://USER:PASSWORD@HOST[:PORT]/DB or sqlite:///PATH "
                                "(default: SQLite in --data)")


def add_parser(subparsers) -> None:
    """`zupu hub ...` and `zupu push`."""
    hub = subparsers.add_parser("hub", help="a self-hosted model/dataset/space hub for HF clients, git and git lfs")
    sub = hub.add_subparsers(dest="hub_command", required=True)

    s = sub.add_parser("serve", help="run the hub (HTTP API, git smart HTTP, Git LFS)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    _data_args(s)
    s.add_argument("--storage", metavar="s3://BUCKET[/PREFIX]",
                   help="keep LFS objects in S3 or an S3-compatible store (endpoint and credentials from the "
                        "AWS_* environment / ~/.aws); default: --data/lfs")
    s.add_argument("--max-object-size", type=int, default=50 << 30, help="largest LFS object in bytes")
    s.add_argument("--sweep-after", type=float, default=24 * 3600, metavar="SECONDS",
                   help="at start, remove what uploads left (lfs/tmp/, unfinished S3 multipart uploads) once it is "
                        "this old: younger ones may be in flight at other hubs on the same --data/--storage "
                        "(default: 86400, a day)")
    s.add_argument("--run-spaces", action="store_true",
                   help="run gradio Spaces (each `python app.py` in a process, folder and port of its own)")
    s.add_argument("--spaces-host", default="localhost",
                   help="the host name in Spaces' addresses: another site than the pages' (default localhost, "
                        "for pages on 127.0.0.1), so a Space never sees the pages' cookie")
    s.add_argument("--spaces-idle", type=float, default=900, metavar="SECONDS",
                   help="stop a gradio Space's app after this long without requests (default 900)")
    s.add_argument("--spaces-dir", help="where Spaces' apps get their folders (default: a new temporary folder; "
                                        "must be outside --data)")
    s.add_argument("--log-level", default="warning")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("token", help="create, list or revoke access tokens")
    s.add_argument("action", choices=["create", "list", "revoke"])
    _data_args(s)
    s.add_argument("--user")
    s.add_argument("--scope", choices=["read", "write"], default="write")
    s.add_argument("--name", help="a label for the token")
    s.add_argument("--id", type=int, help="the token to revoke (from `token list`)")
    s.set_defaults(func=cmd_token)

    s = sub.add_parser("org", help="create an organisation and add members")
    s.add_argument("name")
    _data_args(s)
    s.add_argument("--member", action="append", default=[], help="a user to add (repeatable)")
    s.set_defaults(func=cmd_org)

    s = subparsers.add_parser("push", help="upload a run directory to a hub repo (HF_ENDPOINT/ZUPU_HUB_URL, HF_TOKEN)")
    s.add_argument("run")
    s.add_argument("repo", help="namespace/name")
    s.add_argument("--private", action="store_true")
    s.add_argument("--message", default=None)
    s.add_argument("--space", action="store_true",
                   help="publish a gradio demo Space of the run (a text box for a language model, an image input "
                        "for a classifier), which a hub started with --run-spaces runs")
    s.set_defaults(func=cmd_push)
