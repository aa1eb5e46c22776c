"""Stage 7a (mail): one returned message (bytes) -> a `BounceReport`: its kind and the recipients
it concerns, with the ref that names our send. Pure: no database, no network.

Readers, in order (docs/bounces.md has the classification table):

1. RFC 5965 ARF (`multipart/report; report-type=feedback-report`): a complaint from a feedback
   loop; the recipient is `Original-Rcpt-To`, else the `To` of the returned original.
2. RFC 3464 DSN (`message/delivery-status`): each per-recipient group's `Action`, `Status` and
   `Diagnostic-Code`; `delayed` is a delay, `failed` is classified by its status code.
3. Auto-replies (out-of-office, vacation, "Automatic reply") are ignored.
4. Everything else goes to flufl.bounce's detectors (Mailman's: Postfix, Exim, qmail, Sendmail,
   Exchange, GroupWise, Yahoo, ... prose): its permanent failures are hard (the MTA gave up on the
   address: prose carries no status code to say the mailbox was only full), its temporary ones
   ("still trying") delays.

The ref (mailer/send/refs.py) is looked for in the VERP address the mail came back to (`To`,
`Delivered-To`, `X-Original-To`, ...) and in the `X-Mailer-Ref` of the returned original; whether
to trust it is decided later, with the key and the store (mailer/events/bounces.py).
"""

from __future__ import annotations

import email
import email.parser
import enum
import hashlib
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import collapse_rfc2231_value, parseaddr, parsedate_to_datetime

from flufl.bounce._scan import _DETECTORS  # private: the one use is flufl_failures below

from subscribers.events import DeliveryEvent, EventType, Severity

SOURCE = "bounce-mail"


class BounceKind(enum.StrEnum):
    """What a returned message says (docs/bounces.md); a finding is one of the first five."""

    HARD = "hard"
    SOFT = "soft"
    BLOCKED = "blocked"
    DELAYED = "delayed"
    COMPLAINT = "complaint"
    IGNORED = "ignored"              # an auto-reply, or a report that names nobody
    UNRECOGNIZED = "unrecognized"    # no reader understood it


KINDS = tuple(BounceKind)
# The kind a message gets when its recipients differ: the one that matters most.
RANK = {BounceKind.COMPLAINT: 5, BounceKind.HARD: 4, BounceKind.BLOCKED: 3, BounceKind.SOFT: 2,
        BounceKind.DELAYED: 1}

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([245])\d\d\b")
_FULL = re.compile(r"mailbox (is )?full|over ?quota|quota exceeded|exceeded (the )?(storage|quota)|"
                   r"out of storage|insufficient (system )?storage|mailbox size limit", re.I)
_UNKNOWN = re.compile(r"user unknown|unknown user|no such (user|mailbox|recipient|address)|"
                      r"does not exist|doesn't exist|not exist|mailbox unavailable|invalid (recipient|mailbox|address)|"
                      r"recipient address rejected|address rejected|unknown (recipient|mailbox|address)|"
                      r"account (is )?(disabled|inactive|closed)|host not found|domain not found|"
                      r"name or service not known|no mx", re.I)
_BLOCK = re.compile(r"spam|blocked|block ?list|black ?list|reputation|policy|spamhaus|\brbl\b|dnsbl|"
                    r"dmarc|not authori[sz]ed|content rejected|message rejected", re.I)
_AUTO_SUBJECT = re.compile(r"^\s*(automatic reply|auto(matic)?[- ]?(reply|response)|out of (the )?office|"
                           r"on vacation|away from|abwesenheit|r[ée]ponse automatique|auto:)", re.I)
_VERP = re.compile(r"\+(\d{1,18}\.\d{1,18}(?:\.[A-Za-z2-7]{10})?)@")
_REF_HEADER = re.compile(rb"^X-Mailer-Ref:[ \t]*([0-9A-Za-z.]{3,64})", re.I | re.M)
_MESSAGE_ID = re.compile(rb"^(?:Message-ID|X-Original-Message-ID|Original-Message-ID):[ \t]*(<[!-;=?-~]{1,250}>)",
                         re.I | re.M)
