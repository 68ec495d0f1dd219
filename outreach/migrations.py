"""Numbered, append-only schema migrations (SQL). Never edit one that has shipped: add the next.

One history for both engines: a migration is SQLite DDL that the PostgreSQL engine translates
(row ids from an identity, 64-bit integers), or a `PerEngine` pair where the SQL must differ.
`PRAGMA user_version` (SQLite) or `schema_version` (PostgreSQL) records how many have run.
Times are ISO 8601 UTC text (sortable). Emails are stored lower-cased; a suppression target is
an address or "@domain".
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class PerEngine:
    """A migration whose SQL must differ between the engines."""

    sqlite: str
    postgresql: str


M001_INITIAL = """
        CREATE TABLE prospects (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL UNIQUE,
            first_name TEXT NOT NULL DEFAULT '',
            last_name TEXT NOT NULL DEFAULT '',
            title TEXT NOT NULL DEFAULT '',
            company TEXT NOT NULL DEFAULT '',
            domain TEXT NOT NULL DEFAULT '',
            industry TEXT NOT NULL DEFAULT '',
            employees INTEGER,
            country TEXT NOT NULL DEFAULT '',
            timezone TEXT NOT NULL DEFAULT '',
            phone TEXT NOT NULL DEFAULT '',
            last_activity TEXT,
            custom TEXT NOT NULL DEFAULT '{}',
            stage TEXT NOT NULL DEFAULT 'prospect',
            referrer_id INTEGER REFERENCES prospects(id),
            phone_bad INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX prospects_domain ON prospects(domain);

        CREATE TABLE suppressions (
            target TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at TEXT NOT NULL
        );

        -- state: active | paused | replied | won | stopped | recycled | bounced |
        --        unsubscribed | completed
        CREATE TABLE enrollments (
            id INTEGER PRIMARY KEY,
            prospect_id INTEGER NOT NULL REFERENCES prospects(id),
            sequence TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'active',
            next_step INTEGER NOT NULL DEFAULT 0,
            started_at TEXT NOT NULL,
            paused_until TEXT,
            ended_at TEXT,
            end_reason TEXT,
            variants TEXT NOT NULL DEFAULT '{}'
        );
        CREATE UNIQUE INDEX enrollments_one_open ON enrollments(prospect_id)
            WHERE state IN ('active', 'paused');
        CREATE INDEX enrollments_state ON enrollments(state, sequence);

        -- The at-most-once ledger: the row is written (status 'intent') before the message
        -- is handed to a transport; 'sent' after the server accepted it. 'unknown' means
        -- the fate could not be learned and the message is never resent automatically.
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            enrollment_id INTEGER NOT NULL REFERENCES enrollments(id),
            step INTEGER NOT NULL,
            template TEXT NOT NULL,
            variant TEXT,
            message_id TEXT NOT NULL UNIQUE,
            subject TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT,
            UNIQUE (enrollment_id, step),
            -- Each template goes once per enrollment, even if the sequence's steps move.
            UNIQUE (enrollment_id, template)
        );
        CREATE INDEX messages_sent_at ON messages(sent_at);

        -- Every inbound message handled, so it is handled once.
        CREATE TABLE inbound (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            key TEXT NOT NULL,
            uidvalidity INTEGER,
            uid INTEGER,
            message_id TEXT,
            prospect_id INTEGER REFERENCES prospects(id),
            kind TEXT,
            detail TEXT,
            received_at TEXT NOT NULL,
            UNIQUE (source, key)
        );
        CREATE INDEX inbound_message_id ON inbound(message_id);

        CREATE TABLE mailbox_state (
            source TEXT PRIMARY KEY,
            uidvalidity INTEGER,
            last_uid INTEGER NOT NULL DEFAULT 0
        );

        CREATE TABLE call_tasks (
            id INTEGER PRIMARY KEY,
            enrollment_id INTEGER NOT NULL REFERENCES enrollments(id),
            prospect_id INTEGER NOT NULL REFERENCES prospects(id),
            step INTEGER NOT NULL,
            template TEXT NOT NULL,
            due_at TEXT NOT NULL,
            script TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open',
            outcome TEXT,
            note TEXT,
            done_at TEXT,
            UNIQUE (enrollment_id, step)
        );
        CREATE INDEX call_tasks_open ON call_tasks(status, due_at);
        CREATE INDEX call_tasks_prospect ON call_tasks(prospect_id, status);

        CREATE TABLE stage_history (
            id INTEGER PRIMARY KEY,
            prospect_id INTEGER NOT NULL REFERENCES prospects(id),
            old TEXT,
            new TEXT NOT NULL,
            cause TEXT NOT NULL,
            at TEXT NOT NULL
        );

        -- The timeline: every import, enrollment, send, reply, call and suppression.
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            prospect_id INTEGER REFERENCES prospects(id),
            enrollment_id INTEGER REFERENCES enrollments(id),
            kind TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}',
            at TEXT NOT NULL
        );
        CREATE INDEX events_prospect ON events(prospect_id, at);
        CREATE INDEX events_kind ON events(kind, at);

        -- Leases that keep two sending (or polling) processes apart.
        CREATE TABLE locks (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            pid INTEGER NOT NULL,
            expires_at TEXT NOT NULL
        );
