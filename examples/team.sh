#!/usr/bin/env bash
# A team of two reps end to end: Dana and Sam each keep an own campaign folder and
# outreach.toml, and both name one shared database. Sam sends from two mailboxes. Runs on the
# embedded defaults (outbox folders, local Maildirs, one SQLite file): no server needed. Runs in
# a fresh temporary folder; pass a folder to keep it. With --postgresql the two share a
# PostgreSQL database instead, on a private server started here and stopped at the end
# (Debian's postgresql package; needs `pip install -e '.[postgresql]'`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
outreach="${OUTREACH:-$here/../.venv/bin/outreach}"
store=""
if [ "${1:-}" = "--postgresql" ]; then
  shift
  read -r store pgroot < <(cd "$here/.." && "$(dirname "$outreach")/python" -m tests.postgres start)
  trap 'cd "$here/.." && "$(dirname "$outreach")/python" -m tests.postgres stop "$pgroot"' EXIT
fi
team="${1:-$(mktemp -d)/team}"
export TEAM_STORE="$store"
database="${store:-$team/team.db}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "outreach init $team/dana and $team/sam: two reps, one database ($database)"
"$outreach" init "$team/dana" >/dev/null
"$outreach" init "$team/sam" >/dev/null
python3 - "$team" <<'PY'
import os
import sys
from pathlib import Path

team = Path(sys.argv[1])
for rep in ("dana", "sam"):
    path = team / rep / "outreach.toml"
    text = path.read_text(encoding="utf-8")
    url = os.environ["TEAM_STORE"]   # --postgresql: the team's database on the server
    text = text.replace('path = "outreach.db"',
                        f'url = "{url}"' if url else f'path = "{team / "team.db"}"', 1)
    if rep == "sam":
        text = text.replace('name = "Dana Reyes"', 'name = "Sam Ortiz"', 1)
        text = text.replace('email = "dana@acme.example"', 'email = "sam@acme.example"', 1)
        # Two mailboxes instead of [smtp] and [imap]: the second is new, so it warms up.
        start, end = text.index("\n[smtp]"), text.index("\n# Several mailboxes")
        text = text[:start] + """
[[mailboxes]]
email = "sam@acme.example"
daily_limit = 8
[mailboxes.smtp]
outbox = "outbox-acme"
[mailboxes.imap]
maildir = "mail-acme"

[[mailboxes]]
email = "sam@acme-reach.example"
daily_limit = 40
ramp_start = 4                  # a new mailbox: 4 on its first day, 2 more each day after
ramp_step = 2
[mailboxes.smtp]
outbox = "outbox-reach"
[mailboxes.imap]
maildir = "mail-reach"
""" + text[end:]
    path.write_text(text, encoding="utf-8")
PY
sed -n '/^\[\[mailboxes\]\]/,/^maildir = "mail-reach"/p' "$team/sam/outreach.toml"

step "dana: outreach import prospects.csv (into the team's database; two rows are bad on purpose)"
cd "$team/dana"
"$outreach" import "$here/prospects.csv" || true

step "dana: outreach enroll referral --limit 5 (Dana owns the prospects she enrolls)"
"$outreach" enroll referral --limit 5

step "sam: outreach enroll referral (skips, and counts, the ones Dana works)"
cd "$team/sam"
"$outreach" enroll referral

step "sam: outreach prospects --owner dana@acme.example"
"$outreach" prospects --owner dana@acme.example

step "dana: outreach send --ignore-window"
cd "$team/dana"
"$outreach" send --ignore-window

step "sam: outreach send --ignore-window (two mailboxes, each within its limit and ramp; at most 3 emails a day to one company from the whole team)"
cd "$team/sam"
"$outreach" send --ignore-window || true
echo "outbox-acme/:  $(ls outbox-acme | wc -l) messages, $(grep -h '^From:' outbox-acme/*.eml | sort -u)"
echo "outbox-reach/: $(ls outbox-reach | wc -l) messages, $(grep -h '^From:' outbox-reach/*.eml | sort -u)"

step "one of Sam's prospects unsubscribes; the mail lands in Dana's inbox (mail/)"
victim="$(grep -h '^To:' "$team"/sam/outbox-*/*.eml | head -1 | sed 's/.*<\(.*\)>.*/\1/')"
python3 - "$team/dana/mail" "$victim" <<'PY'
import mailbox
import sys
from email.message import EmailMessage

msg = EmailMessage()
msg["From"], msg["To"], msg["Subject"] = sys.argv[2], "unsubscribe@acme.example", "unsubscribe"
msg.set_content("Please take me off your list.\n")
mailbox.Maildir(sys.argv[1], create=True).add(msg)
print(f"  unsubscribe from {sys.argv[2]}")
PY

step "dana: outreach poll (suppresses for the whole team at once)"
cd "$team/dana"
"$outreach" poll

step "sam: outreach status $victim (Sam's sequence for them ended: nothing more goes to them)"
cd "$team/sam"
"$outreach" status "$victim" | head -6

step "outreach stats --by rep, then --by mailbox (the team's numbers, from either folder)"
"$outreach" stats --by rep | tail -4
"$outreach" stats --by mailbox --html "$team/report.html" | tail -5

step "done: everything the team demo made is in $team"
echo "reps:      $team/dana/outreach.toml and $team/sam/outreach.toml, one database $database"
echo "report:    $team/report.html (open it in a browser: Reps and Mailboxes tables)"
