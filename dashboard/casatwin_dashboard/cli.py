"""``casatwin dashboard``: the live dashboard, the kiosk and the history API.

``casatwin dashboard`` (or ``casatwin dashboard serve``) runs the web application;
``casatwin dashboard add-operator NAME`` creates an operator who may see driver
identities (the password is read from a prompt, or from standard input when piped);
``casatwin dashboard remove-operator NAME`` removes one. A changed password or a removed
operator ends that operator's open sessions at their next request.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from casatwin.config import Settings
from casatwin.errors import UserError

if TYPE_CHECKING:
    from casatwin_dashboard.operators import OperatorStore


def register(subparsers: argparse._SubParsersAction) -> None:
    dashboard = subparsers.add_parser(
        "dashboard",
        help="run the live dashboard, the kiosk and the history API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dashboard.set_defaults(handler=run_serve)
    actions = dashboard.add_subparsers(title="actions", metavar="ACTION")
    serve = actions.add_parser("serve", help="run the dashboard (the default action)")
    serve.set_defaults(handler=run_serve)
    add = actions.add_parser(
        "add-operator",
        help="create an operator (password from a prompt or standard input)",
        description="Create an operator who can log in and see driver identities (audited).",
    )
    add.add_argument("name", help="login name, e.g. amina.b")
    add.add_argument(
        "--reset-password", action="store_true", help="change the password of an existing operator"
    )
    add.set_defaults(handler=run_add_operator)
    remove = actions.add_parser(
        "remove-operator",
        help="remove an operator (its open sessions end; its audit rows stay)",
        description="Remove an operator: it can no longer log in, and its open sessions end.",
    )
    remove.add_argument("name", help="login name, e.g. amina.b")
    remove.set_defaults(handler=run_remove_operator)


def url(settings: Settings) -> str:
    """Where a person opens the dashboard (``make run`` prints it)."""
    host = settings.dashboard.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    scheme = "https" if settings.dashboard.tls_cert_file else "http"
    return f"{scheme}://{shown}:{settings.dashboard.port}/"


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.for_service("dashboard")  # its own Kafka principal
    from casatwin_dashboard.service import run

    return run(settings)


def read_password() -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise UserError("the two passwords differ", hint="run the command again")
    return first


def operator_store(settings: Settings) -> OperatorStore:
    from casatwin.registry import db
    from casatwin_dashboard.operators import OperatorStore

    db.connect(settings.mariadb).close()  # a schema without the operator tables: say to migrate
    return OperatorStore(settings.mariadb)


def run_add_operator(args: argparse.Namespace, settings: Settings) -> int:
    from casatwin_dashboard.operators import check_new_operator, hash_password

    password = read_password()
    check_new_operator(args.name, password)
    operators = operator_store(settings)
    if not operators.set_operator(args.name, hash_password(password), replace=args.reset_password):
        raise UserError(
            f"operator {args.name!r} already exists",
            hint="add --reset-password to change its password",
        )
    print(f"operator {args.name} {'updated' if args.reset_password else 'created'}")
    return 0


def run_remove_operator(args: argparse.Namespace, settings: Settings) -> int:
    if not operator_store(settings).remove_operator(args.name):
        raise UserError(f"there is no operator {args.name!r}", hint="check the spelling")
    print(f"operator {args.name} removed; its open sessions end at their next request")
    return 0