"""

# The key of the List-Unsubscribe tokens (an HMAC of the address), made here once per
# database from SQLite's randomness (the OS's) and never written anywhere else. `legacy` marks
# the last message sent before it existed: those carried the old unkeyed token, which stays
# accepted for their prospects only.
M002_UNSUBSCRIBE_SECRET_SQLITE = """
        CREATE TABLE secrets (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        INSERT INTO secrets (name, value) VALUES ('unsubscribe', lower(hex(randomblob(32))));
        INSERT INTO secrets (name, value)
            SELECT 'unsubscribe_legacy_until_message', coalesce(max(id), 0) FROM messages;
"""

# PostgreSQL has no randomblob(): two random UUIDs (gen_random_uuid, the server's strong
# random source) give 64 hex digits, 244 random bits.
M002_UNSUBSCRIBE_SECRET = PerEngine(sqlite=M002_UNSUBSCRIBE_SECRET_SQLITE, postgresql="""
        CREATE TABLE secrets (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        INSERT INTO secrets (name, value) VALUES ('unsubscribe',
            replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
        INSERT INTO secrets (name, value)
            SELECT 'unsubscribe_legacy_until_message', coalesce(max(id), 0)::text FROM messages;
""")

# Team mode: several reps (each an own outreach.toml) share one database. A prospect has one
# owner (the rep who first enrolled it) and sticks to the mailbox that sent its first email;
# every enrollment and message says which rep (and mailbox) it is, for the per-rep and
# per-mailbox limits and stats. NULL is a row from before team mode: anyone's.
M003_TEAM = """
        ALTER TABLE prospects ADD COLUMN owner TEXT;
        ALTER TABLE prospects ADD COLUMN mailbox TEXT;
        ALTER TABLE enrollments ADD COLUMN rep TEXT;
        ALTER TABLE messages ADD COLUMN rep TEXT;
        ALTER TABLE messages ADD COLUMN mailbox TEXT;
        CREATE INDEX prospects_owner ON prospects(owner);
        CREATE INDEX messages_created_at ON messages(created_at);
"""

# A sender stops a queued message whose prospect another process suppressed mid-run, asking
# the database only when a suppression may have been written. On PostgreSQL every new
# suppression, whoever writes it, notifies the channel `outreach_suppressions` (its target as
# the payload) when it commits; the sender LISTENs. SQLite needs nothing: PRAGMA data_version.
M004_SUPPRESSION_NOTIFY = PerEngine(sqlite="", postgresql="""
        CREATE FUNCTION outreach_suppression_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('outreach_suppressions', NEW.target);
            RETURN NULL;
        END $$;
        CREATE TRIGGER suppressions_notify AFTER INSERT ON suppressions
            FOR EACH ROW EXECUTE FUNCTION outreach_suppression_notify();
""")

# Several `send` processes of one rep at once (numbered as assigned; it runs fifth): each run
# has an id, its intents carry it, and the run holds a lease on that id while it lives, so
# another process tells a dead run's intents (to settle) from a live one's (on the wire now).
# NULL: a run from before.
M005_SEND_RUNS = """
        ALTER TABLE messages ADD COLUMN run TEXT;
        CREATE INDEX messages_intents ON messages(run) WHERE status = 'intent';
"""

# Each claim of intents counts the team's messages of the day to the chunk's email domains
# ([team] max_emails_per_domain_per_day): from those domains' prospects (an index on the
# address's domain, the expression `Ledger.claim_steps` filters on; not `prospects.domain`,
# which is the company's website when the import had one) to their enrollments and messages,
# so a claim reads those domains' rows, not every message of the day.
M006_DOMAIN_COUNTS = PerEngine(sqlite="""
        CREATE INDEX prospects_email_domain ON prospects(substr(email, instr(email, '@') + 1));
        CREATE INDEX enrollments_prospect ON enrollments(prospect_id);
""", postgresql="""
        CREATE INDEX prospects_email_domain ON prospects(substr(email, strpos(email, '@') + 1));
        CREATE INDEX enrollments_prospect ON enrollments(prospect_id);
""")

# Each entry runs once, in its own transaction, in this order.
MIGRATIONS: tuple[str | PerEngine, ...] = (M001_INITIAL, M002_UNSUBSCRIBE_SECRET, M003_TEAM,
                                           M004_SUPPRESSION_NOTIFY, M005_SEND_RUNS,
                                           M006_DOMAIN_COUNTS)
