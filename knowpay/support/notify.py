"""Mail to buyers about their tickets, through one small function.

Until the shared mail backend is wired in, mails are appended as JSON lines to
`<instance>/mail/outbox.jsonl`, where a person or a test can read them. Callers send after
their transaction has committed, so a rolled-back change never mails anybody.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from knowpay.context import Context
from knowpay.domain.clock import isoformat

MAIL_FOLDER = "mail"
OUTBOX_FILE = "outbox.jsonl"
_write_lock = threading.Lock()


def outbox_path(ctx: Context) -> Path:
    return Path(ctx.settings.instance_path) / MAIL_FOLDER / OUTBOX_FILE


def send_mail(ctx: Context, to: str, subject: str, body: str) -> None:
    """Send one plain-text mail."""
    path = outbox_path(ctx)
    line = json.dumps({"at": isoformat(ctx.clock.now()), "to": to, "subject": subject, "body": body},
                      ensure_ascii=False)
    with _write_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")


def sent_mails(ctx: Context) -> list[dict]:
    """Every mail in the local outbox, oldest first."""
    path = outbox_path(ctx)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