_MAC_PART = re.compile(r"[A-Za-z2-7]{10}")
MAX_REFS = 20
_VERP_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "X-Delivered-To", "To")
_NOT_SPAM = {"not-spam"}
_GROUPED = {"message/delivery-status", "message/feedback-report"}
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_REPORT_PARTS = _GROUPED | {"message/rfc822", "text/rfc822-headers"}
_DAEMONS = {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mdaemon", ""}
_EXCHANGE = re.compile(r"^[ \t]*<?([^\s<>@]+@[^\s<>@]+?)>?[ \t]*\n(?:[ \t]*\n)*[ \t]*"
                       r"#(\d{3})[ \t]+([245]\.\d{1,3}\.\d{1,3})[ \t]*([^#\n]*)##", re.M)
_TAG = re.compile(r"<[^>]*>")
_DAEMON_NAME = re.compile(r"mail delivery|postmaster|mailer|delivery (status|subsystem|system)", re.I)


@dataclass(frozen=True)
class Finding:
    """What the message says about one recipient."""

    recipient: str                  # lower-case address, as the report names it
    kind: BounceKind                # hard | soft | blocked | delayed | complaint
    status: str | None = None       # RFC 3463 code, when the report gives one
    detail: str | None = None       # the MTA's own words


@dataclass(frozen=True)
class BounceReport:
    kind: BounceKind
    findings: tuple[Finding, ...] = ()
    refs: tuple[str, ...] = ()      # candidate delivery refs, VERP first
    message_ids: tuple[str, ...] = ()   # Message-IDs of ours quoted in it ("<slug.REF.nonce@domain>")
    key: str = ""                   # stable id of this message (its Message-ID, else its bytes)
    at: datetime | None = None      # its Date
    reader: str = ""                # which reader understood it: arf, dsn, flufl:<detector>, auto-reply
    subject: str = ""

    @property
    def recipients(self) -> list[str]:
        return sorted({f.recipient for f in self.findings})


def parse_bytes(data: bytes) -> BounceReport:
    """The report for one message in RFC 5322 form (as stored in mbox, Maildir or IMAP).

    Standard reports (DSN, ARF) take a quick path: headers parsed, the top-level parts split on
    their boundary by hand, only the report parts parsed. The stdlib parser compiles a regular
    expression per multipart boundary, and real bounces each have their own: that alone would
    be most of a scan's time. Anything else gets the full parse that flufl.bounce expects.
    """
    head = email.parser.BytesParser().parsebytes(data, headersonly=True)
    tree = _quick_tree(head)
    if tree is not None:
        for reader in (_arf, _dsn):
            found = reader(tree)
            if found is not None:
                return _report(found[0], found[1], _base(head, data))
    msg = email.message_from_bytes(data)            # compat32 Message: what flufl.bounce expects
    return parse_message(msg, data)


def _base(msg: Message, data: bytes) -> dict:
    body = data or msg.as_bytes()
    mids = _our_message_ids(body)
    return {"refs": _refs(msg, body, mids), "message_ids": tuple(mids), "key": _message_key(msg, data),
            "at": _date(msg), "subject": _text(msg.get("Subject"))[:200]}


def _quick_tree(head: Message) -> Message | None:
    """A multipart/report's top-level parts, with its report parts parsed into header groups; None
    when the message is anything else or its report parts are encoded (the full parse reads it)."""
    if head.get_content_type() != "multipart/report":
        return None
    boundary, body = head.get_boundary(), head.get_payload()
    if not boundary or not isinstance(body, str):
        return None
    chunks = ("\n" + body.replace("\r\n", "\n")).split("\n--" + boundary)
    parts: list[Message | str] = []
    for chunk in chunks[1:]:
        if chunk.startswith("--"):
            break
        headers, _, text = chunk.partition("\n")[2].partition("\n\n")
        part = _header_block(headers)
        ctype = part.get_content_type()
        if ctype in _REPORT_PARTS:
            if (part.get("Content-Transfer-Encoding") or "7bit").strip().lower() not in ("7bit", "8bit", "binary"):
                return None
            payload: list[Message | str] = []
            payload += _groups_from_text(text) if ctype in _GROUPED else [_header_block(text.partition("\n\n")[0])]
            part.set_payload(payload)
        parts.append(part)
    head.set_payload(parts)
    return head


def parse_message(msg: Message, data: bytes = b"") -> BounceReport:
    base = _base(msg, data)
    for read in (_arf, _dsn):
        found = read(msg)
        if found is not None:
            return _report(found[0], found[1], base)
    if _is_auto_reply(msg):
        return BounceReport(kind=BounceKind.IGNORED, reader="auto-reply", **base)
    findings = _exchange(msg)
    if findings:
        return _report(findings, "exchange", base)
    findings, reader = _flufl(msg)
    if findings:
        return _report(findings, reader, base)
    if _auto_submitted(msg):
        return BounceReport(kind=BounceKind.IGNORED, reader="auto-reply", **base)
    return BounceReport(kind=BounceKind.UNRECOGNIZED, reader="", **base)


def _report(findings: list[Finding], reader: str, base: dict) -> BounceReport:
    if not findings:
        return BounceReport(kind=BounceKind.IGNORED, reader=reader, **base)
    unique = {(f.recipient, f.kind): f for f in findings}.values()
    kind = max((f.kind for f in unique), key=RANK.__getitem__)
    return BounceReport(kind=kind, findings=tuple(unique), reader=reader, **base)


# ------------------------------------------------------------------------------ classification

def classify(status: str | None, text: str | None = "", *, smtp_code: str | None = None) -> BounceKind:
    """hard | soft | blocked for a failed recipient, from its status code and the MTA's words.

    4.x.x and mailbox-full (x.2.2; the words only when there is no code) are soft; x.7.x and
    policy/spam/reputation words are blocks (the message or our sending was refused, not the
    address); message-size and content refusals (x.2.3, x.3.4, x.6.x) are blocks too; any other
    permanent failure is hard.
    """
    text = text or ""
    m = _STATUS.search(status or "") or _STATUS.search(text)
    klass, subject, detail = (m.group(1), m.group(2), m.group(3)) if m else (smtp_code or _smtp_class(text), "", "")
    if klass == "4":
        return BounceKind.SOFT
    if (subject, detail) == ("2", "2") or (not m and _FULL.search(text) and not _UNKNOWN.search(text)):
        return BounceKind.SOFT
    if subject == "1" or (subject, detail) in {("2", "1"), ("4", "4")}:
        return BounceKind.HARD
    if subject in ("6",) or (subject, detail) in {("2", "3"), ("3", "4")}:
        return BounceKind.BLOCKED
    if _UNKNOWN.search(text):
        return BounceKind.HARD
    if subject == "7" or _BLOCK.search(text):
        return BounceKind.BLOCKED
    return BounceKind.HARD if klass in ("5", "", None) else BounceKind.SOFT


def _smtp_class(text: str) -> str:
    m = _SMTP_CODE.search(text)
    return m.group(1) if m else ""


# ------------------------------------------------------------------------------ readers

def _arf(msg: Message) -> tuple[list[Finding], str] | None:
    if msg.get_content_type() != "multipart/report" or \
            collapse_rfc2231_value(msg.get_param("report-type") or "").lower() != "feedback-report":
        return None
    fields, original = Message(), None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/feedback-report":
            fields = _fields_of(part)
        elif ctype in ("message/rfc822", "text/rfc822-headers") and original is None:
            original = _enclosed(part)
    if (fields.get("Feedback-Type") or "abuse").strip().lower() in _NOT_SPAM:
        return [], "arf"
    addresses = fields.get_all("Original-Rcpt-To") or []
    if not addresses and original is not None:
        addresses = original.get_all("To") or []
    found = [Finding(a, BounceKind.COMPLAINT, None, (fields.get("Feedback-Type") or "abuse").strip())
             for a in _addresses(addresses)]
    return found, "arf"


def _dsn(msg: Message) -> tuple[list[Finding], str] | None:
    groups = None
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            groups = [g for g in (part.get_payload() or []) if isinstance(g, Message)]
            if not groups:                       # some MTAs mislabel it as a single text body
                groups = _groups_from_text(_decoded(part))
            break
    if groups is None:
        return None
    found = []
    for group in groups:
        action = (group.get("Action") or "").strip().lower()
        recipient = _dsn_address(group)
        if not recipient or not action:
            continue
        status = (group.get("Status") or "").strip()
        diagnostic = _text(group.get("Diagnostic-Code"))
        if action.startswith("delayed"):
            found.append(Finding(recipient, BounceKind.DELAYED, status or None, diagnostic or None))
        elif action.startswith(("fail", "error")):
            found.append(Finding(recipient, classify(status, diagnostic), status or None, diagnostic or None))
    if not found and not any(g.get("Action") for g in groups):
        return None                              # a delivery-status part with no groups: try the others
    return found, "dsn"


def _dsn_address(group: Message) -> str:
    """Original-Recipient (the address as we sent it), else Final-Recipient (the address the MTA
    tried, after aliases and forwarding); `rfc822;` types only."""
    for name in ("Original-Recipient", "Final-Recipient"):
        value = _text(group.get(name))
        kind, _, address = value.partition(";")
        if not address:
            kind, address = "rfc822", kind
        if kind.strip().lower() == "rfc822":
            found = _addresses([address])
            if found:
                return found[0]
    return ""


def _groups_from_text(raw: bytes | str) -> list[Message]:
    text = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw).replace("\r\n", "\n")
    return [_header_block(block) for block in _BLANK_LINE.split(text.strip("\n")) if block.strip()]


