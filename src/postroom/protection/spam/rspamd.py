"""Rspamd as Postroom's production spam engine, over its HTTP protocol (`/checkv2`, the controller).

`RspamdEngine.check` posts the message to the normal worker's `/checkv2` with the envelope and
connection in Rspamd's request headers (`IP`, `Helo`, `From`, one `Rcpt` per recipient, `User` for an
authenticated submitter, `Hostname` for the verified reverse name; absent when there is none, as
Rspamd's milter leaves it, and Rspamd looks for one itself), and maps the JSON answer with
`engine.to_verdict`:

- the action and score give the SCL: `no action` (and `greylist`, `soft reject`) 0-1, `add header`
  and `rewrite subject` 5 or 6 by score, `reject` 9; the GTUBE symbol is SCL 9 whatever the action;
  a message Rspamd's settings told it to skip (`is_skipped` with no action) is SCL -1;
- phishing is the sum of the scores of Rspamd's phishing and spoofing rules that fired (PHISHING,
  PHISHED_OPENPHISH, PHISHED_PHISHTANK, HACKED_WP_PHISHING, DBL_PHISH, DMARC_POLICY_REJECT and
  _QUARANTINE, SPOOF_DISPLAY_NAME, SPOOF_REPLYTO, OMOGRAPH_URL ...): PHISH from 4.5 or with spam, and
  HIGH_CONFIDENCE_PHISH from 7 (one phishing feed's hit) or with a reject;
- BCL comes from Postroom's bulk detector (`bulk.bulk_level`): Rspamd has none. Its content counts as
  spammy for the BCL from half its spam score.

`learn` posts a junk report to the controller's `/learnspam` and a not-junk report to `/learnham`
(with the controller's password); "already learned" (HTTP 208) is success.

One pooled `httpx.AsyncClient` serves every call; `aclose()` releases it. The Rspamd spam threshold
(`add header`, 6 by default) is a constructor argument, as Rspamd's answer does not carry it; the
reject threshold is the answer's `required_score`.

Failure: a connection refused or reset, a timeout (`timeout` seconds for the whole exchange, not per
read), an HTTP status other than 200, or an answer that is not Rspamd's JSON raise `EngineUnavailable`
("rspamd", reason). Nothing else escapes `check` or `learn`.

Security: Rspamd's answer is parsed as untrusted JSON with a size bound (`MAX_ANSWER_OCTETS`); only
its numbers, the action (one of a fixed list) and symbol names (bounded, printable) are kept. The
controller password is sent only to `controller_url` and never logged.
"""

from __future__ import annotations

import asyncio
import json
import math
import re

import httpx

from postroom.model.verdicts import EngineUnavailable, MessageFacts, SpamVerdict
from postroom.protection.mime import ParsedMessage
from postroom.protection.spam.bulk import bulk_level
from postroom.protection.spam.engine import Action, Thresholds, to_verdict

__all__ = ["PHISHING_SYMBOLS", "RspamdEngine"]

NAME = "rspamd"
MAX_ANSWER_OCTETS = 1_048_576  # a /checkv2 answer is a few KiB; more is not Rspamd's
MAX_CONNECTIONS = 64  # to one Rspamd, shared by every session of the process
PHISHING_SYMBOLS = frozenset(
    {
        "PHISHING",
        "PHISHED_OPENPHISH",
        "PHISHED_PHISHTANK",
        "PHISHED_GENERIC_SERVICE",
        "HACKED_WP_PHISHING",
        "DBL_PHISH",
        "DBL_ABUSE_PHISH",
        "DMARC_POLICY_REJECT",
        "DMARC_POLICY_QUARANTINE",
        "SPOOF_DISPLAY_NAME",
        "SPOOF_REPLYTO",
        "OMOGRAPH_URL",
    }
)
_SYMBOL = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_HEADER_VALUE = re.compile(r"[\x00-\x1f\x7f]")


