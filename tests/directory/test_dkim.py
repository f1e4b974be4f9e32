"""DKIM keys of accepted domains: made on first use, two selectors, one signing, rotation."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256

from postroom.directory import DKIM_SELECTORS, Directory, NotFoundError
from postroom.model.scope import OPERATOR


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


def test_rotation_signs_with_the_waiting_key_and_renews_the_retired_one(org: Directory) -> None:
    first, second = org.dkim_keys(OPERATOR, "contoso.example")
    new_first, new_second = org.rotate_dkim(OPERATOR, "contoso.example")
    assert (new_first.active, new_second.active) == (False, True)
    assert new_second.public_key == second.public_key  # the key in DNS all along signs now
    assert new_first.public_key != first.public_key  # the retired selector has a new key to publish
    assert org.dkim_signing_key(OPERATOR, "contoso.example")[0] == "postroom2"
    events = [e.event for e in org.domain_history(OPERATOR, "contoso.example")]
    assert events[-2:] == ["dkim-keys-created", "dkim-rotated"]


def test_keys_go_with_their_domain(org: Directory) -> None:
    old = org.dkim_keys(OPERATOR, "contoso.example")
    org.remove_domain(OPERATOR, "contoso.example")
    with pytest.raises(NotFoundError):
        org.dkim_keys(OPERATOR, "contoso.example")
    org.add_domain(OPERATOR, "contoso.example", "contoso", verified=True)
    renewed = org.dkim_keys(OPERATOR, "contoso.example")
    assert {k.public_key for k in renewed}.isdisjoint({k.public_key for k in old})
