"""Invariants over arbitrary input: parsers only ever raise stapled's own errors.

Every parser stapled has meets arbitrary bytes here: certificates, OCSP responses and
requests, the configuration, and the local responder's HTTP.  Bounded examples in the
normal suite; ``benchmarks/fuzz`` runs the same properties a hundred times longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.x509 import ocsp as x509_ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from stapled import config
from stapled.cli import main
from stapled.core import certs, der, ocsp, policy, request, times
from stapled.errors import (
    CertificateError,
    ConfigError,
    FetchError,
    InvalidRequestError,
    InvalidResponseError,
    OCSPStatusError,
)
from stapled.net.client import Transport
from stapled.net.http11 import (
    ClientConnection,
    ProtocolError,
    ServerConnection,
    max_age,
    retry_after,
)
from stapled.service.responder import MAX_BODY, Index, Responder

from . import rawhttp
from .pki import CASES, World

pytestmark = pytest.mark.hostile

WORLD = World()
_TBS = x509_ocsp.load_der_ocsp_response(
    CASES["critical-invalidity-date"][0](WORLD)
).tbs_response_bytes


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_validate(data: bytes) -> None:
    try:
        ocsp.validate(data, WORLD.chain, datetime.now(UTC))
    except (InvalidResponseError, OCSPStatusError):
        return
    raise AssertionError("random bytes validated as an OCSP response")


@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=8))
def test_mutated_response_never_validates(position: int, noise: bytes) -> None:
    der = bytearray(WORLD.ca.sign_response(WORLD.leaf.cert))
    i = position % len(der)
    mutated = bytes(der[:i]) + bytes(b ^ der[i] for b in noise[:1]) + bytes(der[i + 1 :])
    if mutated == bytes(der):
        return
    try:
        staple = ocsp.validate(mutated, WORLD.chain, datetime.now(UTC))
    except (InvalidResponseError, OCSPStatusError):
        return
    # A change that still validates can only be outside the signed data: what is kept is
    # the exact bytes given, and its CertID still names this certificate.
    assert staple.der == mutated
    assert staple.cert_id in ocsp.cert_ids(WORLD.chain)


@given(st.binary(max_size=4096))
def test_certificate_parser_raises_only_certificate_error(data: bytes) -> None:
    with contextlib.suppress(CertificateError):
        certs.parse_certificates(data, "fuzz.pem")


@given(
    st.floats(min_value=0.01, max_value=0.99),
    st.integers(min_value=60, max_value=30 * 86400),
)
def test_refresh_time_is_inside_the_window(refresh_at: float, lifetime: int) -> None:
    this = datetime(2026, 1, 1, tzinfo=UTC)
    staple = ocsp.Staple(
        der=b"",
        cert_status=ocsp.CertStatus.GOOD,
        serial=1,
        this_update=this,
        next_update=this + timedelta(seconds=lifetime),
        produced_at=this,
        signer="issuer",
    )
    at = policy.refresh_time(staple, refresh_at)
    assert staple.this_update < at < staple.next_update
    assert not policy.needs_refresh(staple, at - timedelta(seconds=1), refresh_at)
    assert policy.needs_refresh(staple, at, refresh_at)


@given(st.binary(max_size=1024))
def test_request_parser_raises_only_invalid_request(data: bytes) -> None:
    with contextlib.suppress(InvalidRequestError):
        request.parse_request(data)


RESPONDER = Responder("127.0.0.1", 0, Index(), lambda: datetime.now(UTC))


@given(
    st.sampled_from(["GET", "POST", "PUT", "HEAD", "", "G\x00T"]) | st.text(max_size=10),
    st.text(max_size=300),
    st.binary(max_size=1024),
)
def test_the_local_responder_answers_anything_without_raising(
    method: str, target: str, body: bytes
) -> None:
    reply = RESPONDER.answer(method, target, body)
    assert reply.status in (200, 405, 503)


def _fed(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


@given(st.binary(max_size=2048))
def test_the_der_reader_fails_only_with_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        der.response_data(data)


@given(st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=4))
def test_a_mutated_response_data_fails_only_with_value_error(at: int, noise: bytes) -> None:
    tbs = bytearray(_TBS)
    at %= len(tbs)
    tbs[at : at + len(noise)] = noise
    with contextlib.suppress(ValueError):
        der.response_data(bytes(tbs))


@given(st.binary(max_size=4096))
def test_the_responders_http_reader_fails_only_in_known_ways(data: bytes) -> None:
    async def read() -> None:
        with contextlib.suppress(ProtocolError):
            await ServerConnection().request(_fed(data), MAX_BODY)

    asyncio.run(read())


@given(st.binary(max_size=4096))
def test_the_clients_http_reader_fails_only_in_known_ways(data: bytes) -> None:
    async def read() -> None:
        http = ClientConnection()
        http.request("GET", "/", [("Host", "x")], None)
        with contextlib.suppress(ProtocolError):
            await http.response(_fed(data), 65536, answered=[False])

    asyncio.run(read())


@given(
    st.text(max_size=80) | st.sampled_from(["1\u00b2", "\u0661", " 5 ", "Wed, 32 Oct", "9" * 40])
)
def test_header_values_are_read_or_ignored_never_raised(value: str) -> None:
    for read in (max_age, retry_after):
        seconds = read(value)
        assert seconds is None or seconds >= 0


# One server for every example: what it answers is set by each.
_ANSWER = [b""]
_ANSWERING = rawhttp.RawServer(lambda conn: conn.sendall(_ANSWER[0])).__enter__()

_HEAD_BYTES = (
    (
        st.sampled_from([b"", b"http://", b"https://[", b"http://[::1", b"//", b"http://h:"])
        | st.binary(max_size=40)
    )
    .flatmap(lambda prefix: st.binary(max_size=20).map(lambda tail: prefix + tail))
    .filter(lambda b: b"\r" not in b and b"\n" not in b)
)


@settings(deadline=None)
@given(
    st.sampled_from([200, 301, 302, 303, 307, 308, 404, 503]),
    st.lists(
        st.tuples(
            st.sampled_from([b"Location", b"Retry-After", b"Cache-Control", b"Content-Type"]),
            _HEAD_BYTES,
        ),
        max_size=4,
    ),
)
def test_any_answer_ends_in_a_reply_or_a_fetch_error(
    status: int, fields: list[tuple[bytes, bytes]]
) -> None:
    """Whatever a responder answers with, the client names the URL in a FetchError."""
    head = b"HTTP/1.1 %d X\r\n" % status
    head += b"".join(name + b": " + value + b"\r\n" for name, value in fields)
    _ANSWER[0] = head + b"Content-Length: 2\r\nConnection: close\r\n\r\nok"
    try:
        reply = Transport(timeout=5).get(_ANSWERING.url)
    except FetchError as e:
        assert e.url == _ANSWERING.url
    else:
        assert reply.body == b"ok"


_KEYS = [*sorted(config._TOP_KEYS), "x", "responder", "haproxy"]
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=8))
def test_the_config_checker_raises_only_config_error(raw: dict[str, object]) -> None:
    with contextlib.suppress(ConfigError):
        config.parse(raw, Path("/nonexistent/stapled.toml"))


@given(st.binary(max_size=2048))
def test_the_config_reader_raises_only_config_error(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".toml") as f:
        f.write(data)
        f.flush()
        with contextlib.suppress(ConfigError):
            config.load(f.name)


# A site of one certificate, made once: only its state file changes between examples.
_SITE = Path(tempfile.mkdtemp(prefix="stapled-state-"))
(_SITE / "certs").mkdir()
(_SITE / "certs" / "good.pem").write_bytes(WORLD.leaf.cert_pem() + WORLD.ca.cert_pem())
_STATUS_CONFIG = _SITE / "stapled.toml"
_STATUS_CONFIG.write_text(f'output_dir = "{_SITE / "out"}"\ncertificates = ["{_SITE / "certs"}"]\n')
(_SITE / "out" / ".stapled").mkdir(parents=True)
_STATE = _SITE / "out" / ".stapled" / "state.json"

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
_STATE_KEYS = ["version", "reload_pending", "haproxy_pending", "certificates", "daemon"]
_ENTRY_KEYS = ["last_error", "next_retry", "next_refresh"]


@settings(deadline=None, max_examples=60)
@given(
    st.dictionaries(st.sampled_from(_STATE_KEYS), _JSON, max_size=5) | _JSON,
    st.dictionaries(st.sampled_from(_ENTRY_KEYS), _JSON, max_size=3),
)
def test_status_reads_a_state_file_of_any_shape(state: object, entry: dict[str, object]) -> None:
    """The state file is stapled's own, but disks and people damage files."""
    if isinstance(state, dict) and isinstance(state.get("certificates"), dict):
        state["certificates"]["good"] = entry  # type: ignore[index]
    elif isinstance(state, dict):
        state["certificates"] = {"good": entry}
    _STATE.write_text(json.dumps(state))
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["status", "--config", str(_STATUS_CONFIG)])
        json_code = main(["status", "--json", "--config", str(_STATUS_CONFIG)])
    assert code in (0, 1, 2) and json_code == code
    assert "good" in out.getvalue()


