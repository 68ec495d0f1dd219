"""One exception family: every user-facing failure is an OutreachError whose message starts
with the thing at fault (a file and key, a CSV line, a template) and says what to do."""


class OutreachError(Exception):
    """A user error: bad input, bad config, a refused action; printed without a traceback."""


class ConfigError(OutreachError):
    """outreach.toml is missing, unreadable or holds a wrong key, type or value."""


class ImportFileError(OutreachError):
    """A prospect file as a whole cannot be imported (not CSV, no email column)."""


class StoreError(OutreachError):
    """The state database cannot be opened or is from a newer outreach."""


class TemplateError(OutreachError):
    """A template is missing, does not parse, or does not render for a prospect."""


class TransportError(OutreachError):
    """The SMTP server or outbox cannot be used (login refused, folder not writable)."""


class MailboxError(OutreachError):
    """The IMAP server or Maildir cannot be read (login refused, folder missing)."""


class LockedError(OutreachError):
    """Another outreach process holds the lock this command needs."""
