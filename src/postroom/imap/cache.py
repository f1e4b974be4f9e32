"""What a message row caches for IMAP, computed from the message's bytes in one pass.

`cached_texts(raw, prefix_octets)` gives the ENVELOPE and extended BODYSTRUCTURE text
(`imap.message`) and SEARCH's header text (`imap.search.header_cache`) of a stored message (`raw` is
the service's prefix of `prefix_octets` and the blob), as `mailstore.mailbox.CachedTexts`. Whoever
has the bytes in hand stores them with the message: APPEND, the migration, and the background fill
after a FETCH or SEARCH read uncached messages (`app.imap`). With them a FETCH of ENVELOPE or
BODYSTRUCTURE and a SEARCH on From, To, Cc, Bcc or Subject read no bytes.

`HEADER_OCTETS` is how much of a blob a header-only read (FETCH of headers, SEARCH on a header) takes;
the header text is cached only for a header that such a read sees whole, so cached and uncached
messages give the same answers.

*Security:* the bytes are anyone's who can send mail; `MessageView` bounds its work on them and never
raises, and the texts are bounded (`search.MAX_HEADER_CACHE`; ENVELOPE and BODYSTRUCTURE by the
view's bounds). Nothing here is a library's job: it only calls the room's own parser.
"""

from __future__ import annotations

from postroom.imap.message import MessageView
from postroom.imap.search import header_cache
from postroom.mailstore.mailbox import CachedTexts

HEADER_OCTETS = 262_144  # octets of a blob read for a header-only FETCH or SEARCH


def cached_texts(raw: bytes, prefix_octets: int = 0) -> CachedTexts:
    """The texts a message row caches, from the message's whole bytes (prefix and blob)."""
    view = MessageView(raw)
    return CachedTexts(
        envelope=view.envelope(),
        bodystructure=view.bodystructure(True),
        search_headers=header_cache(view, prefix_octets + HEADER_OCTETS),
    )