@given(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC)))
def test_a_time_written_reads_back_to_the_second(t: datetime) -> None:
    assert times.parse_iso(times.iso(t)) == t.replace(microsecond=0)


@given(
    st.one_of(
        st.text(max_size=30),
        st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
        st.from_regex(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fullmatch=True),
    )
)
def test_only_a_time_as_written_is_read(text: str) -> None:
    # strptime is the reference: the same time, or None where it refuses or the text
    # is not what iso() writes (a week date, an offset, a fraction, single digits).
    found = times.parse_iso(text)
    try:
        reference = datetime.strptime(text, times.FORMAT).replace(tzinfo=UTC)
    except ValueError:
        reference = None
    assert found is None or found == reference
    assert found is None or times.iso(found) == text
    if reference is not None and times.iso(reference) == text:
        assert found == reference


@given(st.datetimes(timezones=st.just(UTC) | st.timezones()))
def test_a_time_shared_is_the_same_time_in_the_same_zone(t: datetime) -> None:
    one = times.shared(t)
    assert one == t and one.tzinfo is t.tzinfo
    again = t.replace()  # an equal time, another object
    if t.tzinfo is UTC:
        assert times.shared(again) is one
    else:  # kept as it is: an equal instant in another zone shows otherwise
        assert one is t and times.shared(again) is again
