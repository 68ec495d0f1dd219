#!/usr/bin/env bash
# The main job end to end on the embedded defaults (outbox folder, local Maildir, SQLite):
# no server needed. Runs in a fresh temporary folder; pass a folder to keep it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
outreach="${OUTREACH:-$here/../.venv/bin/outreach}"
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