def _header_block(text: str) -> Message:
    """A block of `Name: value` lines (folded lines joined) as a Message: a report's field groups
    and a part's headers. Lines that are not fields are skipped, as the stdlib parser does."""
    msg = Message()
    name, value = None, []
    for line in text.split("\n"):
        if line[:1] in (" ", "\t") and name is not None:
            value.append(line)
            continue
        if name is not None:
            msg[name] = "\n".join(value).rstrip()
            name = None
        field, colon, rest = line.partition(":")
        if colon and field and " " not in field.strip():
            name, value = field.strip(), [rest.lstrip()]
    if name is not None:
        msg[name] = "\n".join(value).rstrip()
    return msg


def _is_auto_reply(msg: Message) -> bool:
    """Vacation and out-of-office replies (RFC 3834 `Auto-Submitted: auto-replied` from a person's
    mailbox, the vendors' own headers, or the usual subjects); never a daemon's failure notice."""
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or \
            (msg.get("Precedence") or "").strip().lower() == "auto_reply":
        return True
    if _AUTO_SUBJECT.search(_text(msg.get("Subject"))):
        return True
    daemon = _from_daemon(msg)
    return (msg.get("Auto-Submitted") or "").strip().lower().startswith("auto-replied") and not daemon


def _auto_submitted(msg: Message) -> bool:
    """RFC 3834 `Auto-Submitted: auto-replied`, whoever sent it (a vacation reply may come from the
    null sender, as a daemon's notice does): asked only once no reader found a failure in it."""
    return (msg.get("Auto-Submitted") or "").strip().lower().startswith("auto-replied")


