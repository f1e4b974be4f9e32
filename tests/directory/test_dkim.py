"""DKIM keys of accepted domains: made on first use, two selectors, one signing, rotation."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256

from postroom.directory import DKIM_SELECTORS, RETIRED_KEY_SECONDS, Directory, NotFoundError
from postroom.model.scope import OPERATOR
from postroom.storage import Database
from tests.support.records import new_directory


@pytest.fixture
def org(directory: Directory) -> Directory:
    directory.add_tenant(OPERATOR, "contoso")
    directory.add_domain(OPERATOR, "contoso.example", "contoso", verified=True)
    return directory


def test_two_selectors_made_on_first_use_the_first_signs(org: Directory) -> None:
    keys = org.dkim_keys(OPERATOR, "contoso.example")
    assert [k.selector for k in keys] == list(DKIM_SELECTORS) == ["postroom1", "postroom2"]
    assert [k.active for k in keys] == [True, False]
    assert keys[0].public_key != keys[1].public_key
    assert org.dkim_keys(OPERATOR, "contoso.example") == keys  # made once, then kept


def test_keys_are_2048_bit_rsa_and_the_private_key_signs_for_the_published_one(org: Directory) -> None:
    selector, pem = org.dkim_signing_key(OPERATOR, "contoso.example")
    assert selector == "postroom1"
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    [active] = [k for k in org.dkim_keys(OPERATOR, "contoso.example") if k.active]
    public = serialization.load_der_public_key(base64.b64decode(active.public_key))
    assert isinstance(public, rsa.RSAPublicKey)
    signature = private.sign(b"message", padding.PKCS1v15(), SHA256())
    public.verify(signature, b"message", padding.PKCS1v15(), SHA256())


def test_rotation_signs_with_the_waiting_key_and_keeps_the_retired_one_published(database: Database) -> None:
    now = [1_000_000.0]
    org = new_directory(database, clock=lambda: now[0])
    org.add_tenant(OPERATOR, "contoso")
    org.add_domain(OPERATOR, "contoso.example", "contoso", verified=True)
    first, second = org.dkim_keys(OPERATOR, "contoso.example")
    new_first, new_second = org.rotate_dkim(OPERATOR, "contoso.example")
    assert (new_first.state, new_second.state) == ("retired", "signs")
    assert new_second.public_key == second.public_key  # the key in DNS all along signs now
    assert new_first.public_key == first.public_key  # kept: mail signed with it may still be in flight
    assert org.dkim_signing_key(OPERATOR, "contoso.example")[0] == "postroom2"
    now[0] += RETIRED_KEY_SECONDS - 1
    assert org.dkim_keys(OPERATOR, "contoso.example")[0].public_key == first.public_key
    now[0] += 1
    renewed, signing = org.dkim_keys(OPERATOR, "contoso.example")
    assert renewed.state == "next" and renewed.public_key not in {first.public_key, second.public_key}
    assert signing.public_key == second.public_key and signing.active
    assert org.dkim_keys(OPERATOR, "contoso.example")[0] == renewed  # renewed once
    events = [e.event for e in org.domain_history(OPERATOR, "contoso.example")]
    assert events[-3:] == ["dkim-keys-created", "dkim-rotated", "dkim-key-renewed"]


def test_a_forced_rotation_back_to_a_retired_selector_gives_it_a_new_key(org: Directory) -> None:
    first, _ = org.dkim_keys(OPERATOR, "contoso.example")
    org.rotate_dkim(OPERATOR, "contoso.example")
    back_first, back_second = org.rotate_dkim(OPERATOR, "contoso.example")
    assert back_first.active and back_first.public_key != first.public_key  # a retired key never signs again
    assert back_second.state == "retired"


def test_keys_go_with_their_domain(org: Directory) -> None:
    old = org.dkim_keys(OPERATOR, "contoso.example")
    org.remove_domain(OPERATOR, "contoso.example")
    with pytest.raises(NotFoundError):
        org.dkim_keys(OPERATOR, "contoso.example")
    org.add_domain(OPERATOR, "contoso.example", "contoso", verified=True)
    renewed = org.dkim_keys(OPERATOR, "contoso.example")
    assert {k.public_key for k in renewed}.isdisjoint({k.public_key for k in old})
