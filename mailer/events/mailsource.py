"""Where returned mail is read from: an mbox file, a Maildir, one .eml file, a folder of them, or
an IMAP folder. Each yields `Mail(label, data)`; `label` names the message to the person (its
path, `mbox-path:index`, or `imap:FOLDER:UID`).
"""

from __future__ import annotations

import mailbox
import mmap
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailer.errors import BounceSourceError

_MBOX_FROM = re.compile(rb"^From \S*", re.M)


@dataclass(frozen=True)
class Mail:
    label: str
    data: bytes


def read_path(path: str | Path) -> Iterator[Mail]:
    """Every message under `path`, in a stable order."""
    path = Path(path)
    if not path.exists():
        raise BounceSourceError(f"{path}: no such file or folder")
    if path.is_dir():
        if all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            yield from _maildir(path)
        else:
            yield from _folder(path)
        return
    with path.open("rb") as f:
        head = f.read(5)
    if head == b"From ":
        yield from _mbox(path)
    else:
        yield Mail(str(path), _read(path))


def _mbox(path: Path) -> Iterator[Mail]:
    """mbox, split on its "From " lines in one pass over a memory map (mailbox.mbox would seek and
    reread each message; reading the file whole would hold it all), with ">From " quoting undone."""
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield from _split_mbox(path, data)
    except OSError as exc:
        raise BounceSourceError(f"{path}: cannot read: {exc.strerror}") from exc


def _split_mbox(path: Path, data) -> Iterator[Mail]:
    starts = [m.start() for m in _MBOX_FROM.finditer(data)]
    for index, (start, end) in enumerate(zip(starts, [*starts[1:], len(data)], strict=True)):
        body = data[data.find(b"\n", start) + 1:end]
        if body.endswith(b"\n\n"):                   # the blank line that separates messages
            body = body[:-1]
        if b"\n>From " in body or b"\n>>From " in body:
            body = re.sub(rb"\n>(>*From )", rb"\n\1", body)
        yield Mail(f"{path}:{index}", body)


def _maildir(path: Path) -> Iterator[Mail]:
    """A Maildir's messages, in the order of their keys: each is a file in new/ or cur/ named by
    its unique key, then (in cur/) the colon and its flags. Read from the folders as the format
    says, because the label is the file's path, which mailbox.Maildir gives no public way to ask."""
    files = {}
    for sub in ("new", "cur"):                   # as mailbox.Maildir: cur/ wins a key in both
        for file in (path / sub).iterdir():
            if not file.is_dir():
                files[file.name.split(mailbox.Maildir.colon)[0]] = file
    for key in sorted(files):
        yield Mail(str(files[key]), _read(files[key]))


def _folder(path: Path) -> Iterator[Mail]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".eml", ".txt", ".msg"))
    for file in files:
        yield Mail(str(file), _read(file))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BounceSourceError(f"{path}: cannot read: {exc.strerror}") from exc