def _exchange(msg: Message) -> list[Finding]:
    """Exchange 2007/2010's prose-only NDR: under "Diagnostic information for administrators",
    each recipient's address on a line, then `#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##`."""
    found = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        text = _part_text(part)
        if ctype == "text/html":
            text = html.unescape(_TAG.sub("\n", text))
        for address, code, status, words in _EXCHANGE.findall(text.replace("\r\n", "\n")):
            detail = f"{code} {status} {words.strip()}".strip()
            found += [Finding(a, classify(status, detail), status, detail) for a in _addresses([address])]
    return found


def _from_daemon(msg: Message) -> bool:
    """Sent by a mail system (null or MAILER-DAEMON return path, postmaster, "Mail Delivery ...")."""
    return_path = parseaddr(_text(msg.get("Return-Path")))[1].lower()
    name, sender = parseaddr(_text(msg.get("From")))
    local = sender.lower().split("@")[0]
    return (not return_path and msg.get("Return-Path") is not None) or return_path.startswith("mailer-daemon") \
        or local in _DAEMONS or bool(_DAEMON_NAME.search(name))


def _flufl(msg: Message) -> tuple[list[Finding], str]:
    answer = flufl_failures(msg)
    if answer is None:
        return [], ""
    name, temporary, permanent = answer
    found = [Finding(a, BounceKind.HARD) for a in _addresses(_decode(permanent))]
    found += [Finding(a, BounceKind.DELAYED) for a in _addresses(_decode(temporary))]
    return found, f"flufl:{name}"


def flufl_failures(msg: Message) -> tuple[str, frozenset, frozenset] | None:
    """The first of flufl.bounce's detectors that reads `msg`: (its name, temporary, permanent
    failures), or None.

    The adapter for flufl.bounce's private detector list. Its public `all_failures()` runs the same
    detectors in the same order, but logs every one at INFO, lets one that trips over odd mail end
    the whole scan (raising), and does not say which detector answered (our reports name it). So
    the list is read here, and only here; tests/test_library_contracts.py fails, naming
    flufl.bounce's version, if the list goes or stops agreeing with `all_failures()`.
    """
    for detector in _DETECTORS:
        try:
            temporary, permanent = detector().process(msg)
        except Exception:  # noqa: BLE001 - a detector tripping over odd mail is "not this one"
            continue
        if temporary or permanent:
            return detector.__name__.lower(), frozenset(temporary), frozenset(permanent)
    return None


# ------------------------------------------------------------------------------ helpers

