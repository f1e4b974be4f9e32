"""Rspamd as the spam engine: Debian's rspamd on loopback, driven over its HTTP protocol.

One Rspamd (with its Redis and a loopback DNS server holding the corpus's SPF, DMARC, HELO and MX
records) serves the module; the tests that learn or stop Rspamd start their own, so the shared one's
Bayes store stays empty. What a user would see: GTUBE is high-confidence spam, the phishing sample is
phishing, no ham is spam and newsletters carry a BCL; a junk report makes Rspamd's Bayes classify the
message as spam; an Rspamd that is stopped, silent or garbled gives `EngineUnavailable`, never a
verdict.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from postroom.model.verdicts import EngineUnavailable, MessageFacts, SpamCategory
from postroom.protection.mime import parse_message
from postroom.protection.spam import GTUBE, RspamdEngine
from tests.protection.spam_corpus import HAM, NEWSLETTERS, PHISH_SAMPLE, SPAM, facts, load, zones
from tests.support.dns_server import DnsTestServer
from tests.support.rspamd import RspamdLab

PHISHING = (SpamCategory.PHISH, SpamCategory.HIGH_CONFIDENCE_PHISH)
TIMEOUT = 20.0  # seconds a check may take on a loaded CI machine


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsTestServer]:
    with DnsTestServer(zones()) as server:
        yield server


@pytest.fixture(scope="module")
def lab(dns: DnsTestServer) -> Iterator[RspamdLab]:
    with RspamdLab(dns.address) as started:
        yield started


@pytest.fixture
def private_lab(dns: DnsTestServer) -> Iterator[RspamdLab]:
    with RspamdLab(dns.address) as started:
        yield started


@pytest.fixture
async def rspamd(lab: RspamdLab) -> AsyncIterator[RspamdEngine]:
    engine = RspamdEngine(lab.url, lab.controller_url, password=lab.password, timeout=TIMEOUT)
    yield engine
    await engine.aclose()


def test_rspamd_starts_within_seconds(lab: RspamdLab, record_property: Callable[[str, object], None]) -> None:
    record_property("rspamd_start_seconds", round(lab.start_seconds, 2))
    assert lab.start_seconds < 60


async def test_gtube_is_high_confidence_spam(rspamd: RspamdEngine) -> None:
    name = "h01_personal_weekend.eml"
    message = load(name).replace(b"\r\n\r\n", b"\r\n\r\n" + GTUBE + b"\r\n", 1)
    verdict = await rspamd.check(message, parse_message(message), facts(name))
    assert (verdict.scl, verdict.category, verdict.engine) == (9, SpamCategory.HIGH_CONFIDENCE_SPAM, "rspamd")
    assert "GTUBE" in verdict.symbols


async def test_the_phishing_sample_is_phishing(rspamd: RspamdEngine) -> None:
    message = load(PHISH_SAMPLE)
    verdict = await rspamd.check(message, parse_message(message), facts(PHISH_SAMPLE))
    assert verdict.category in PHISHING and verdict.scl >= 5
    assert {"PHISHING", "DMARC_POLICY_REJECT"} <= set(verdict.symbols)


@pytest.mark.parametrize("name", HAM)
async def test_ham_is_never_spam(rspamd: RspamdEngine, name: str) -> None:
    message = load(name)
    verdict = await rspamd.check(message, parse_message(message), facts(name))
    assert verdict.scl < 5, (verdict.score, verdict.symbols)
    assert verdict.category is SpamCategory.NONE


@pytest.mark.parametrize("name", NEWSLETTERS)
async def test_newsletters_are_bulk_but_not_spam(rspamd: RspamdEngine, name: str) -> None:
    message = load(name)
    verdict = await rspamd.check(message, parse_message(message), facts(name))
    assert 1 <= verdict.bcl < 7 and verdict.scl < 5


async def test_rspamd_catches_the_spam_its_offline_rules_can_see(rspamd: RspamdEngine) -> None:
    # Offline, Rspamd has neither its DNS lists nor its hash clouds nor a trained Bayes: it catches
    # what its local rules see (HELO, SPF/DMARC, headers, URLs), about half of the set.
    caught = []
    for name in SPAM:
        message = load(name)
        verdict = await rspamd.check(message, parse_message(message), facts(name))
        if verdict.scl >= 5:
            caught.append(name)
    assert len(caught) >= len(SPAM) // 2, caught


async def test_the_envelope_reaches_rspamd(rspamd: RspamdEngine) -> None:
    message = load("h04_reply_quoted.eml")
    stranger = MessageFacts(
        "203.0.113.77",
        "[203.0.113.77]",
        "dave.okafor@brightline-studio.example",
        ("a@x.example", "b@x.example"),
    )
    verdict = await rspamd.check(message, parse_message(message), stranger)
    # no reverse name, an address literal for HELO, an IP the sender's SPF does not list, and two
    # envelope recipients the header does not name
    assert {"RDNS_NONE", "HFILTER_HELO_BADIP", "R_SPF_FAIL", "FORGED_RECIPIENTS"} <= set(verdict.symbols)


async def test_a_junk_report_teaches_rspamds_bayes(private_lab: RspamdLab) -> None:
    engine = RspamdEngine(
        private_lab.url, private_lab.controller_url, password=private_lab.password, timeout=TIMEOUT
    )
    try:
        name = "s04_crypto_shortener.eml"  # spam Rspamd's offline rules miss
        before = await engine.check(load(name), parse_message(load(name)), facts(name))
        assert "BAYES_SPAM" not in before.symbols
        await engine.learn(load(name), spam=True)
        await engine.learn(load(name), spam=True)  # learned already: Rspamd says so, and that is fine
        await engine.learn(load("h03_contract_pdf.eml"), spam=False)  # Bayes classifies with both classes
        after = await engine.check(load(name), parse_message(load(name)), facts(name))
        assert "BAYES_SPAM" in after.symbols and after.score > before.score
    finally:
        await engine.aclose()


async def test_a_report_with_a_wrong_password_is_refused(lab: RspamdLab) -> None:
    engine = RspamdEngine(lab.url, lab.controller_url, password="not-the-password", timeout=TIMEOUT)
    try:
        with pytest.raises(EngineUnavailable, match="rspamd: /learnspam answered HTTP 401"):
            await engine.learn(load("s01_pharma.eml"), spam=True)
    finally:
        await engine.aclose()


async def test_a_stopped_rspamd_gives_no_verdict(private_lab: RspamdLab) -> None:
    engine = RspamdEngine(
        private_lab.url, private_lab.controller_url, password=private_lab.password, timeout=TIMEOUT
    )
    try:
        name = "h01_personal_weekend.eml"
        assert (await engine.check(load(name), parse_message(load(name)), facts(name))).engine == "rspamd"
        private_lab.stop()
        with pytest.raises(EngineUnavailable, match="rspamd: ConnectError"):
            await engine.check(load(name), parse_message(load(name)), facts(name))
        with pytest.raises(EngineUnavailable, match="rspamd: ConnectError"):
            await engine.learn(load(name), spam=False)
    finally:
        await engine.aclose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listening socket that never accepts: connections complete, requests are never answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_an_rspamd_that_never_answers_times_out(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}"
    engine = RspamdEngine(url, url, timeout=0.5)
    try:
        name = "h01_personal_weekend.eml"
        began = time.monotonic()
        with pytest.raises(EngineUnavailable, match=r"no answer within 0\.5s"):
            await engine.check(load(name), parse_message(load(name)), facts(name))
        assert 0.4 < time.monotonic() - began < 3.0
    finally:
        await engine.aclose()


def _http(status: str, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return f"HTTP/1.1 {status}\r\nContent-Length: {size}\r\n\r\n".encode() + body


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (_http("200 OK", b"not json!"), "answer is not JSON"),
        (_http("500 Internal Server Error", b"oops"), "HTTP 500"),
        (_http("200 OK", b'{"score": 1.0}'), "not Rspamd's"),
        (_http("200 OK", b'{"action": "explode", "score": 1}'), "not Rspamd's"),
        (_http("200 OK", b'{"action": "reject", "score": "high"}'), "not Rspamd's"),
        (_http("200 OK", b'{"action": "reject", "score": NaN}'), "not Rspamd's"),
        (_http("200 OK", b"[]"), "not a JSON object"),
        (_http("200 OK", b"[" * 200_000), "answer is not JSON"),
        (_http("200 OK", b"{", length=100), "RemoteProtocolError"),
        (_http("200 OK", b"x" * 1_100_000), "answer over 1048576 octets"),
    ],
)
async def test_a_garbled_answer_gives_no_verdict(answer: bytes, reason: str) -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(respond, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    engine = RspamdEngine(url, url, timeout=5)
    try:
        name = "h01_personal_weekend.eml"
        with pytest.raises(EngineUnavailable, match=reason):
            await engine.check(load(name), parse_message(load(name)), facts(name))
    finally:
        await engine.aclose()
        server.close()
        await server.wait_closed()