class RspamdEngine:
    """Rspamd over HTTP; see the module docstring."""

    name = NAME

    def __init__(
        self,
        url: str,
        controller_url: str,
        *,
        password: str = "",
        timeout: float,
        spam_threshold: float = 6.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.controller_url = controller_url.rstrip("/")
        self.timeout = timeout
        self.spam_threshold = spam_threshold
        self._password = password
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS),
            trust_env=False,  # never through a proxy from the environment: Rspamd is ours
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def check(self, message: bytes, parsed: ParsedMessage, facts: MessageFacts) -> SpamVerdict:
        status, body = await self._post(f"{self.url}/checkv2", message, self._envelope(facts))
        if status != 200:
            raise EngineUnavailable(NAME, f"/checkv2 answered HTTP {status}: {_excerpt(body)}")
        answer = _json(body)
        try:
            action = Action(str(answer["action"]))
            score = _number(answer["score"])
            required = _number(answer.get("required_score", 15.0))
            raw_symbols = answer.get("symbols") or {}
            if not isinstance(raw_symbols, dict):
                raise ValueError("symbols is not an object")
            symbols = [
                (name, _number(value.get("score", 0.0)) if isinstance(value, dict) else 0.0)
                for name, value in raw_symbols.items()
                if isinstance(name, str) and _SYMBOL.fullmatch(name)
            ]
        except (KeyError, TypeError, ValueError) as error:
            raise EngineUnavailable(NAME, f"/checkv2 answer is not Rspamd's: {error}") from None
        thresholds = Thresholds(spam=min(self.spam_threshold, required), reject=required)
        names = {name for name, _ in symbols}
        bulk = bulk_level(parsed, facts, spammy=score >= thresholds.spam / 2)
        return to_verdict(
            engine=NAME,
            action=action,
            score=score,
            thresholds=thresholds,
            bcl=bulk.level,
            symbols=symbols,
            phish_score=sum(max(0.0, s) for name, s in symbols if name in PHISHING_SYMBOLS),
            gtube="GTUBE" in names,
            skipped=bool(answer.get("is_skipped")) and action is Action.NO_ACTION,
            reason=f"rspamd {action.value}, score {score:.2f} of {required:g}",
        )

    async def learn(self, message: bytes, *, spam: bool) -> None:
        path = "/learnspam" if spam else "/learnham"
        headers = [("Password", self._password)] if self._password else []
        status, body = await self._post(f"{self.controller_url}{path}", message, headers)
        if status == 208:  # Rspamd had learned this very message already: nothing to do
            return
        if status != 200:
            raise EngineUnavailable(NAME, f"{path} answered HTTP {status}: {_excerpt(body)}")
        answer = _json(body)
        if answer.get("success") is not True:
            raise EngineUnavailable(NAME, f"{path} did not learn: {_excerpt(body)}")

    async def _post(self, url: str, message: bytes, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client.stream("POST", url, content=message, headers=headers) as answer:
                    body = bytearray()
                    async for chunk in answer.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_ANSWER_OCTETS:
                            raise EngineUnavailable(NAME, f"answer over {MAX_ANSWER_OCTETS} octets")
                    return answer.status_code, bytes(body)
        except TimeoutError:
            raise EngineUnavailable(NAME, f"no answer within {self.timeout:g}s") from None
        except httpx.HTTPError as error:
            raise EngineUnavailable(NAME, f"{type(error).__name__}: {error}") from None

    @staticmethod
    def _envelope(facts: MessageFacts) -> list[tuple[str, str]]:
        headers = [
            ("IP", _header(facts.client_ip)),
            ("Helo", _header(facts.helo)),
            ("From", _header(facts.mail_from) or "<>"),  # the null sender of a bounce
            ("Hostname", _header(facts.ptr)),  # absent: Rspamd looks the PTR up itself (RDNS_NONE)
        ]
        headers += [("Rcpt", _header(recipient)) for recipient in facts.recipients]
        if facts.authenticated_user:
            headers.append(("User", _header(facts.authenticated_user)))
        return [(name, value) for name, value in headers if value]


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return float(value)


def _header(value: str) -> str:
    """A value safe in an HTTP request header (no control characters; Rspamd reads them raw)."""
    return _HEADER_VALUE.sub("", value)[:998]


def _json(body: bytes) -> dict[str, object]:
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise EngineUnavailable(NAME, f"answer is not JSON: {_excerpt(body)}") from None
    if not isinstance(answer, dict):
        raise EngineUnavailable(NAME, "answer is not a JSON object")
    return answer


def _excerpt(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip()