def _fields_of(part: Message) -> Message:
    payload = part.get_payload()
    if isinstance(payload, list):
        merged = Message()
        for block in payload:
            for k, v in block.items() if isinstance(block, Message) else ():
                merged[k] = v
        return merged
    return email.message_from_string(_decoded(part).decode("utf-8", "replace"))


def _part_text(part: Message) -> str:
    raw = _decoded(part)
    try:
        return raw.decode(part.get_content_charset() or "utf-8", "replace")
    except LookupError:                          # a charset Python does not know
        return raw.decode("utf-8", "replace")


def _decoded(part: Message) -> bytes:
    """A leaf part's body, transfer-decoded (b"" for a multipart, whose payload is its parts)."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _enclosed(part: Message) -> Message | None:
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload and isinstance(payload[0], Message) else None
    return email.message_from_bytes(_decoded(part))


def _refs(msg: Message, body: bytes, mids: list[str]) -> tuple[str, ...]:
    """Candidate refs: the VERP address, then X-Mailer-Ref and our Message-IDs quoted anywhere in
    the message (at most MAX_REFS: a forged report may quote thousands)."""
    found: list[str] = []
    for name in _VERP_HEADERS:
        for value in msg.get_all(name) or []:
            found += _VERP.findall(_text(value))
    found += [m.decode("ascii") for m in _REF_HEADER.findall(body)]
    found += [ref for ref in (ref_in_message_id(mid) for mid in mids) if ref]
    return tuple(dict.fromkeys(found))[:MAX_REFS]


def _our_message_ids(body: bytes) -> list[str]:
    """Message-IDs quoted in the message that have the shape of ours (mailer/compose/personalize.py:
    `<slug.REF.nonce@domain>`), at most MAX_REFS."""
    found = [m.decode("ascii", "replace") for m in _MESSAGE_ID.findall(body)]
    return list(dict.fromkeys(mid for mid in found if ref_in_message_id(mid)))[:MAX_REFS]


def ref_in_message_id(mid: str) -> str | None:
    """The delivery ref inside one of our Message-IDs, `<slug.SEND.SUBSCRIBER[.MAC].nonce@domain>`."""
    parts = mid.strip("<>").rpartition("@")[0].split(".")
    if len(parts) >= 5 and _MAC_PART.fullmatch(parts[-2]) and parts[-4].isdigit() and parts[-3].isdigit():
        return ".".join(parts[-4:-1])
    if len(parts) >= 4 and parts[-3].isdigit() and parts[-2].isdigit():
        return ".".join(parts[-3:-1])
    return None


def _message_key(msg: Message, data: bytes) -> str:
    mid = _text(msg.get("Message-ID")).strip()
    basis = mid.encode("utf-8") if mid else (data or msg.as_bytes())
    return hashlib.sha256(basis).hexdigest()[:32]


def _date(msg: Message) -> datetime | None:
    try:
        at = parsedate_to_datetime(_text(msg.get("Date")))
    except (TypeError, ValueError, IndexError):
        return None
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _addresses(values) -> list[str]:
    out = []
    for value in values:
        address = parseaddr(_text(value).strip())[1].strip("<> ").lower()
        if "@" in address and " " not in address:
            out.append(address)
    return list(dict.fromkeys(out))


def _decode(addresses) -> list[str]:
    return [a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in addresses]


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.split())
    return " ".join(str(value).split())


# ------------------------------------------------------------------------------ events

_EVENT = {BounceKind.HARD: (EventType.BOUNCED, Severity.HARD), BounceKind.SOFT: (EventType.BOUNCED, Severity.SOFT),
          BounceKind.BLOCKED: (EventType.BLOCKED, None), BounceKind.DELAYED: (EventType.DEFERRED, None),
          BounceKind.COMPLAINT: (EventType.COMPLAINED, None)}


def event_for(report: BounceReport, finding: Finding, recipient: str, *, send_ref: str | None,
              issue: str | None, now: datetime) -> DeliveryEvent:
    """One normalized event; its id is stable per message and recipient (rescans dedupe on it)."""
    kind, severity = _EVENT[finding.kind]
    event_id = "bm-" + hashlib.sha256(f"{report.key}\n{recipient}".encode()).hexdigest()[:40]
    return DeliveryEvent(type=kind, recipient=recipient, at=report.at or now, source=SOURCE,
                         event_id=event_id, severity=severity,
                         detail=" ".join(x for x in (finding.status, finding.detail) if x) or report.subject or None,
                         issue=issue, send_ref=send_ref,
                         raw={"reader": report.reader, "kind": finding.kind, "reported": finding.recipient,
                              "status": finding.status, "subject": report.subject})
