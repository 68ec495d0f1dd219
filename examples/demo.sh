#!/usr/bin/env bash
# The main job end to end on the embedded defaults (outbox folder, local Maildir, SQLite):
# no server needed. Runs in a fresh temporary folder; pass a folder to keep it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
outreach="${OUTREACH:-$(cd "$here/.." && pwd)/.venv/bin/outreach}"
demo="${1:-$(mktemp -d)/campaign}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "outreach init $demo"
"$outreach" init "$demo"
cd "$demo"

step "outreach import prospects.csv (two rows are bad on purpose)"
"$outreach" import "$here/prospects.csv" || true

step "outreach prospects --icp cfo-manufacturing"
"$outreach" prospects --icp cfo-manufacturing

step "outreach enroll referral"
"$outreach" enroll referral

step "outreach check (renders every step's template for every enrolled prospect)"
"$outreach" check

step "outreach preview ava.nguyen@northwind-castings.example (the exact bytes that will go out)"
"$outreach" preview ava.nguyen@northwind-castings.example | tr -d '\r'

step "outreach send --ignore-window (into the outbox/ folder: no SMTP server needed)"
"$outreach" send --ignore-window

step "one message from outbox/"
ls outbox | head -3
tr -d '\r' < "$(ls outbox/*.eml | head -1)"

step "outreach send again: nothing goes twice"
"$outreach" send --ignore-window

step "outreach calls --hour (the next power hour: one persona, each call with its script)"
"$outreach" calls --hour

step "outreach call ID --outcome meeting (the first call of the hour books a meeting)"
first="$("$outreach" calls --hour --json | python3 -c 'import json, sys; t = json.load(sys.stdin)[0]; print(t["id"], t["email"])')"
"$outreach" call "${first% *}" --outcome meeting --note "demo: Tuesday 10am"
"$outreach" status "${first#* }"

step "outreach calls --format ics > calls.ics (the rest of the list, for a calendar app)"
"$outreach" calls --format ics > calls.ics
tr -d '\r' < calls.ics | sed -n 1,16p
echo "... $(grep -c BEGIN:VEVENT calls.ics) calls in calls.ics"

step "replies arrive: a reply, an out-of-office, a bounce and a referral land in mail/ (the local Maildir)"
python3 - <<'PY'
import mailbox
from datetime import date, timedelta
from email import policy
from email.parser import BytesParser
from email.utils import make_msgid, parseaddr
from pathlib import Path

sent = [BytesParser(policy=policy.default).parsebytes(p.read_bytes())
        for p in sorted(Path("outbox").glob("*.eml"))[1:5]]
box = mailbox.Maildir("mail", create=True)


def answer(original, body, subject=None, extra=""):
    name, addr = parseaddr(str(original["To"]))
    quoted = "\n".join("> " + line for line in original.get_content().splitlines())
    return (f"From: {name} <{addr}>\nTo: {original['From']}\n"
            f"Subject: {subject or 'Re: ' + str(original['Subject'])}\n"
            f"Message-ID: {make_msgid(domain=addr.split('@')[1])}\n"
            f"In-Reply-To: {original['Message-ID']}\nReferences: {original['Message-ID']}\n{extra}"
            f"Content-Type: text/plain; charset=utf-8\n\n{body}\n\n"
            f"On Mon, {original['Date']}, {original['From']} wrote:\n{quoted}\n")


back = date.today() + timedelta(days=7)
reply, away, bounced, referrer = sent
box.add(answer(reply, "Good timing, this is on my list for the quarter. Can we talk Thursday at 10?"))
box.add(answer(away, f"I am out of the office until {back:%B %d, %Y} with limited access to email.",
               subject="Automatic reply: " + str(away["Subject"]),
               extra="Auto-Submitted: auto-replied\n"))
domain = parseaddr(str(referrer["To"]))[1].split("@")[1]
box.add(answer(referrer, f"I'm not the right person for this. Talk to Sam Lee, sam.lee@{domain}, "
               "who runs our finance operations."))
rcpt = parseaddr(str(bounced["To"]))[1]
box.add(f"""From: MAILER-DAEMON@mx.acme.example (Mail Delivery System)
To: {bounced['From']}
Subject: Undelivered Mail Returned to Sender
Message-ID: {make_msgid(domain='mx.acme.example')}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

<{rcpt}>: host mx said: 550 5.1.1 User unknown

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.acme.example

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: 5.1.1

--b
Content-Type: text/rfc822-headers

Message-ID: {bounced['Message-ID']}

--b--
""")
for label, m in zip(("reply", "out-of-office", "bounce", "referral"), sent, strict=True):
    print(f"  {label:14} about {parseaddr(str(m['To']))[1]}")
PY

step "outreach poll (reads mail/ once: stops, pauses, suppresses, adds the referral)"
"$outreach" poll

step "outreach poll again: each message is handled once"
"$outreach" poll

step "outreach status of the person named in the referral (new prospect, referrer set, enrolled)"
referred="$("$outreach" prospects --json | python3 -c 'import json, sys; print([p["email"] for p in json.load(sys.stdin) if p["referrer_id"]][0])')"
"$outreach" status "$referred"

step "outreach stats --by variant --html report.html (the funnel; open report.html in a browser)"
"$outreach" stats --by variant --html report.html

step "done: everything the demo made is in $demo"
echo "campaign:  $demo/outreach.toml (templates/, outbox/, mail/, outreach.db beside it)"
echo "report:    $demo/report.html (open it in a browser)"
echo "try more:  cd $demo && $outreach status ava.nguyen@northwind-castings.example"
